"""Three daemons on loopback, one ledger on a real PostgreSQL server: budgets, keys and reports fleet-wide.

Each daemon is the real one (model, SQLite file as its local buffer, gRPC on
loopback); the central ledger is a throwaway PostgreSQL server from the
system's packages (tests/postgres.py).
"""

from __future__ import annotations

import concurrent.futures
import os
import pathlib
import subprocess
import sys
import time

import psycopg
import pytest

from conftest import DaemonThread, make_settings
from ponder.client import PonderClient
from ponder.errors import BudgetExhausted as BudgetExhaustedError
from ponder.errors import Unauthenticated as UnauthenticatedError

pytestmark = pytest.mark.model

PONDER = str(pathlib.Path(sys.executable).parent / "ponder")
FLEET = {"lease_seconds": 10, "sync_seconds": 0.25, "keys_poll_seconds": 1.0, "min_lease": 0.0005}


def fleet_settings(state: pathlib.Path, dsn: str, host: str, **ledger):
    return make_settings(
        state, max_queue=64, ledger={"backend": "postgres", "dsn": dsn, "host_id": host, **FLEET, **ledger}
    )


def start_fleet(tmp_path: pathlib.Path, dsn: str, n: int = 3, **ledger) -> list[DaemonThread]:
    return [DaemonThread(fleet_settings(tmp_path / f"host{i}", dsn, f"host{i}", **ledger)).start() for i in range(n)]


def central(dsn: str, sql: str, args=()) -> list[tuple]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(sql, args).fetchall()


def eventually(probe, timeout: float = 30.0, what: str = "the condition"):
    deadline = time.monotonic() + timeout
    while not (result := probe()):
        assert time.monotonic() < deadline, f"{what} did not hold within {timeout}s"
        time.sleep(0.05)
    return result


def ask_all(hosts: list[DaemonThread], token: str, n: int) -> tuple[list, list]:
    """`n` asks spread round-robin over the hosts, 24 at a time; (answers, refusals)."""
    clients = [PonderClient(h.address, token, timeout=120) for h in hosts]

    def one(i: int):
        try:
            return clients[i % len(clients)].ask(f"What is {i} plus 1?", seed=i)
        except BudgetExhaustedError as exc:
            return exc

    with concurrent.futures.ThreadPoolExecutor(24) as pool:
        results = list(pool.map(one, range(n)))
    for c in clients:
        c.close()
    return [r for r in results if not isinstance(r, Exception)], [r for r in results if isinstance(r, Exception)]


@pytest.fixture
def fleet(tmp_path, pg_dsn):
    hosts = start_fleet(tmp_path, pg_dsn)
    yield hosts
    for h in hosts:
        h.stop()


def test_one_budget_across_three_hosts(fleet, pg_dsn):
    a = fleet[0]
    with a.admin() as admin:
        created = admin.create_tenant("shared", 2.0)
    token = created.token
    # The key was issued on host0; the others learn it from the central ledger.
    with PonderClient(fleet[2].address, token, timeout=120) as c:
        first = eventually(lambda: _try(c.ask, "What is 2 plus 2?"), what="host2 knowing the key")
    answers, refusals = ask_all(fleet, token, 150)
    answers.append(first)
    assert refusals, "the budget was meant to run out: make the asks dearer or the budget smaller"
    for r in refusals:
        assert "fleet" in str(r) and "shared" in str(r), str(r)
    # Every answered request has exactly one central record, once each host has shipped.
    ids = [x.request_id for x in answers]
    eventually(lambda: central(pg_dsn, "SELECT count(*) FROM spend WHERE status = 'ok' AND tenant = 'shared'")[0][0]
               == len(ids), what="every record shipped")
    rows = central(pg_dsn, "SELECT request_id, count(*) FROM spend WHERE request_id = ANY(%s) GROUP BY request_id", [ids])
    assert len(rows) == len(ids) and all(n == 1 for _, n in rows)
    spent = central(pg_dsn, "SELECT sum(cost_micros)::bigint FROM spend WHERE tenant = 'shared'")[0][0]
    assert sum(round(x.cost * 1e6) for x in answers) == spent  # what the clients were told is what was logged
    assert spent <= 2_000_000, f"the fleet spent {spent} micro-credits of a 2,000,000 budget"
    hosts = central(pg_dsn, "SELECT count(DISTINCT host_id) FROM spend WHERE tenant = 'shared'")[0][0]
    assert hosts == 3, "every host served some of it"
    # `ponder admin spend` on any host shows the fleet.
    with fleet[1].admin() as admin:
        report = admin.spend(tenant="shared", records=0)
    total = sum(line.cost for line in report.lines)
    assert abs(total - spent / 1e6) < 1e-9


def _try(fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except UnauthenticatedError:
        return None


def test_keys_reach_every_host_from_the_cli(fleet, tmp_path):
    a, b = fleet[0], fleet[1]

    def cli(host: DaemonThread, *argv: str, token: str) -> subprocess.CompletedProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PONDER_")}
        env |= {"PONDER_ADDRESS": host.address, "PONDER_TOKEN": token, "PONDER_ADMIN_TOKEN": token,
                "PONDER_STATE_DIR": str(tmp_path / "none")}
        return subprocess.run([PONDER, *argv], env=env, capture_output=True, text=True,
                              timeout=120)

    made = cli(a, "admin", "tenant", "create", "team", "--budget", "5", "--json", token=a.token("admin"))
    assert made.returncode == 0, made.stderr
    import json

    token = json.loads(made.stdout)["token"]
    asked = eventually(lambda: (r := cli(b, "ask", "What is 3 plus 4?", token=token)).returncode == 0
                       and r, what="host1 accepting a key made on host0")
    assert asked.stdout.strip()
    key_id = token.split("_")[1]
    revoked_at = time.monotonic()
    out = cli(a, "admin", "key", "revoke", key_id, token=a.token("admin"))
    assert out.returncode == 0, out.stderr
    refused = eventually(lambda: (r := cli(b, "ask", "What is 1 plus 1?", token=token)).returncode
                         != 0 and r, timeout=FLEET["keys_poll_seconds"] + 10, what="host1 refusing the revoked key")
    assert "revoked" in refused.stderr, refused.stderr
    assert time.monotonic() - revoked_at < FLEET["keys_poll_seconds"] + 10
