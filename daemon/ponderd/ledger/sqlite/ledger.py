"""Budgets: windows, reservations and settlement, each one SQLite transaction.

Invariant, per tenant and window: spent + reserved <= budget whenever a
reservation is taken, and a settlement never charges more than was reserved.
So no interleaving of requests can overspend. Amounts are whole micro-credits.
The same holds per key for a key with a cap of its own (keys.budget_micros),
checked and reserved in the same transaction as its tenant's.
"""

from __future__ import annotations

import json
from dataclasses import fields
from datetime import datetime
from typing import Any, Sequence
from zoneinfo import ZoneInfo

from sqlite_utils import Database

from ponderd.errors import AlreadyExists, BudgetExhausted, KeyBudgetExhausted, NotFound, QuotaDetail
from ponderd.ledger.types import (
    BalanceView,
    Candidate,
    SpendRow,
    iso,
    parse_iso,
    to_credits,
    window_end,
    window_start,
)


class Ledger:
    """Budget operations; every method runs on the store's owner thread (first argument: the db)."""

    def __init__(self, zone: ZoneInfo, leased: bool = False) -> None:
        """`leased`: a fleet host's buffer (ledger/postgres/): a tenant's budget here is the lease this host
        holds, so a new window starts with none, and spend records wait to be shipped."""
        self.zone = zone
        self.leased = leased

    # tenants ---------------------------------------------------------------

    def create_tenant(self, db: Database, name: str, budget_micros: int, window: str, now: datetime) -> BalanceView:
        with db.atomic():
            if db["tenants"].count_where("name = ?", [name]):
                raise AlreadyExists(f"tenant {name!r} exists already; pick another name or use 'admin budget set'")
            db.table("tenants").insert(
                {
                    "name": name,
                    "enabled": 1,
                    "budget_micros": budget_micros,
                    "window": window,
                    "window_start": iso(window_start(now, window, self.zone)),
                    "spent_micros": 0,
                    "reserved_micros": 0,
                    "created_at": iso(now),
                }
            )
        return self.balance(db, name, now)

    def tenant_exists(self, db: Database, name: str) -> bool:
        return bool(db["tenants"].count_where("name = ?", [name]))

    def set_budget(self, db: Database, name: str, budget_micros: int, window: str | None, now: datetime) -> BalanceView:
        with db.atomic():
            row = self._row(db, name)
            changes: dict[str, Any] = {"budget_micros": budget_micros}
            if window and window != row["window"]:
                changes["window"] = window
                changes["window_start"] = iso(window_start(now, window, self.zone))
                changes["spent_micros"] = 0
                _restart_keys(db, name)
            db.table("tenants").update(name, changes)
        return self.balance(db, name, now)

    def set_enabled(self, db: Database, name: str, enabled: bool, now: datetime) -> BalanceView:
        self._row(db, name)
        db.table("tenants").update(name, {"enabled": int(enabled)})
        return self.balance(db, name, now)

    def balances(self, db: Database, now: datetime) -> list[BalanceView]:
        names = [r["name"] for r in db.query("SELECT name FROM tenants ORDER BY name")]
        return [self.balance(db, n, now) for n in names]

    def balance(self, db: Database, name: str, now: datetime) -> BalanceView:
        """The tenant's budget as of `now`, rolling its window forward first if it has ended."""
        with db.atomic():
            row = self._roll(db, self._row(db, name), now)
        return self._view(row)

    # reservations ----------------------------------------------------------

    def reserve_first_fitting(
        self,
        db: Database,
        tenant: str,
        request_id: str,
        candidates: Sequence[Candidate],
        now: datetime,
        context: dict[str, Any] | None = None,
        key_id: str | None = None,
    ) -> int:
        """Reserve the first candidate whose worst case fits the remaining budget; return its index.

        `context` (the assessment) is kept with the reservation, so a request
        interrupted by a crash can still be logged in full when it is recovered.
        `key_id`: the calling key; when it has a cap of its own, the candidate
        must fit what the key has left too, and the reservation counts against both.
        """
        with db.atomic():
            row = self._roll(db, self._row(db, tenant), now)
            remaining = row["budget_micros"] - row["spent_micros"] - row["reserved_micros"]
            key = _capped_key(db, key_id, tenant)
            key_left = None if key is None else key["budget_micros"] - key["spent_micros"] - key["reserved_micros"]
            for index, cand in enumerate(candidates):
                need = cand.worst_case_micros
                if need <= remaining and (key_left is None or need <= key_left):
                    _insert(
                        db,
                        "reservations",
                        {
                            "request_id": request_id,
                            "tenant": tenant,
                            "amount_micros": need,
                            "created_at": iso(now),
                            "plan": json.dumps({"plan": cand.to_json(), **(context or {})}),
                            "key_id": key_id if key is not None else None,
                        },
                    )
                    db.execute(
                        "UPDATE tenants SET reserved_micros = reserved_micros + ? WHERE name = ?", [need, tenant]
                    )
                    if key is not None:
                        db.execute(
                            "UPDATE keys SET reserved_micros = reserved_micros + ? WHERE key_id = ?", [need, key_id]
                        )
                    return index
        cheapest = min(c.worst_case_micros for c in candidates)
        end = window_end(parse_iso(row["window_start"]), row["window"], self.zone)
        if key is not None and key_left is not None and cheapest <= remaining:
            raise KeyBudgetExhausted(
                f"key {key_id} of tenant {tenant!r} has {to_credits(max(key_left, 0)):.6f} credits left of its own "
                f"cap of {to_credits(key['budget_micros']):.6f} in this {row['window']}, the cheapest allowed plan "
                f"needs {to_credits(cheapest):.6f}; the cap renews at {iso(end)} "
                f"(or ask an admin to raise it: 'ponder admin key budget {key_id} AMOUNT')",
                QuotaDetail(tenant, cheapest, max(key_left, 0), iso(end)),
                str(key_id),
            )
        raise BudgetExhausted(
            f"tenant {tenant!r} has {to_credits(max(remaining, 0)):.6f} credits left in this {row['window']}, "
            f"the cheapest allowed plan needs {to_credits(cheapest):.6f}; the budget renews at {iso(end)} "
            "(or ask an admin to raise it)",
            QuotaDetail(tenant, cheapest, max(remaining, 0), iso(end)),
        )

    def settle(self, db: Database, row: SpendRow, prompt_text: str | None) -> int:
        """Release the reservation, charge the actual cost (never above it), write the spend record.

        Idempotent by request id: settling a request that is settled already
        changes nothing and returns what it was charged, so a retry after a
        fault (did the first attempt commit?) can never charge twice.
        """
        with db.atomic():
            res = db.execute(
                "SELECT tenant, amount_micros, key_id FROM reservations WHERE request_id = ?", [row.request_id]
            ).fetchone()
            if res is None:
                done = db.execute("SELECT cost_micros FROM spend WHERE request_id = ?", [row.request_id]).fetchone()
                if done is not None:
                    return int(done[0])
                raise NotFound(f"no reservation for request {row.request_id}")
            reserved = res[1]
            charged = min(row.cost_micros, reserved)
            tenant = self._roll(db, self._row(db, row.tenant), parse_iso(row.at))
            db.execute("DELETE FROM reservations WHERE request_id = ?", [row.request_id])
            db.execute(
                "UPDATE tenants SET reserved_micros = reserved_micros - ?, spent_micros = spent_micros + ? "
                "WHERE name = ?",
                [reserved, charged, row.tenant],
            )
            if res[2] is not None:  # the key's own cap: the same correction
                db.execute(
                    "UPDATE keys SET reserved_micros = reserved_micros - ?, spent_micros = spent_micros + ? "
                    "WHERE key_id = ?",
                    [reserved, charged, res[2]],
                )
            record = _fields(row) | {
                "cost_micros": charged,
                "reserved_micros": reserved,
                "window_start": tenant["window_start"],
                "needs_reasoning": int(row.needs_reasoning),
                "model_needs_reasoning": int(row.model_needs_reasoning),
            }
            if self.leased:
                record["shipped"] = 0
            _insert(db, "spend", record)
            if prompt_text is not None:
                _insert(db, "prompts", {"request_id": row.request_id, "at": row.at, "text": prompt_text})
        return charged

    def record_refusal(self, db: Database, row: SpendRow) -> None:
        """Log a request refused before any reservation (e.g. budget exhausted): zero cost."""
        record = _fields(row) | {
            "reserved_micros": 0,
            "cost_micros": 0,
            "window_start": self._row(db, row.tenant)["window_start"],
            "needs_reasoning": int(row.needs_reasoning),
            "model_needs_reasoning": int(row.model_needs_reasoning),
        }
        if self.leased:
            record["shipped"] = 0
        # A retried refusal whose first write did commit stays one record.
        db.table("spend").insert(record, ignore=True)

    def status_of(self, db: Database, request_id: str) -> str | None:
        """The status of the request's spend record ("ok", "failed", ...); None when it has none (yet)."""
        row = db.execute("SELECT status FROM spend WHERE request_id = ?", [request_id]).fetchone()
        return None if row is None else str(row[0])

    def open_reservations(self, db: Database) -> list[dict[str, Any]]:
        return list(db.query("SELECT * FROM reservations ORDER BY created_at"))

    def settle_orphans(self, db: Database, live: set[str], created_before: datetime, now: datetime) -> list[str]:
        """Settle reservations no running request owns (left by a crash) at their full amount.

        What they used is unknown, and charging the reserved worst case is the
        only choice that can never undercount; each gets an 'interrupted' record.
        """
        settled = []
        for res in self.open_reservations(db):
            if res["request_id"] in live or parse_iso(res["created_at"]) >= created_before:
                continue
            ctx = json.loads(res["plan"])
            plan, a = ctx.get("plan", {}), ctx.get("assessment", {})
            row = SpendRow(
                request_id=res["request_id"], tenant=res["tenant"], at=iso(now),
                severity=a.get("severity", "high"), needs_reasoning=bool(a.get("needs_reasoning", True)),
                model_severity=a.get("model_severity", "high"),
                model_needs_reasoning=bool(a.get("model_needs_reasoning", True)),
                risk_model=a.get("risk_model", ""), policy_version=plan.get("policy_version", ""),
                level=plan.get("level", ""), thinking_cap=plan.get("thinking_tokens", 0),
                answer_cap=plan.get("answer_tokens", 0), samples_planned=plan.get("samples", 0),
                prompt_tokens=0, thinking_tokens=0, answer_tokens=0, forced_tokens=0,
                samples_run=0, samples_stopped=0, cost_micros=res["amount_micros"], latency_ms=0,
                status="interrupted", error="the daemon stopped before this request settled; charged its reservation",
            )
            self.settle(db, row, None)
            settled.append(res["request_id"])
        return settled

    # windows ---------------------------------------------------------------

    def renew_windows(self, db: Database, now: datetime) -> list[str]:
        """Start a new window for every tenant whose window has ended; return their names."""
        renewed = []
        with db.atomic():
            for row in list(db.query("SELECT * FROM tenants ORDER BY name")):
                if self._roll(db, row, now)["window_start"] != row["window_start"]:
                    renewed.append(row["name"])
        return renewed

    # helpers ---------------------------------------------------------------

    def _row(self, db: Database, name: str) -> dict[str, Any]:
        cur = db.conn.execute("SELECT * FROM tenants WHERE name = ?", [name])
        row = cur.fetchone()
        if row is None:
            raise NotFound(f"no tenant named {name!r}; 'ponder admin tenant list' shows them")
        return dict(zip([d[0] for d in cur.description], row))

    def _roll(self, db: Database, row: dict[str, Any], now: datetime) -> dict[str, Any]:
        """Move the tenant into the window holding `now` if its window has ended.

        Spending restarts at zero; open reservations carry over, since their
        requests are still running and will settle into the new window.
        """
        start = parse_iso(row["window_start"])
        if now < window_end(start, row["window"], self.zone):
            return row
        new_start = iso(window_start(now, row["window"], self.zone))
        _restart_keys(db, row["name"])
        if self.leased:  # the lease was for the window that ended
            db.execute(
                "UPDATE tenants SET window_start = ?, spent_micros = 0, budget_micros = 0 WHERE name = ?",
                [new_start, row["name"]],
            )
            return row | {"window_start": new_start, "spent_micros": 0, "budget_micros": 0}
        db.execute(
            "UPDATE tenants SET window_start = ?, spent_micros = 0 WHERE name = ?", [new_start, row["name"]]
        )
        return row | {"window_start": new_start, "spent_micros": 0}

    def _view(self, row: dict[str, Any]) -> BalanceView:
        start = parse_iso(row["window_start"])
        return BalanceView(
            tenant=row["name"],
            enabled=bool(row["enabled"]),
            budget_micros=row["budget_micros"],
            spent_micros=row["spent_micros"],
            reserved_micros=row["reserved_micros"],
            window=row["window"],
            window_start=start,
            window_end=window_end(start, row["window"], self.zone),
            created_at=parse_iso(row["created_at"]),
        )

    # a fleet host's leases (ledger/postgres/fleet.py) ---------------------

    def apply_lease(
        self, db: Database, tenant: str, enabled: bool, window: str, start: datetime, granted_micros: int,
        created_at: datetime, now: datetime,
    ) -> BalanceView:
        """Make this file's row for the tenant hold the lease the central ledger granted (a total, not a delta)."""
        with db.atomic():
            if not db["tenants"].count_where("name = ?", [tenant]):
                db.table("tenants").insert(
                    {"name": tenant, "enabled": int(enabled), "budget_micros": 0, "window": window,
                     "window_start": iso(start), "spent_micros": 0, "reserved_micros": 0, "created_at": iso(created_at)}
                )
            row = self._roll(db, self._row(db, tenant), now)
            changes: dict[str, Any] = {"enabled": int(enabled), "budget_micros": granted_micros}
            if row["window_start"] != iso(start) or row["window"] != window:
                # The fleet's window moved on (or was changed by an admin): this file follows it.
                changes |= {"window": window, "window_start": iso(start), "spent_micros": 0}
                _restart_keys(db, tenant)
            db.table("tenants").update(tenant, changes)
            return self._view(self._row(db, tenant))

    def ensure_tenants(self, db: Database, tenants: Sequence[dict[str, Any]], now: datetime) -> None:
        """Give every tenant of the fleet a row here (no lease: budget 0) and its enabled flag."""
        with db.atomic():
            for t in tenants:
                db.execute(
                    "INSERT INTO tenants (name, enabled, budget_micros, window, window_start, spent_micros, "
                    "reserved_micros, created_at) VALUES (?, ?, 0, ?, ?, 0, 0, ?) "
                    "ON CONFLICT (name) DO UPDATE SET enabled = excluded.enabled",
                    [t["name"], int(t["enabled"]), t["budget_window"], iso(t["window_start"]), iso(t["created_at"])],
                )

    def freeze(self, db: Database, tenant: str) -> None:
        """The lease ran out unrenewed: no new reservation fits (running ones still settle)."""
        db.execute(
            "UPDATE tenants SET budget_micros = MIN(budget_micros, spent_micros + reserved_micros) WHERE name = ?",
            [tenant],
        )

    def shrink(self, db: Database, tenant: str, micros: int) -> int:
        """Hand up to `micros` of the lease back: lower the budget here first (never below spent + reserved).

        Returns what was actually taken off, in the same transaction: only that may be given back centrally.
        """
        with db.atomic():
            before = self._row(db, tenant)["budget_micros"]
            db.execute(
                "UPDATE tenants SET budget_micros = MAX(MIN(budget_micros, budget_micros - ?), "
                "MIN(budget_micros, spent_micros + reserved_micros)) WHERE name = ?",
                [micros, tenant],
            )
            return int(before - self._row(db, tenant)["budget_micros"])

    def unshipped(self, db: Database, limit: int) -> list[dict[str, Any]]:
        return list(db.query("SELECT * FROM spend WHERE shipped = 0 ORDER BY at LIMIT ?", [limit]))

    def unshipped_count(self, db: Database) -> int:
        return int(db.execute("SELECT COUNT(*) FROM spend WHERE shipped = 0").fetchone()[0])

    def mark_shipped(self, db: Database, request_ids: Sequence[str]) -> None:
        with db.atomic():
            db.conn.executemany("UPDATE spend SET shipped = 1 WHERE request_id = ?", [[r] for r in request_ids])


# The hot path (a reservation and a settlement per request) writes its rows
# with one cached INSERT statement per table and column set, rather than
# through sqlite_utils' generic insert, which inspects the table on every call.
_INSERTS: dict[tuple[str, tuple[str, ...]], str] = {}


def _insert(db: Database, table: str, record: dict[str, Any]) -> None:
    cols = tuple(record)
    sql = _INSERTS.get((table, cols))
    if sql is None:
        sql = f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})"
        _INSERTS[(table, cols)] = sql
    db.conn.execute(sql, list(record.values()))


def _capped_key(db: Database, key_id: str | None, tenant: str) -> dict[str, Any] | None:
    """The calling key's row when it has a cap of its own (None: no cap, or no such key, e.g. a certificate)."""
    if key_id is None:
        return None
    found = db.conn.execute(
        "SELECT budget_micros, spent_micros, reserved_micros FROM keys "
        "WHERE key_id = ? AND tenant = ? AND budget_micros IS NOT NULL",
        [key_id, tenant],
    ).fetchone()
    if found is None:
        return None
    return {"budget_micros": found[0], "spent_micros": found[1], "reserved_micros": found[2]}


def _restart_keys(db: Database, tenant: str) -> None:
    """The tenant's window restarted: so does what its keys spent (their open reservations carry over, as its own)."""
    db.execute("UPDATE keys SET spent_micros = 0 WHERE tenant = ? AND spent_micros != 0", [tenant])


def _fields(row: SpendRow) -> dict[str, Any]:
    """The row as a flat dict (its fields are plain values: no deep copy as dataclasses.asdict makes)."""
    return {f.name: getattr(row, f.name) for f in fields(row)}
