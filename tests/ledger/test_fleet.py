"""Three daemons on loopback, one ledger on a real PostgreSQL server: budgets, keys and reports fleet-wide.

Each daemon is the real one (model, SQLite file as its local buffer, gRPC on
loopback); the central ledger is a throwaway PostgreSQL server from the
system's packages (tests/postgres.py).
"""

from __future__ import annotations

import concurrent.futures
import os
import pathlib
import shutil
import subprocess
import sys
import time

import psycopg
import pytest

from conftest import DaemonThread, make_settings, scrape, value
from ponder.client import PonderClient
from ponder.errors import BudgetExhausted as BudgetExhaustedError
from ponder.errors import FailedPrecondition as FailedPreconditionError
from ponder.errors import Unauthenticated as UnauthenticatedError

pytestmark = pytest.mark.model

PONDER = str(pathlib.Path(sys.executable).parent / "ponder")
FLEET = {"lease_seconds": 10, "sync_seconds": 0.25, "keys_poll_seconds": 1.0, "min_lease": 0.0005}


def fleet_settings(state: pathlib.Path, dsn: str, host: str, policy: pathlib.Path | None = None, **ledger):
    return make_settings(
        state, *([policy] if policy else []), max_queue=64,
        ledger={"backend": "postgres", "dsn": dsn, "host_id": host, **FLEET, **ledger},
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
    with fleet[2].admin() as admin:
        by_host = admin.spend(tenant="shared", by_host=True)
    assert {line.host for line in by_host.lines} == {"host0", "host1", "host2"}
    assert abs(sum(line.cost for line in by_host.lines) - total) < 1e-9


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
    # `ponder admin spend --by-host` on the other host shows the ask host1 served.
    report = cli(b, "admin", "spend", "--tenant", "team", "--by-host", "--json", token=b.token("admin"))
    assert report.returncode == 0, report.stderr
    assert [line["host"] for line in json.loads(report.stdout)["lines"]] == ["host1"]
    assert time.monotonic() - revoked_at < FLEET["keys_poll_seconds"] + 10


def test_an_outage_of_the_central_ledger(tmp_path):
    """PostgreSQL stops mid-run: hosts serve within their leases, refuse beyond them saying why, never overspend,
    and ship every record exactly once when it is back."""
    import postgres

    server = postgres.start_server()  # its own server: this test stops it
    hosts: list[DaemonThread] = []
    try:
        dsn = server.database()
        hosts = start_fleet(tmp_path, dsn, n=2, lease_seconds=120, max_lease_fraction=0.2)
        with hosts[0].admin() as admin:
            token = admin.create_tenant("shared", 3.0).token
        for h in hosts:  # both know the key, and each holds a lease
            with PonderClient(h.address, token, timeout=120) as c:
                eventually(lambda c=c: _try(c.ask, "What is 5 plus 5?"), what="the key on every host")
        before, _ = ask_all(hosts, token, 20)
        for h in hosts:  # the fleet gauges, scraped from each daemon's metrics port
            samples = scrape(h)
            assert value(samples, "ponder_fleet_ledger_reachable") == 1
            assert value(samples, "ponder_fleet_lease_transactions_total", kind="grant") >= 1
            assert value(samples, "ponder_fleet_leased_credits", tenant="shared") > 0
            assert 0 <= value(samples, "ponder_fleet_last_sync_age_seconds") < 60
        server.stop()
        stopped = time.monotonic()
        during, refused = ask_all(hosts, token, 80)
        assert during, "hosts kept serving within the leases they held"
        assert refused, "and refused beyond them"
        for r in refused:
            assert "unreachable" in str(r) and "ledger.dsn" in str(r), str(r)
        waiting = sum(h.call(h.daemon.store.call(lambda db: db.execute(
            "SELECT count(*) FROM spend WHERE shipped = 0").fetchone()[0])) for h in hosts)
        assert waiting >= len(during), "the records wait in each host's file"
        for h in hosts:
            eventually(lambda h=h: value(scrape(h), "ponder_fleet_ledger_reachable") == 0,
                       what="the reachable gauge at 0 during the outage")
        eventually(lambda: sum(value(scrape(h), "ponder_fleet_unshipped_records") for h in hosts) >= len(during),
                   what="the unshipped records counted")
        server.start()
        assert time.monotonic() - stopped < 100, "the outage was meant to be shorter than a lease"
        ids = [x.request_id for x in before + during]
        eventually(lambda: central(dsn, "SELECT count(*) FROM spend WHERE request_id = ANY(%s)", [ids])[0][0]
                   == len(ids), timeout=60, what="every record shipped after the outage")
        for h in hosts:
            eventually(lambda h=h: value(scrape(h), "ponder_fleet_ledger_reachable") == 1, timeout=60,
                       what="the reachable gauge back at 1")
            eventually(lambda h=h: value(scrape(h), "ponder_fleet_unshipped_records") == 0, timeout=60,
                       what="no record left unshipped")
        rows = central(dsn, "SELECT count(*), count(DISTINCT request_id), sum(cost_micros)::bigint FROM spend "
                            "WHERE tenant = 'shared'")[0]
        assert rows[0] == rows[1], "no record twice"
        assert rows[2] <= 3_000_000, f"the fleet spent {rows[2]} of a 3,000,000 budget"
        late = central(dsn, "SELECT count(*) FROM spend WHERE late")[0][0]
        assert late == 0, "an outage shorter than a lease leaves no spend beyond a lease"
    finally:
        for h in hosts:
            h.stop()
        postgres.remove(server)


def test_an_unreachable_central_ledger_at_start_is_one_line_naming_the_setting(tmp_path):
    import socket

    from conftest import SMALL_POLICY

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PONDER_")}
    env |= {
        "PONDER_METRICS_LISTEN": "", "PONDER_LEDGER_BACKEND": "postgres",
        "PONDER_LEDGER_DSN": f"host=127.0.0.1 port={port} dbname=ponder user=ponder password=hunter2",
    }
    r = subprocess.run(
        [str(pathlib.Path(sys.executable).parent / "ponderd"), "--listen", "127.0.0.1:0", "--state-dir",
         str(tmp_path / "state"), "--policy-file", str(SMALL_POLICY)],
        env=env, capture_output=True, text=True, timeout=120,
    )
    assert r.returncode == 1
    assert "Traceback" not in r.stderr and "hunter2" not in r.stderr + r.stdout
    line = next(x for x in r.stderr.splitlines() if "cannot reach the central ledger (" in x)
    for part in ("host=127.0.0.1", f"port={port}", "dbname=ponder", "user=ponder", "Connection refused"):
        assert part in line, line
    assert "check ledger.dsn (PONDER_LEDGER_DSN)" in r.stderr


def test_the_postgres_backend_needs_a_dsn():
    from ponderd.settings import SettingsError, load_settings

    with pytest.raises(SettingsError, match=r"needs ledger.dsn \(PONDER_LEDGER_DSN\)"):
        load_settings(env={"PONDER_LEDGER_BACKEND": "postgres"})
    with pytest.raises(SettingsError, match="ledger.backend must be sqlite or postgres"):
        load_settings(env={"PONDER_LEDGER_BACKEND": "mysql"})
    s = load_settings(env={"PONDER_LEDGER_BACKEND": "postgres", "PONDER_LEDGER_DSN": "host=db password=hunter2"})
    assert "hunter2" not in repr(s)


def test_a_retry_on_another_host_replays_and_is_charged_once(fleet, pg_dsn):
    with fleet[0].admin() as admin:
        token = admin.create_tenant("retry", 5.0).token
    clients = [PonderClient(h.address, token, timeout=120) for h in fleet]
    try:
        first = eventually(lambda: _try(clients[0].ask, "What is 6 plus 7?", idempotency_key="key-1"),
                           what="host0 knowing the key")
        again = eventually(lambda: _try(clients[1].ask, "What is 6 plus 7?", idempotency_key="key-1"),
                           what="host1 knowing the key")
        assert again.request_id == first.request_id and again.answer == first.answer
        # A repeat while the first attempt still runs on another host waits for it, then gets its answer.
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            running = pool.submit(clients[2].ask, "Name three colours, then count to ten.", idempotency_key="key-2")
            eventually(lambda: central(pg_dsn, "SELECT state FROM idempotency_keys WHERE key = 'key-2'")
                       == [("running",)], what="the claim running on host2")
            repeat = pool.submit(clients[0].ask, "Name three colours, then count to ten.", idempotency_key="key-2")
            a, b = running.result(120), repeat.result(120)
        assert a.request_id == b.request_id and a.answer == b.answer
    finally:
        for c in clients:
            c.close()
    ids = [first.request_id, a.request_id]
    eventually(lambda: central(pg_dsn, "SELECT count(*) FROM spend WHERE request_id = ANY(%s)", [ids])[0][0] == 2,
               what="both records shipped")
    rows = central(pg_dsn, "SELECT count(*) FROM spend WHERE tenant = 'retry' AND status = 'ok'")
    assert rows == [(2,)], "each key was charged once, on one host"


def test_a_host_killed_holding_a_lease(tmp_path, pg_dsn):
    """SIGKILL a host that holds most of a budget: its share returns to the pool after the lease expires, and
    the records it had not shipped arrive when it restarts (any after their lease expired are marked late)."""
    import signal

    from conftest import DaemonProcess

    lease = 8
    env = {k: v for k, v in os.environ.items() if not k.startswith("PONDER_")} | {
        "PONDER_STATE_DIR": str(tmp_path / "killed" / "state"), "PONDER_METRICS_LISTEN": "",
        "PONDER_LEDGER_BACKEND": "postgres", "PONDER_LEDGER_DSN": pg_dsn, "PONDER_LEDGER_HOST_ID": "killed",
        "PONDER_LEDGER_LEASE_SECONDS": str(lease), "PONDER_LEDGER_SYNC_SECONDS": "2",
        "PONDER_LEDGER_MIN_LEASE": "0.8", "PONDER_LEDGER_MAX_LEASE_FRACTION": "0.9",
    }
    survivor = DaemonThread(fleet_settings(tmp_path / "survivor", pg_dsn, "survivor", min_lease=0.05,
                                           max_lease_fraction=0.9, lease_seconds=lease, sync_seconds=1)).start()
    killed = DaemonProcess(env, program="ponderd")
    try:
        killed.wait_ready()
        with survivor.admin() as admin:
            token = admin.create_tenant("shared", 1.0).token
        address = (tmp_path / "killed" / "state" / "endpoint").read_text().strip()
        with PonderClient(address, token, timeout=120) as c:
            answered = [eventually(lambda: _try(c.ask, "What is 8 plus 1?"), what="the key on the killed host")]
            answered += [c.ask(f"What is {i} plus 2?") for i in range(3)]
        killed.proc.send_signal(signal.SIGKILL)
        assert killed.proc.wait(30) == -signal.SIGKILL
        killed._log.close()
        held = central(pg_dsn, "SELECT granted_micros FROM leases WHERE host_id = 'killed'")[0][0]
        assert held >= 800_000, "the killed host held most of the budget"
        with PonderClient(survivor.address, token, timeout=120) as c:
            eventually(lambda: _try(c.ask, "What is 1 plus 1?"), what="the key on the survivor")
            refused = _refused(c)
            assert "held in other hosts' leases" in str(refused)
            # After the lease expires, its unused share is the pool's again: the survivor serves on.
            eventually(lambda: _answered(c), timeout=lease + 30, what="the survivor serving from the returned share")
        restarted = DaemonProcess(env, program="ponderd")
        try:
            restarted.wait_ready()
            ids = [a.request_id for a in answered]
            eventually(lambda: central(pg_dsn, "SELECT count(*) FROM spend WHERE request_id = ANY(%s)", [ids])[0][0]
                       == len(ids), what="the killed host's records after its restart")
        finally:
            restarted.stop()
        spent = central(pg_dsn, "SELECT sum(cost_micros)::bigint FROM spend WHERE tenant = 'shared'")[0][0]
        late = central(pg_dsn, "SELECT count(*) FROM spend WHERE late")[0][0]
        assert spent <= 1_000_000 or late > 0, "spend beyond the budget only from records reported late"
    finally:
        survivor.stop()
        if killed.proc.poll() is None:
            killed.proc.kill()


def _refused(c: PonderClient):
    """Ask until the budget refuses (returned), or an answer comes (returned, for `eventually`)."""
    for i in range(40):
        try:
            answer = c.ask(f"What is {i} plus 3?")
        except BudgetExhaustedError as exc:
            return exc
    return answer


def _answered(c: PonderClient):
    try:
        return c.ask("What is 2 plus 3?")
    except BudgetExhaustedError:
        return None


def test_a_policy_reloaded_on_one_host_is_put_in_force_on_the_others(tmp_path, pg_dsn):
    """`ponder admin policy reload` on host0 stores its policy as a central version; host1 puts it in force
    (NOTIFY, with the keys poll as the fallback) and keeps it in its own policy file."""
    from conftest import SMALL_POLICY

    files = []
    hosts: list[DaemonThread] = []
    try:
        for i in range(2):
            policy = tmp_path / f"host{i}" / "policy.toml"
            policy.parent.mkdir(parents=True)
            shutil.copy(SMALL_POLICY, policy)
            files.append(policy)
            hosts.append(DaemonThread(fleet_settings(tmp_path / f"host{i}" / "state", pg_dsn, f"host{i}", policy)).start())
        a, b = hosts
        assert b.daemon.policies.current().version == "test-small-1"
        new = files[0].read_text().replace('version = "test-small-1"', 'version = "test-small-fleet-2"')
        assert new != files[0].read_text()
        files[0].write_text(new)

        env = {k: v for k, v in os.environ.items() if not k.startswith("PONDER_")}
        env |= {"PONDER_ADDRESS": a.address, "PONDER_ADMIN_TOKEN": a.token("admin"), "PONDER_TOKEN": a.token("admin"),
                "PONDER_STATE_DIR": str(tmp_path / "none")}
        out = subprocess.run([PONDER, "admin", "policy", "reload"], env=env, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        assert a.daemon.policies.current().version == "test-small-fleet-2"
        eventually(lambda: b.daemon.policies.current().version == "test-small-fleet-2",
                   timeout=FLEET["keys_poll_seconds"] + 20, what="host1 putting the fleet's new policy in force")
        assert files[1].read_text() == new  # a restart or SIGHUP of host1 keeps it
        versions = central(pg_dsn, "SELECT version, host_id, text FROM policy_versions ORDER BY version")
        assert [(h, t) for _, h, t in versions] == [("host0", new)]

        # The same text again is no new version; a bad file is refused on its host and stored nowhere.
        with a.admin() as admin:
            admin.reload_policy()
            files[0].write_text(new.replace('version = "test-small-fleet-2"', ""))
            with pytest.raises(FailedPreconditionError, match="version"):
                admin.reload_policy()
        assert len(central(pg_dsn, "SELECT version FROM policy_versions")) == 1
        assert a.daemon.policies.current().version == b.daemon.policies.current().version == "test-small-fleet-2"
    finally:
        for h in hosts:
            h.stop()

