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


def due(db: Database, now: datetime, limit: int) -> list[dict[str, Any]]:
    """Undelivered alerts whose next attempt is due, oldest first (the webhook's outbox)."""
    return list(db.query(
        "SELECT * FROM alerts WHERE delivered_at IS NULL AND (next_attempt_at IS NULL OR next_attempt_at <= ?) "
        "ORDER BY id LIMIT ?", [iso(now), limit],
    ))


def mark(db: Database, alert_id: int, now: datetime, error: str, next_attempt_at: datetime | None) -> None:
    """After an attempt: delivered (error "") or failed, to be tried again at `next_attempt_at`."""
    if not error:
        db.execute("UPDATE alerts SET delivered_at = ?, attempts = attempts + 1, last_error = '' WHERE id = ?",
                   [iso(now), alert_id])
    else:
        db.execute(
            "UPDATE alerts SET attempts = attempts + 1, last_error = ?, next_attempt_at = ? WHERE id = ?",
            [error[:500], iso(next_attempt_at) if next_attempt_at else None, alert_id],
        )
