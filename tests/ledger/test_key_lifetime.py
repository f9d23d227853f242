"""Key lifetime: expiry, rotation with an overlap, last use batched in memory; SQLite and the central PostgreSQL ledger.

Time comes from a ManualClock: nothing here sleeps.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import psycopg
import pytest
from psycopg.rows import dict_row

from ponderd.clock import ManualClock
from ponderd.errors import KeyExpired, NotFound, Unauthenticated
from ponderd.ledger.keys import Keyring
from ponderd.ledger.postgres import central, schema
from ponderd.ledger.sqlite.keys import issue_key, list_keys, record_use, refresh, rotate_key
from ponderd.ledger.sqlite.ledger import Ledger
from ponderd.ledger.sqlite.store import connect

NOW = datetime(2026, 3, 2, 10, 0, tzinfo=timezone.utc)
UTC = ZoneInfo("UTC")


@pytest.fixture
def clock():
    return ManualClock(NOW)


@pytest.fixture
def db(tmp_path):
    db = connect(tmp_path / "p.db")
    Ledger(timezone.utc).create_tenant(db, "acme", 1_000_000, "day", NOW)
    return db


def bearer(token: str) -> str:
    return f"Bearer {token}"


def test_an_expiring_key_works_until_its_expiry_then_says_when_it_expired(db, clock):
    ring = Keyring(clock)
    key_id, token = issue_key(db, "acme", "tenant", "ci", NOW, NOW + timedelta(hours=12))
    _, forever = issue_key(db, "acme", "tenant", "", NOW)
    refresh(ring, db)
    assert ring.authenticate(bearer(token)).tenant == "acme"
    clock.advance(timedelta(hours=12) - timedelta(seconds=1))
    assert ring.authenticate(bearer(token)).key_id == key_id
    clock.advance(timedelta(seconds=1))
    with pytest.raises(KeyExpired, match=rf"key {key_id} expired at 2026-03-02T22:00:00Z") as err:
        ring.authenticate(bearer(token))
    assert isinstance(err.value, Unauthenticated) and err.value.reason == "KEY_EXPIRED"
    assert ring.authenticate(bearer(forever)).tenant == "acme"  # a key without expiry lives on


def test_rotation_keeps_both_keys_during_the_overlap_then_only_the_new(db, clock):
    ring = Keyring(clock)
    old_id, old = issue_key(db, "acme", "tenant", "billing", NOW, NOW + timedelta(days=30))
    refresh(ring, db)
    clock.advance(timedelta(days=1))
    r = rotate_key(db, old_id, timedelta(minutes=10), None, clock.now())
    refresh(ring, db)
    assert r["old_expires_at"] == clock.now() + timedelta(minutes=10)
    assert r["expires_at"] == clock.now() + timedelta(days=30)  # the old key's lifetime
    rows = {k["key_id"]: k for k in list_keys(db, "acme")}
    assert rows[old_id]["replaced_by"] == r["key_id"] and rows[r["key_id"]]["label"] == "billing"
    assert ring.authenticate(bearer(old)).key_id == old_id
    assert ring.authenticate(bearer(r["token"])).key_id == r["key_id"]
    clock.advance(timedelta(minutes=10))
    with pytest.raises(KeyExpired, match=f"key {old_id} expired"):
        ring.authenticate(bearer(old))
    assert ring.authenticate(bearer(r["token"])).tenant == "acme"
    with pytest.raises(NotFound, match="no active key"):  # an expired key cannot be rotated again
        rotate_key(db, old_id, timedelta(minutes=10), None, clock.now())


def test_rotation_without_overlap_revokes_at_once_and_twice_is_refused(db, clock):
    ring = Keyring(clock)
    old_id, old = issue_key(db, "acme", "tenant", "", NOW)
    r = rotate_key(db, old_id, timedelta(0), None, NOW)
    refresh(ring, db)
    assert r["expires_at"] is None  # the old key never expired: nor does the new one
    with pytest.raises(Unauthenticated, match="unknown or revoked"):
        ring.authenticate(bearer(old))
    new_id = r["key_id"]
    rotate_key(db, new_id, timedelta(hours=1), None, NOW)
    with pytest.raises(NotFound, match="rotated already"):
        rotate_key(db, new_id, timedelta(hours=1), None, NOW)


def test_the_overlap_never_outlives_the_old_keys_own_expiry(db):
    old_id, _ = issue_key(db, "acme", "tenant", "", NOW, NOW + timedelta(minutes=5))
    r = rotate_key(db, old_id, timedelta(hours=1), NOW + timedelta(days=7), NOW)
    assert r["old_expires_at"] == NOW + timedelta(minutes=5) and r["expires_at"] == NOW + timedelta(days=7)


def test_last_use_is_batched_in_memory_and_written_in_one_flush(db, clock):
    ring = Keyring(clock)
    key_id, token = issue_key(db, "acme", "tenant", "", NOW)
    refresh(ring, db)
    changes = db.conn.total_changes
    for _ in range(50):
        ring.authenticate(bearer(token))
        clock.advance(timedelta(seconds=1))
    assert db.conn.total_changes == changes  # no write per request
    used = ring.take_usage()
    assert used == {key_id: NOW + timedelta(seconds=49)} and ring.take_usage() == {}
    assert record_use(db, used) == 1
    assert list_keys(db, "acme")[0]["last_used_at"] == (NOW + timedelta(seconds=49)).isoformat(timespec="microseconds")
    assert record_use(db, {key_id: NOW}) == 0  # an older batch (another host's) never moves it back
    ring.restore_usage({key_id: NOW})  # a failed flush puts its batch back
    assert ring.take_usage() == {key_id: NOW}


# The central ledger (keys are fleet-wide there): the same rules on a real PostgreSQL server.


async def pg(dsn: str) -> psycopg.AsyncConnection:
    conn = await psycopg.AsyncConnection.connect(dsn, autocommit=True, row_factory=dict_row)
    await schema.migrate(conn, "UTC")
    return conn


def test_central_keys_expire_rotate_and_record_use(pg_dsn, clock):
    async def body():
        conn = await pg(pg_dsn)
        await central.create_tenant(conn, "acme", 1_000, "day", NOW, UTC, with_key=False)
        key_id, token = await central.issue_key(conn, "acme", "tenant", "svc", NOW, NOW + timedelta(hours=1))
        ring = Keyring(clock)  # what every host of the fleet loads: refresh_keys reads keyring_rows
        keys, tenants = await central.keyring_rows(conn)
        ring.load(keys, {t["name"]: t["enabled"] for t in tenants})
        assert ring.authenticate(bearer(token)).key_id == key_id
        r = await central.rotate_key(conn, key_id, timedelta(minutes=10), None, NOW + timedelta(minutes=30))
        assert r["expires_at"] == NOW + timedelta(minutes=30) + timedelta(hours=1)
        assert r["old_expires_at"] == NOW + timedelta(minutes=40)
        with pytest.raises(NotFound, match="rotated already"):
            await central.rotate_key(conn, key_id, timedelta(minutes=10), None, NOW + timedelta(minutes=30))
        keys, tenants = await central.keyring_rows(conn)
        ring.load(keys, {t["name"]: t["enabled"] for t in tenants})
        clock.set(NOW + timedelta(minutes=39))
        assert ring.authenticate(bearer(token)).key_id == key_id
        assert ring.authenticate(bearer(r["token"])).key_id == r["key_id"]
        clock.set(NOW + timedelta(minutes=40))
        with pytest.raises(KeyExpired, match="expired at 2026-03-02T10:40:00Z"):
            ring.authenticate(bearer(token))
        used = ring.take_usage()
        assert await central.record_key_use(conn, used) == 2
        assert await central.record_key_use(conn, {key_id: NOW}) == 0  # never back in time
        rows = {k["key_id"]: k for k in await central.list_keys(conn, "acme")}
        assert rows[key_id]["replaced_by"] == r["key_id"]
        assert rows[key_id]["last_used_at"] == (NOW + timedelta(minutes=39)).isoformat()
        assert rows[r["key_id"]]["label"] == "svc" and rows[r["key_id"]]["expires_at"] == r["expires_at"].isoformat()
        await conn.close()

    asyncio.run(body())
