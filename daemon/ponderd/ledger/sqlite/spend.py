"""Spend reports: what tenants used over a period, from the spend records."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Iterable

from sqlite_utils import Database

from ponderd.ledger.types import iso


def spend_totals(db: Database, since: datetime, until: datetime, tenant: str | None) -> list[dict[str, Any]]:
    """Requests, tokens and cost per tenant and status between two instants."""
    where, args = "at >= ? AND at < ?", [iso(since), iso(until)]
    if tenant:
        where += " AND tenant = ?"
        args.append(tenant)
    return list(
        db.query(
            f"""SELECT tenant, status, COUNT(*) AS requests,
                SUM(prompt_tokens) AS prompt_tokens, SUM(thinking_tokens) AS thinking_tokens,
                SUM(answer_tokens) AS answer_tokens, SUM(cost_micros) AS cost_micros
                FROM spend WHERE {where} GROUP BY tenant, status ORDER BY tenant, status""",
            args,
        )
    )


def spend_records(
    db: Database, since: datetime, until: datetime, tenant: str | None, limit: int
) -> Iterable[dict[str, Any]]:
    where, args = "at >= ? AND at < ?", [iso(since), iso(until)]
    if tenant:
        where += " AND tenant = ?"
        args.append(tenant)
    return list(db.query(f"SELECT * FROM spend WHERE {where} ORDER BY at DESC LIMIT ?", [*args, limit]))
