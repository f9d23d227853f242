"""Alerts in SQLite: each kind raised once per tenant and window (the table's unique key), and the recent ones."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlite_utils import Database

from ponderd.ledger.types import iso


def claim(
    db: Database, tenant: str, window_start: datetime, kind: str, at: datetime, spent_micros: int, budget_micros: int
) -> bool:
    """Record the alert unless this tenant's window has it already; True when this call recorded it."""
    cur = db.execute(
        "INSERT OR IGNORE INTO alerts (tenant, window_start, kind, at, spent_micros, budget_micros) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        [tenant, iso(window_start), kind, iso(at), spent_micros, budget_micros],
    )
    return cur.rowcount == 1


def recent(db: Database, limit: int) -> list[dict[str, Any]]:
    return list(db.query("SELECT * FROM alerts ORDER BY id DESC LIMIT ?", [limit]))
