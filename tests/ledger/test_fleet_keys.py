"""Key lifetime on the fleet ledger: two real daemons, one PostgreSQL; an expiry and a rotation hold on every host.

Both hosts share a ManualClock, so an hour passes without a sleep; keys travel
between hosts through the central ledger as in production (NOTIFY, or the poll).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import psycopg
import pytest
from test_fleet import eventually, fleet_settings

from conftest import DaemonThread
from ponder.client import AdminClient, PonderClient
from ponder.errors import PonderError
from ponderd.clock import ManualClock

pytestmark = pytest.mark.model


@pytest.fixture
def hosts(tmp_path, pg_dsn):
    clock = ManualClock(datetime(2026, 3, 2, 10, 0, tzinfo=timezone.utc))
    started = [DaemonThread(fleet_settings(tmp_path / f"h{i}", pg_dsn, f"h{i}"), clock).start() for i in range(2)]
    yield clock, started
    for h in started:
        h.stop()


def works(host: DaemonThread, token: str) -> bool | str:
    try:
        with PonderClient(host.address, token, timeout=30, retries=False) as c:
            c.balance()
        return True
    except PonderError as exc:
        return exc.message


def test_an_expiry_and_a_rotation_made_on_one_host_hold_on_the_other(hosts, pg_dsn):
    clock, (a, b) = hosts
    with AdminClient(a.address, a.token("admin"), timeout=60) as admin:
        admin.create_tenant("team", 5)
        issued = admin.issue_key("team", label="svc", expires_in=3600)
        rotated_from = admin.issue_key("team", label="old")
    eventually(lambda: works(b, issued.token) is True and works(b, rotated_from.token) is True,
               what="host h1 accepting the keys made on h0")
    with AdminClient(b.address, b.token("admin"), timeout=60) as admin:  # rotated on the other host
        new = admin.rotate_key(rotated_from.key_id, overlap=600)
    eventually(lambda: works(a, new.token) is True, what="host h0 accepting the rotated key")
    assert works(a, rotated_from.token) is True  # the overlap
    clock.advance(timedelta(minutes=10))
    for host in (a, b):
        assert f"key {rotated_from.key_id} expired at 2026-03-02T10:10:00Z" in str(works(host, rotated_from.token))
        assert works(host, new.token) is True and works(host, issued.token) is True
    clock.advance(timedelta(minutes=50))
    for host in (a, b):
        assert f"key {issued.key_id} expired at 2026-03-02T11:00:00Z" in str(works(host, issued.token))
    for host in (a, b):
        with AdminClient(host.address, host.token("admin"), timeout=60) as admin:
            admin.run_job("flush_key_usage")  # each host writes its own batch of last uses
    with psycopg.connect(pg_dsn) as conn:
        used = dict(conn.execute("SELECT key_id, last_used_at FROM keys WHERE tenant = 'team'").fetchall())
    assert used[issued.key_id] is not None and used[new.key_id] is not None
