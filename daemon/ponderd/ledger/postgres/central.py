"""The central ledger's SQL: each function is one transaction on a connection from the pool (dict rows).

Leases (`grant`, `give_back`) lock the tenant's row (SELECT … FOR UPDATE), so
grants to one tenant are serialised fleet-wide and the invariant holds:

    per tenant and window: sum(used) <= budget, where a lease's used is
    max(granted, spent) while live, and its spent (shipped records) once it
    has expired or been given back.

A host may spend only within what it was granted (its local file enforces
spent + reserved <= granted), and stops using a lease when it expires, so the
fleet as a whole never overspends, also while this database is unreachable.
Spend records are shipped idempotently by request id (`ship`); a lease's
spent grows only by the records that were new.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Iterable, Mapping
from zoneinfo import ZoneInfo

from ponderd.errors import AlreadyExists, NotFound
from ponderd.ledger.keys import _hash, new_token
from ponderd.ledger.types import BalanceView, parse_iso, window_end, window_start

NOTIFY_CHANNEL = "ponder_keys"
POLICY_CHANNEL = "ponder_policy"  # a new policy version (its number as the payload)


@dataclass(frozen=True)
class Grant:
    """What the central ledger says a host holds for a tenant now (totals: every answer heals a lost one)."""

    tenant: str
    enabled: bool
    window: str
    window_start: datetime
    budget_micros: int
    granted_micros: int
    expires_at: datetime
    created_at: datetime


async def _tenant_for_update(conn: Any, name: str, now: datetime, zone: ZoneInfo) -> dict[str, Any]:
    row = await (await conn.execute("SELECT * FROM tenants WHERE name = %s FOR UPDATE", [name])).fetchone()
    if row is None:
        raise NotFound(f"no tenant named {name!r}; 'ponder admin tenant list' shows them")
    if now >= window_end(row["window_start"], row["budget_window"], zone):
        start = window_start(now, row["budget_window"], zone)
        await conn.execute("UPDATE tenants SET window_start = %s WHERE name = %s", [start, name])
        row = row | {"window_start": start}
    return dict(row)


async def grant(
    conn: Any, tenant: str, host: str, want_micros: int, lease_seconds: float, now: datetime, zone: ZoneInfo,
    need_micros: int = 0,
) -> Grant:
    """Renew this host's lease on the tenant's window and change it by `want_micros`, within the budget.

    More (want > 0) is shared fairly: a host gets at most the free part of the
    budget divided among the hosts holding live leases, but always `need_micros`
    (the request waiting) if that much is free. Less (want < 0) gives part of
    the lease back. A lowered budget shrinks the lease. Never below what the
    host has shipped as spent.
    """
    async with conn.transaction():
        t = await _tenant_for_update(conn, tenant, now, zone)
        others = await (await conn.execute(
            """SELECT COALESCE(SUM(CASE WHEN returned OR expires_at <= %(now)s THEN spent_micros
                                        ELSE GREATEST(granted_micros, spent_micros) END), 0)::bigint AS used,
                      COUNT(*) FILTER (WHERE NOT returned AND expires_at > %(now)s)::int AS holders
               FROM leases WHERE tenant = %(t)s AND window_start = %(w)s AND host_id <> %(host)s""",
            {"now": now, "t": tenant, "w": t["window_start"], "host": host},
        )).fetchone()
        mine = await (await conn.execute(
            "SELECT * FROM leases WHERE tenant = %s AND host_id = %s AND window_start = %s",
            [tenant, host, t["window_start"]],
        )).fetchone()
        spent = mine["spent_micros"] if mine else 0
        live = mine is not None and not mine["returned"] and mine["expires_at"] > now
        base = max(mine["granted_micros"], spent) if live and mine else spent
        cap = t["budget_micros"] - int(others["used"])
        if want_micros > 0:
            free = max(cap - base, 0)
            fair = -(-free // (int(others["holders"]) + 1))  # rounded up: the last micro-credits are handed out too
            extra = min(want_micros, max(fair, min(need_micros, free)))
        else:
            extra = want_micros
        granted = max(spent, min(base + extra, cap))
        expires = now + timedelta(seconds=lease_seconds)
        await conn.execute(
            """INSERT INTO leases (tenant, host_id, window_start, granted_micros, spent_micros, expires_at, returned, grants)
               VALUES (%s, %s, %s, %s, 0, %s, false, 1)
               ON CONFLICT (tenant, host_id, window_start) DO UPDATE
               SET granted_micros = EXCLUDED.granted_micros, expires_at = EXCLUDED.expires_at,
                   returned = false, grants = leases.grants + 1""",
            [tenant, host, t["window_start"], granted, expires],
        )
    return Grant(
        tenant, t["enabled"], t["budget_window"], t["window_start"], t["budget_micros"], granted, expires, t["created_at"]
    )


async def give_back(conn: Any, host: str, now: datetime) -> int:
    """Return every lease this host holds (after shipping its records): its unused part goes back to the pool."""
    async with conn.transaction():
        cur = await conn.execute(
            "UPDATE leases SET returned = true, granted_micros = spent_micros, expires_at = LEAST(expires_at, %s) "
            "WHERE host_id = %s AND NOT returned",
            [now, host],
        )
        return int(cur.rowcount)


async def ship(conn: Any, host: str, records: Iterable[dict[str, Any]], now: datetime) -> list[str]:
    """Insert spend records (ignoring those already there); add the new ones' cost to their leases.

    Returns the request ids that were new. A record whose lease had expired
    when it arrived is marked late: its spend was not held back from the pool.
    """
    new: list[str] = []
    records = list(records)
    async with conn.transaction():
        # Tenant rows first, in name order, as `grant` locks them: one lock order, no deadlock between the two.
        await conn.execute(
            "SELECT name FROM tenants WHERE name = ANY(%s) ORDER BY name FOR UPDATE",
            [sorted({r["tenant"] for r in records})],
        )
        for r in records:
            window = parse_iso(r["window_start"])
            lease = await (await conn.execute(
                "SELECT expires_at, returned FROM leases WHERE tenant = %s AND host_id = %s AND window_start = %s "
                "FOR UPDATE",
                [r["tenant"], host, window],
            )).fetchone()
            late = r["cost_micros"] > 0 and (lease is None or lease["returned"] or lease["expires_at"] <= now)
            cur = await conn.execute(
                """INSERT INTO spend (request_id, host_id, tenant, at, window_start, status, reserved_micros,
                       cost_micros, prompt_tokens, thinking_tokens, answer_tokens, late, shipped_at, record)
                   VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
                   ON CONFLICT (request_id) DO NOTHING""",
                [r["request_id"], host, r["tenant"], parse_iso(r["at"]), window, r["status"], r["reserved_micros"],
                 r["cost_micros"], r["prompt_tokens"], r["thinking_tokens"], r["answer_tokens"], late, now,
                 json.dumps(r)],
            )
            if cur.rowcount == 0:
                continue
            new.append(r["request_id"])
            if r["cost_micros"] == 0:
                continue
            if lease is None:  # spent without a lease on record (it was lost): counted, expired
                await conn.execute(
                    "INSERT INTO leases (tenant, host_id, window_start, granted_micros, spent_micros, expires_at) "
                    "VALUES (%s, %s, %s, 0, %s, %s) ON CONFLICT (tenant, host_id, window_start) DO UPDATE "
                    "SET spent_micros = leases.spent_micros + EXCLUDED.spent_micros",
                    [r["tenant"], host, window, r["cost_micros"], now],
                )
            else:
                await conn.execute(
                    "UPDATE leases SET spent_micros = spent_micros + %s "
                    "WHERE tenant = %s AND host_id = %s AND window_start = %s",
                    [r["cost_micros"], r["tenant"], host, window],
                )
    return new


# tenants -----------------------------------------------------------------


async def _view(conn: Any, t: dict[str, Any], now: datetime, zone: ZoneInfo) -> BalanceView:
    """The fleet's balance: spent is every host's shipped records; reserved is leased and not yet shipped as spent."""
    start, window = t["window_start"], t["budget_window"]
    if now >= window_end(start, window, zone):
        start = window_start(now, window, zone)
    row = await (await conn.execute(
        """SELECT
             (SELECT COALESCE(SUM(cost_micros), 0)::bigint FROM spend WHERE tenant = %(t)s AND window_start = %(w)s) AS spent,
             (SELECT COALESCE(SUM(GREATEST(granted_micros - spent_micros, 0)), 0)::bigint FROM leases
               WHERE tenant = %(t)s AND window_start = %(w)s AND NOT returned AND expires_at > %(now)s) AS held""",
        {"t": t["name"], "w": start, "now": now},
    )).fetchone()
    return BalanceView(
        tenant=t["name"], enabled=t["enabled"], budget_micros=t["budget_micros"], spent_micros=int(row["spent"]),
        reserved_micros=int(row["held"]), window=window, window_start=start,
        window_end=window_end(start, window, zone), created_at=t["created_at"],
    )


async def balance(conn: Any, name: str, now: datetime, zone: ZoneInfo) -> BalanceView:
    t = await (await conn.execute("SELECT * FROM tenants WHERE name = %s", [name])).fetchone()
    if t is None:
        raise NotFound(f"no tenant named {name!r}; 'ponder admin tenant list' shows them")
    return await _view(conn, t, now, zone)


async def balances(conn: Any, now: datetime, zone: ZoneInfo) -> list[BalanceView]:
    rows = await (await conn.execute("SELECT * FROM tenants ORDER BY name")).fetchall()
    return [await _view(conn, t, now, zone) for t in rows]


async def tenant_info(conn: Any, name: str) -> dict[str, Any] | None:
    return await (await conn.execute("SELECT * FROM tenants WHERE name = %s", [name])).fetchone()


async def create_tenant(
    conn: Any, name: str, budget_micros: int, window: str, now: datetime, zone: ZoneInfo, with_key: bool = True,
) -> tuple[str, str]:
    """Create the tenant (and its first key unless `with_key` is false); return (key_id, token) or ("", "")."""
    async with conn.transaction():
        cur = await conn.execute(
            "INSERT INTO tenants (name, enabled, budget_micros, budget_window, window_start, created_at) "
            "VALUES (%s, true, %s, %s, %s, %s) ON CONFLICT (name) DO NOTHING",
            [name, budget_micros, window, window_start(now, window, zone), now],
        )
        if cur.rowcount == 0:
            raise AlreadyExists(f"tenant {name!r} exists already; pick another name or use 'admin budget set'")
        key = await _issue(conn, name, "tenant", "created with the tenant", now) if with_key else ("", "")
        await conn.execute("SELECT pg_notify(%s, %s)", [NOTIFY_CHANNEL, "tenant"])
    return key


async def set_budget(conn: Any, name: str, budget_micros: int, window: str | None, now: datetime, zone: ZoneInfo) -> None:
    async with conn.transaction():
        t = await _tenant_for_update(conn, name, now, zone)
        if window and window != t["budget_window"]:
            await conn.execute(
                "UPDATE tenants SET budget_micros = %s, budget_window = %s, window_start = %s WHERE name = %s",
                [budget_micros, window, window_start(now, window, zone), name],
            )
        else:
            await conn.execute("UPDATE tenants SET budget_micros = %s WHERE name = %s", [budget_micros, name])


async def set_enabled(conn: Any, name: str, enabled: bool) -> None:
    async with conn.transaction():
        cur = await conn.execute("UPDATE tenants SET enabled = %s WHERE name = %s", [enabled, name])
        if cur.rowcount == 0:
            raise NotFound(f"no tenant named {name!r}; 'ponder admin tenant list' shows them")
        await conn.execute("SELECT pg_notify(%s, %s)", [NOTIFY_CHANNEL, "tenant"])


# keys --------------------------------------------------------------------


async def _issue(
    conn: Any, tenant: str | None, scope: str, label: str, now: datetime, expires_at: datetime | None = None
) -> tuple[str, str]:
    if scope not in ("tenant", "admin"):
        raise ValueError("scope must be 'tenant' or 'admin'")
    if scope == "tenant" and await tenant_info(conn, tenant or "") is None:
        raise NotFound(f"no tenant named {tenant!r}")
    key_id, secret, token = new_token()
    await conn.execute(
        "INSERT INTO keys (key_id, tenant, scope, secret_sha256, label, created_at, expires_at) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s)",
        [key_id, tenant if scope == "tenant" else None, scope, _hash(secret), label, now, expires_at],
    )
    return key_id, token


async def issue_key(
    conn: Any, tenant: str | None, scope: str, label: str, now: datetime, expires_at: datetime | None = None
) -> tuple[str, str]:
    async with conn.transaction():
        key = await _issue(conn, tenant, scope, label, now, expires_at)
        await conn.execute("SELECT pg_notify(%s, %s)", [NOTIFY_CHANNEL, "key"])
    return key


async def rotate_key(
    conn: Any, key_id: str, overlap: timedelta, expires_at: datetime | None, now: datetime
) -> dict[str, Any]:
    """A successor of the key (same tenant, scope, label); the old one expires at the end of the overlap.

    As ledger/sqlite/keys.py: rotate_key, in one transaction with the old row locked, so two
    admins rotating the same key at once make one successor and the other is told it was rotated.
    """
    async with conn.transaction():
        old = await (await conn.execute(
            "SELECT * FROM keys WHERE key_id = %s AND revoked_at IS NULL FOR UPDATE", [key_id])).fetchone()
        if old is None or (old["expires_at"] is not None and old["expires_at"] <= now):
            raise NotFound(f"no active key {key_id!r} to rotate; 'ponder admin key list' shows them")
        if old["replaced_by"]:
            raise NotFound(f"key {key_id!r} was rotated already (to {old['replaced_by']}); rotate that one instead")
        if expires_at is None and old["expires_at"] is not None:
            expires_at = now + (old["expires_at"] - old["created_at"])
        new_id, token = await _issue(conn, old["tenant"], old["scope"], old["label"], now, expires_at)
        end = now + overlap
        if old["expires_at"] is not None:
            end = min(end, old["expires_at"])
        await conn.execute(
            "UPDATE keys SET replaced_by = %s, expires_at = %s, revoked_at = %s WHERE key_id = %s",
            [new_id, end, now if overlap <= timedelta(0) else None, key_id],
        )
        await conn.execute("SELECT pg_notify(%s, %s)", [NOTIFY_CHANNEL, "key"])
    return {"key_id": new_id, "token": token, "expires_at": expires_at, "old_key_id": key_id, "old_expires_at": end}


async def record_key_use(conn: Any, used: Mapping[str, datetime]) -> int:
    """Write when keys were last used (a host's batch), never moving a time back; return rows changed."""
    if not used:
        return 0
    ids = sorted(used)
    cur = await conn.execute(
        """UPDATE keys SET last_used_at = u.at FROM unnest(%s::text[], %s::timestamptz[]) AS u(key_id, at)
           WHERE keys.key_id = u.key_id AND (keys.last_used_at IS NULL OR keys.last_used_at < u.at)""",
        [ids, [used[k] for k in ids]],
    )
    return int(cur.rowcount)


async def revoke_key(conn: Any, key_id: str, now: datetime) -> None:
    async with conn.transaction():
        cur = await conn.execute("UPDATE keys SET revoked_at = %s WHERE key_id = %s AND revoked_at IS NULL", [now, key_id])
        if cur.rowcount == 0:
            raise NotFound(f"no active key {key_id!r}; 'ponder admin key list' shows them")
        await conn.execute("SELECT pg_notify(%s, %s)", [NOTIFY_CHANNEL, "revoke"])


async def has_admin_key(conn: Any) -> bool:
    row = await (await conn.execute("SELECT count(*) AS n FROM keys WHERE scope = 'admin' AND revoked_at IS NULL")).fetchone()
    return bool(row["n"])


async def list_keys(conn: Any, tenant: str | None) -> list[dict[str, Any]]:
    sql = "SELECT key_id, tenant, scope, label, created_at, revoked_at, expires_at, last_used_at, replaced_by FROM keys"
    rows = await (await conn.execute(sql + (" WHERE tenant = %s" if tenant else "") + " ORDER BY created_at",
                                     [tenant] if tenant else [])).fetchall()
    instants = ("created_at", "revoked_at", "expires_at", "last_used_at")
    return [r | {k: r[k] and r[k].isoformat() for k in instants} for r in rows]


async def keyring_rows(conn: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The active keys (hashes only) and every tenant."""
    keys = await (await conn.execute(
        "SELECT key_id, scope, tenant, secret_sha256, expires_at FROM keys WHERE revoked_at IS NULL")).fetchall()
    tenants = await (await conn.execute("SELECT * FROM tenants")).fetchall()
    return keys, tenants


# spend -------------------------------------------------------------------


async def spend_totals(
    conn: Any, since: datetime, until: datetime, tenant: str | None, by_host: bool = False
) -> list[dict[str, Any]]:
    host = "host_id AS host, " if by_host else ""
    group = "tenant, host_id, status" if by_host else "tenant, status"
    where, args = "at >= %s AND at < %s", list[Any]([since, until])
    if tenant:
        where += " AND tenant = %s"
        args.append(tenant)
    return list(await (await conn.execute(
        f"""SELECT tenant, {host}status, COUNT(*)::int AS requests, SUM(prompt_tokens)::bigint AS prompt_tokens,
                   SUM(thinking_tokens)::bigint AS thinking_tokens, SUM(answer_tokens)::bigint AS answer_tokens,
                   SUM(cost_micros)::bigint AS cost_micros
            FROM spend WHERE {where} GROUP BY {group} ORDER BY {group}""", args,
    )).fetchall())


async def spend_records(conn: Any, since: datetime, until: datetime, tenant: str | None, limit: int) -> list[dict[str, Any]]:
    where, args = "at >= %s AND at < %s", list[Any]([since, until])
    if tenant:
        where += " AND tenant = %s"
        args.append(tenant)
    rows = await (await conn.execute(
        f"SELECT record, host_id FROM spend WHERE {where} ORDER BY at DESC LIMIT %s", [*args, limit])).fetchall()
    return [r["record"] | {"host_id": r["host_id"]} for r in rows]


# idempotency -------------------------------------------------------------


async def heartbeat(conn: Any, host: str, live: set[str], now: datetime) -> None:
    """This host's running claims are alive: refresh them (the sync loop, every sync_seconds)."""
    if live:
        await conn.execute(
            "UPDATE idempotency_keys SET heartbeat_at = %s WHERE host_id = %s AND request_id = ANY(%s) "
            "AND state = 'running'",
            [now, host, sorted(live)],
        )


# policy versions ----------------------------------------------------------


async def publish_policy(conn: Any, text: str, sha256: str, host: str, now: datetime) -> int:
    """Store the policy text as the next version (unless it is the newest already); tell every host. Its version."""
    async with conn.transaction():
        await conn.execute("LOCK TABLE policy_versions IN SHARE ROW EXCLUSIVE MODE")
        cur = await conn.execute("SELECT version, sha256 FROM policy_versions ORDER BY version DESC LIMIT 1")
        latest = await cur.fetchone()
        if latest is not None and _col(latest, "sha256", 1) == sha256:
            return int(_col(latest, "version", 0))
        cur = await conn.execute(
            "INSERT INTO policy_versions (sha256, text, host_id, created_at) VALUES (%s, %s, %s, %s) RETURNING version",
            [sha256, text, host, now],
        )
        row = await cur.fetchone()
        version = int(_col(row, "version", 0))
        await conn.execute("SELECT pg_notify(%s, %s)", [POLICY_CHANNEL, str(version)])
    return version


async def latest_policy(conn: Any) -> dict[str, Any] | None:
    """The newest stored policy version: version, sha256, text, host_id, created_at; None before the first."""
    cur = await conn.execute(
        "SELECT version, sha256, text, host_id, created_at FROM policy_versions ORDER BY version DESC LIMIT 1"
    )
    row = await cur.fetchone()
    if row is None:
        return None
    names = ("version", "sha256", "text", "host_id", "created_at")
    return {n: _col(row, n, i) for i, n in enumerate(names)}


def _col(row: Any, name: str, index: int) -> Any:
    return row[name] if isinstance(row, dict) else row[index]

