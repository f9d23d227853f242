"""Faults through the real daemon: cancel storms, overload, a full disk, bad reloads, a dead engine.

Each test ends by reading the SQLite file: nothing reserved once requests have
ended, every request that reserved has one record saying what happened, and
the tenant's counters equal the sum of its records.
"""

from __future__ import annotations

import concurrent.futures
import pathlib
import random
import sqlite3
import subprocess
import threading
import time
from typing import Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from conftest import DaemonThread, make_settings
from ponder.client import PonderError
from ponder.v1 import admin_pb2, admin_pb2_grpc, ponder_pb2, ponder_pb2_grpc
from ponderd.errors import ArtifactError

pytestmark = pytest.mark.model


def rows(d: DaemonThread, sql: str, args: tuple = ()) -> list[dict]:
    with sqlite3.connect(d.settings.database) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute(sql, args)]


def wait_until(predicate, timeout: float = 30.0, what: object = "state") -> None:
    """Poll an observable state (the database, health), failing loudly if it never comes."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what() if callable(what) else what} not reached in {timeout}s")
        time.sleep(0.05)


def assert_ledger_consistent(d: DaemonThread) -> None:
    for t in rows(d, "SELECT * FROM tenants"):
        held = rows(d, "SELECT COALESCE(SUM(amount_micros), 0) AS s FROM reservations WHERE tenant = ?", (t["name"],))
        spent = rows(
            d, "SELECT COALESCE(SUM(cost_micros), 0) AS s FROM spend WHERE tenant = ? AND window_start = ?",
            (t["name"], t["window_start"]),
        )
        assert t["reserved_micros"] == held[0]["s"]
        assert t["spent_micros"] == spent[0]["s"]
        assert t["spent_micros"] + t["reserved_micros"] <= t["budget_micros"]
    assert rows(d, "SELECT * FROM spend WHERE cost_micros > reserved_micros") == []


def metadata(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def test_a_cancel_storm_leaves_nothing_held_and_nothing_interrupted(daemon):
    """Hundreds of asks with deadlines from 10 ms to 1 s while admin reports keep the database busy."""
    rng = random.Random(42)
    stop_reports = False

    def reports() -> int:
        n = 0
        with grpc.insecure_channel(daemon.address) as ch:
            stub = admin_pb2_grpc.AdminServiceStub(ch)
            while not stop_reports:
                stub.SpendReport(admin_pb2.SpendReportRequest(records=True, limit=500), metadata=metadata(daemon.token("admin")))
                n += 1
        return n

    codes: dict[str, int] = {}
    with concurrent.futures.ThreadPoolExecutor(2) as pool, grpc.insecure_channel(daemon.address) as ch:
        report_jobs = [pool.submit(reports) for _ in range(2)]
        stub = ponder_pb2_grpc.PonderServiceStub(ch)
        for wave in range(10):
            calls = []
            for i in range(24):
                request = ponder_pb2.AskRequest(
                    prompt=f"Tell me about rivers, number {wave * 24 + i}.",
                    hints=ponder_pb2.Hints(samples=rng.choice([1, 2, 4]), thinking_tokens=rng.choice([0, 16, 32])),
                )
                calls.append(stub.Ask.future(request, metadata=metadata(daemon.token()), timeout=rng.uniform(0.01, 1.0)))
            for call in calls:
                try:
                    call.result()
                    code = "OK"
                except grpc.RpcError as err:
                    code = err.code().name
                codes[code] = codes.get(code, 0) + 1
        stop_reports = True
        assert sum(j.result() for j in report_jobs) > 0
    assert codes.get("DEADLINE_EXCEEDED", 0) > 50, codes
    assert set(codes) <= {"OK", "DEADLINE_EXCEEDED", "UNAVAILABLE"}, codes
    # Within a few seconds of the last deadline, every request has ended and settled.
    pipeline = daemon.daemon.pipeline
    wait_until(
        lambda: not rows(daemon, "SELECT * FROM reservations") and not pipeline.live, 15,
        lambda: f"no reservations (inflight {len(pipeline.inflight)}, live {len(pipeline.live)}, "
        f"engine queue {daemon.daemon.engine.queue_depth()}, reservations {len(rows(daemon, 'SELECT * FROM reservations'))})",
    )
    assert rows(daemon, "SELECT * FROM spend WHERE status = 'interrupted'") == []
    statuses = {r["status"] for r in rows(daemon, "SELECT DISTINCT status FROM spend")}
    assert statuses <= {"ok", "deadline", "refused"} and "deadline" in statuses
    # A request refused by a full queue, or stopped before it started, costs nothing.
    assert rows(daemon, "SELECT * FROM spend WHERE status = 'refused' AND cost_micros != 0") == []
    assert_ledger_consistent(daemon)


def test_overload_refuses_with_unavailable_and_charges_nothing(tmp_path):
    d = DaemonThread(make_settings(tmp_path / "state", max_queue=1)).start()
    try:
        with grpc.insecure_channel(d.address) as ch:
            stub = ponder_pb2_grpc.PonderServiceStub(ch)
            request = ponder_pb2.AskRequest(prompt="Name a river.", hints=ponder_pb2.Hints(samples=8, thinking_tokens=32))
            calls = [stub.Ask.future(request, metadata=metadata(d.token()), timeout=120) for _ in range(10)]
            codes = []
            for call in calls:
                try:
                    call.result()
                    codes.append("OK")
                except grpc.RpcError as err:
                    codes.append(err.code().name)
                    if err.code() == grpc.StatusCode.UNAVAILABLE:
                        assert "retry" in err.details() and "nothing was charged" in err.details()
        assert "UNAVAILABLE" in codes and "OK" in codes
        refused = rows(d, "SELECT * FROM spend WHERE status = 'refused'")
        assert len(refused) == codes.count("UNAVAILABLE")
        assert all(r["cost_micros"] == 0 and r["prompt_tokens"] == 0 for r in refused)
        assert rows(d, "SELECT * FROM reservations") == []
        assert_ledger_consistent(d)
    finally:
        d.stop()


class SmallDisk:
    """A 16 MiB tmpfs for the state directory, which the test can fill to the last byte and free again."""

    def __init__(self, root: pathlib.Path) -> None:
        self.root = root
        self.ballast = root / "ballast"

    def fill(self, d: DaemonThread) -> None:
        # Empty the WAL first, so the next transaction must grow a file on a full disk.
        conn = sqlite3.connect(d.settings.database)
        try:
            assert conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0
        finally:
            conn.close()
        with self.ballast.open("wb", buffering=0) as f:
            for chunk in (1 << 20, 4096, 1):
                try:
                    while True:
                        f.write(b"\0" * chunk)
                except OSError:
                    pass

    def free(self) -> None:
        self.ballast.unlink()


def block_database(d: DaemonThread) -> threading.Event:
    """Hold the daemon's database thread until the returned event is set."""
    started, release = threading.Event(), threading.Event()

    def hold(db) -> None:
        started.set()
        release.wait(60)

    d.daemon.store._pool.submit(d.daemon.store._run, hold)
    assert started.wait(30)
    return release


@pytest.fixture
def small_disk(tmp_path: pathlib.Path) -> Iterator[SmallDisk]:
    root = tmp_path / "disk"
    root.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(root)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"a full disk needs a small tmpfs, and mounting one needs root: {mounted.stderr.decode().strip()}")
    yield SmallDisk(root)
    subprocess.run(["umount", "-l", str(root)], check=True)


@pytest.fixture
def daemon_on_small_disk(small_disk: SmallDisk) -> Iterator[DaemonThread]:
    d = DaemonThread(make_settings(small_disk.root / "state")).start()
    yield d
    d.stop()


def health(d: DaemonThread, service: str) -> int:
    with grpc.insecure_channel(d.address) as ch:
        return health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=service)).status


def test_a_full_disk_is_unavailable_reported_and_recovered_from(daemon_on_small_disk, small_disk):
    daemon = daemon_on_small_disk
    with daemon.client() as c:
        c.ask("Name a colour.", seed=1)
        small_disk.fill(daemon)
        with pytest.raises(PonderError) as err:
            c.ask("Name a fruit.", seed=2)
        assert err.value.code == grpc.StatusCode.UNAVAILABLE
        assert "disk is full" in err.value.message and "nothing was charged" in err.value.message
        # Health says so: the database and asks are NOT_SERVING; admin reads still work.
        wait_until(lambda: health(daemon, "ponder.database") == health_pb2.HealthCheckResponse.NOT_SERVING)
        assert health(daemon, "") == health_pb2.HealthCheckResponse.NOT_SERVING
        assert health(daemon, "ponder.v1.PonderService") == health_pb2.HealthCheckResponse.NOT_SERVING
        assert rows(daemon, "SELECT * FROM reservations") == []
        small_disk.free()
        wait_until(lambda: health(daemon, "") == health_pb2.HealthCheckResponse.SERVING, what="SERVING again")
        r = c.ask("Name a fruit.", seed=2)
    assert r.cost > 0
    assert [x["status"] for x in rows(daemon, "SELECT status FROM spend ORDER BY at")] == ["ok", "ok"]
    assert_ledger_consistent(daemon)


def test_a_full_disk_while_generating_keeps_the_charge_and_writes_it_when_space_returns(daemon_on_small_disk, small_disk):
    daemon = daemon_on_small_disk
    request = ponder_pb2.AskRequest(prompt="Write a story about a dragon.", hints=ponder_pb2.Hints(samples=2, thinking_tokens=32))
    with grpc.insecure_channel(daemon.address) as ch:
        call = ponder_pb2_grpc.PonderServiceStub(ch).Ask.future(request, metadata=metadata(daemon.token()), timeout=120)
        # Once the request holds its reservation, hold the database thread (so the
        # settlement cannot land first, however fast the model is), fill the disk, let go.
        wait_until(lambda: rows(daemon, "SELECT * FROM reservations"), what="a reservation")
        release = block_database(daemon)
        small_disk.fill(daemon)
        release.set()
        response = call.result()
    assert response.text and response.cost > 0
    (held,) = rows(daemon, "SELECT * FROM reservations")
    assert held["request_id"] == response.request_id
    assert rows(daemon, "SELECT * FROM spend") == []
    wait_until(lambda: health(daemon, "ponder.database") == health_pb2.HealthCheckResponse.NOT_SERVING)
    small_disk.free()
    wait_until(lambda: rows(daemon, "SELECT * FROM spend"), what="the settlement written")
    (record,) = rows(daemon, "SELECT * FROM spend")
    assert (record["request_id"], record["status"]) == (response.request_id, "ok")
    assert record["cost_micros"] == round(response.cost * 1e6)
    assert rows(daemon, "SELECT * FROM reservations") == []
    assert_ledger_consistent(daemon)


def test_a_reload_with_a_bad_risk_model_keeps_the_old_policy_too(tmp_path):
    import shutil

    from ponderd.risk.artifact import SHIPPED_DIR

    model_dir = tmp_path / "model"
    shutil.copytree(SHIPPED_DIR, model_dir)
    policy = tmp_path / "policy.toml"
    policy.write_text(make_settings(tmp_path / "x").policy_file.read_text())
    d = DaemonThread(make_settings(tmp_path / "state", policy=policy, risk={"model_dir": str(model_dir)})).start()
    try:
        before = d.daemon.policies.current().version
        policy.write_text(policy.read_text().replace(f'version = "{before}"', 'version = "next"'))
        (model_dir / "risk.skops").write_bytes(b"tampered")
        with pytest.raises(ArtifactError):
            d.daemon.reload()
        assert d.daemon.policies.current().version == before
        with d.admin() as a, pytest.raises(PonderError) as err:
            a.reload_policy()
        assert err.value.code == grpc.StatusCode.FAILED_PRECONDITION
        assert d.daemon.policies.current().version == before
    finally:
        d.stop()


def test_a_dead_engine_fails_health_and_stops_the_daemon_with_exit_code_1(tmp_path):
    d = DaemonThread(make_settings(tmp_path / "state")).start()
    engine = d.daemon.engine.get("")  # the primary model's engine itself, not the served-models view

    def broken_step() -> None:
        raise RuntimeError("injected fault in the step loop")

    engine._step = broken_step  # the next generation step kills the owner thread
    request = ponder_pb2.AskRequest(prompt="Name a river.", hints=ponder_pb2.Hints(samples=2, thinking_tokens=16))
    with grpc.insecure_channel(d.address) as ch:
        with pytest.raises(grpc.RpcError) as err:
            ponder_pb2_grpc.PonderServiceStub(ch).Ask(request, metadata=metadata(d.token()), timeout=60)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "engine stopped" in err.value.details()
    d._thread.join(60)
    assert not d._thread.is_alive(), "the daemon did not stop after its engine died"
    assert d.server.exit_code == 1
    (record,) = rows(d, "SELECT * FROM spend")
    assert record["status"] == "failed"
    assert rows(d, "SELECT * FROM reservations") == []
