"""The central ledger's SQL on a real PostgreSQL server (tests/postgres.py): leases, shipping, schema. No model."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import psycopg
import pytest
from psycopg.rows import dict_row

from ponderd.errors import AlreadyExists, FailedPrecondition, NotFound
from ponderd.ledger.postgres import central, schema

UTC = ZoneInfo("UTC")
NOW = datetime(2026, 3, 2, 10, 0, tzinfo=timezone.utc)
DAY = datetime(2026, 3, 2, tzinfo=timezone.utc)


def run(coro):
    return asyncio.run(coro)


async def connect(dsn: str) -> psycopg.AsyncConnection:
    conn = await psycopg.AsyncConnection.connect(dsn, autocommit=True, row_factory=dict_row)
    await schema.migrate(conn, "UTC")
    return conn


def record(request_id: str, tenant: str, cost: int, reserved: int | None = None, window=DAY) -> dict:
    return {
        "request_id": request_id, "tenant": tenant, "at": NOW.isoformat(), "window_start": window.isoformat(),
        "status": "ok", "reserved_micros": cost if reserved is None else reserved, "cost_micros": cost,
        "prompt_tokens": 3, "thinking_tokens": 0, "answer_tokens": 4, "level": "direct",
    }


def test_grants_never_exceed_the_budget_across_hosts(pg_dsn):
    async def body():
        conn = await connect(pg_dsn)
        await central.create_tenant(conn, "acme", 1_000, "day", NOW, UTC, with_key=False)
        granted = {}
        for i in range(50):  # hosts asking in turn for more than there is
            host = f"h{i % 5}"
            g = await central.grant(conn, "acme", host, 300, 60, NOW, UTC)
            granted[host] = g.granted_micros
            assert sum(granted.values()) <= 1_000
        assert sum(granted.values()) == 1_000  # and all of it was handed out: nothing stranded by the rule itself
        # Host h0 dies: after its lease expires, what it did not ship as spent goes back to the pool.
        await central.ship(conn, "h0", [record("r1", "acme", 100)], NOW)
        for h in ("h1", "h2", "h3", "h4"):  # the others renew in time
            await central.grant(conn, "acme", h, 0, 60, NOW + timedelta(seconds=30), UTC)
        later = NOW + timedelta(seconds=61)
        for _ in range(30):  # fair shares: asking again and again takes what is free, bit by bit
            g = await central.grant(conn, "acme", "h1", 10_000, 60, later, UTC)
        others = sum(v for k, v in granted.items() if k not in ("h0", "h1"))
        assert g.granted_micros == 1_000 - 100 - others  # h0's unused share, and no more
        await conn.close()

    run(body())


def test_a_lowered_budget_shrinks_a_lease_but_never_below_its_spend(pg_dsn):
    async def body():
        conn = await connect(pg_dsn)
        await central.create_tenant(conn, "acme", 1_000, "day", NOW, UTC, with_key=False)
        assert (await central.grant(conn, "acme", "a", 800, 60, NOW, UTC)).granted_micros == 800
        await central.ship(conn, "a", [record("r1", "acme", 300)], NOW)
        await central.set_budget(conn, "acme", 200, None, NOW, UTC)
        assert (await central.grant(conn, "acme", "a", 0, 60, NOW, UTC)).granted_micros == 300
        assert (await central.grant(conn, "acme", "b", 100, 60, NOW, UTC)).granted_micros == 0
        await conn.close()

    run(body())


def test_concurrent_grants_keep_the_invariant(pg_server, pg_dsn):
    async def body():
        setup = await connect(pg_dsn)
        await central.create_tenant(setup, "acme", 5_000, "day", NOW, UTC, with_key=False)

        async def host(i: int) -> int:
            conn = await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True, row_factory=dict_row)
            total = 0
            for _ in range(10):
                total = (await central.grant(conn, "acme", f"h{i}", 97, 60, NOW, UTC)).granted_micros
            await conn.close()
            return total

        totals = await asyncio.gather(*(host(i) for i in range(12)))
        assert sum(totals) <= 5_000
        row = await (await setup.execute("SELECT SUM(granted_micros) AS g FROM leases")).fetchone()
        assert row["g"] == sum(totals) == 5_000
        await setup.close()

    run(body())


def test_shipping_is_exactly_once_and_late_spend_is_reported(pg_dsn):
    async def body():
        conn = await connect(pg_dsn)
        await central.create_tenant(conn, "acme", 1_000, "day", NOW, UTC, with_key=False)
        await central.grant(conn, "acme", "a", 500, 60, NOW, UTC)
        batch = [record("r1", "acme", 40), record("r2", "acme", 60)]
        assert sorted(await central.ship(conn, "a", batch, NOW)) == ["r1", "r2"]
        # The host died after the commit and before marking them shipped: it ships them again.
        assert await central.ship(conn, "a", batch + [record("r3", "acme", 5)], NOW) == ["r3"]
        lease = await (await conn.execute("SELECT spent_micros FROM leases WHERE host_id = 'a'")).fetchone()
        assert lease["spent_micros"] == 105
        # Records arriving after the lease expired are counted, and marked late.
        assert await central.ship(conn, "a", [record("r4", "acme", 7)], NOW + timedelta(seconds=120)) == ["r4"]
        rows = await (await conn.execute("SELECT request_id, late FROM spend ORDER BY request_id")).fetchall()
        assert [(r["request_id"], r["late"]) for r in rows] == [("r1", False), ("r2", False), ("r3", False), ("r4", True)]
        view = await central.balance(conn, "acme", NOW, UTC)
        assert view.spent_micros == 112
        # A charge above its reservation is refused by the schema, whatever the caller.
        with pytest.raises(psycopg.errors.CheckViolation):
            await central.ship(conn, "a", [record("r5", "acme", 10, reserved=5)], NOW)
        await conn.close()

    run(body())


def test_windows_roll_over_fleet_wide(pg_dsn):
    async def body():
        conn = await connect(pg_dsn)
        await central.create_tenant(conn, "acme", 1_000, "day", NOW, UTC, with_key=False)
        await central.grant(conn, "acme", "a", 900, 60, NOW, UTC)
        tomorrow = NOW + timedelta(days=1)
        g = await central.grant(conn, "acme", "b", 900, 60, tomorrow, UTC)
        assert g.window_start == datetime(2026, 3, 3, tzinfo=timezone.utc)
        assert g.granted_micros == 900  # yesterday's lease of host a holds nothing of today's budget
        await conn.close()

    run(body())


def test_keys_and_tenants(pg_dsn):
    async def body():
        conn = await connect(pg_dsn)
        key_id, token = await central.create_tenant(conn, "acme", 1_000, "day", NOW, UTC)
        assert token.startswith(f"pnd_{key_id}_")
        with pytest.raises(AlreadyExists):
            await central.create_tenant(conn, "acme", 1, "day", NOW, UTC)
        keys, tenants = await central.keyring_rows(conn)
        assert [k["key_id"] for k in keys] == [key_id] and [(t["name"], t["enabled"]) for t in tenants] == [("acme", True)]
        assert token.split("_")[2] not in json.dumps([dict(k) for k in keys])  # only the hash is stored
        await central.revoke_key(conn, key_id, NOW)
        assert (await central.keyring_rows(conn))[0] == []
        with pytest.raises(NotFound, match="no active key"):
            await central.revoke_key(conn, key_id, NOW)
        await conn.close()

    run(body())


def test_a_newer_schema_or_another_timezone_is_refused(pg_dsn):
    async def body():
        conn = await connect(pg_dsn)
        with pytest.raises(FailedPrecondition, match="timezone = 'UTC'"):
            await schema.migrate(conn, "Europe/Berlin")
        await conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
        with pytest.raises(FailedPrecondition, match="newer than this daemon's"):
            await schema.migrate(conn, "UTC")
        await conn.close()

    run(body())


def test_the_dsn_is_shown_without_its_password():
    shown = schema.safe_dsn("host=db.internal dbname=ponder user=ponder password=hunter2 sslmode=verify-full")
    assert "hunter2" not in shown and "host=db.internal" in shown and "sslmode=verify-full" in shown
    assert "s3cret" not in schema.safe_dsn("postgresql://ponder:s3cret@db.internal/ponder")


def test_grants_are_shared_fairly_and_can_be_given_back(pg_dsn):
    async def body():
        conn = await connect(pg_dsn)
        await central.create_tenant(conn, "acme", 1_200, "day", NOW, UTC, with_key=False)
        # Three hosts hold live leases: a fourth asking for everything gets its fair part of what is free.
        for h in ("a", "b", "c"):
            await central.grant(conn, "acme", h, 100, 60, NOW, UTC)
        g = await central.grant(conn, "acme", "d", 10_000, 60, NOW, UTC)
        assert g.granted_micros == -(-(1_200 - 300) // 4)
        # ...but always what its waiting request needs, if that much is free.
        g = await central.grant(conn, "acme", "d", 10_000, 60, NOW, UTC, need_micros=600)
        assert g.granted_micros == 225 + 600
        # Giving back: the lease shrinks, never below what was shipped as spent.
        await central.ship(conn, "d", [record("r1", "acme", 500)], NOW)
        assert (await central.grant(conn, "acme", "d", -10_000, 60, NOW, UTC)).granted_micros == 500
        await conn.close()

    run(body())
