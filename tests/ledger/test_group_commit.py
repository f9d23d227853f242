"""Group commit in the local ledger's Store: one COMMIT per batch, each call in its own savepoint.

Batches are made deterministic with a gate: a call that holds the owner
thread until the test releases it, so the calls queued meanwhile all go into
the next batch.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import pytest
from fakes import wait_for

from ponderd.errors import BudgetExhausted, StorageUnavailable
from ponderd.ledger.sqlite.ledger import Ledger
from ponderd.ledger.sqlite.store import Store
from ponderd.ledger.types import SpendRow, iso

NOW = datetime(2026, 3, 4, 15, 30, tzinfo=timezone.utc)
LEDGER = Ledger(ZoneInfo("UTC"))


@dataclass
class Cand:
    worst_case_micros: int

    def to_json(self):
        return {"worst_case_micros": self.worst_case_micros}


def row(request_id: str, cost: int = 100) -> SpendRow:
    return SpendRow(
        request_id=request_id, tenant="acme", at=iso(NOW), severity="low", needs_reasoning=False,
        model_severity="low", model_needs_reasoning=False, risk_model="m", policy_version="p", level="direct",
        thinking_cap=0, answer_cap=16, samples_planned=1, prompt_tokens=10, thinking_tokens=0, answer_tokens=5,
        forced_tokens=0, samples_run=1, samples_stopped=0, cost_micros=cost, latency_ms=5, status="ok",
    )


class Gate:
    """A call that holds the owner thread (inside its batch) until released."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def __call__(self, db) -> None:
        self.entered.set()
        assert self.release.wait(30), "the test never released the gate"


def disk_full() -> sqlite3.OperationalError:
    exc = sqlite3.OperationalError("database or disk is full")
    exc.sqlite_errorcode = 13  # SQLITE_FULL, as sqlite3 sets it
    return exc


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "ponder.db")
    s.open()
    s.call_sync(LEDGER.create_tenant, "acme", 1_000_000, "day", NOW)
    yield s
    s.close()


def commits_of(store: Store) -> list[str]:
    """Record every COMMIT the store's connection runs from now on."""
    seen: list[str] = []

    def install(db) -> None:
        db.conn.set_trace_callback(lambda sql: seen.append(sql) if sql.strip().upper().startswith("COMMIT") else None)

    store.call_sync(install)
    seen.clear()  # the COMMIT of the batch that installed the callback
    return seen


def reserve(request_id: str, micros: int = 1_000):
    return (LEDGER.reserve_first_fitting, "acme", request_id, [Cand(micros)], NOW, {})


async def held(store: Store, calls: list[tuple], gate: Gate | None = None) -> list:
    """Queue `calls` behind a gate, release it: they run as one batch. Returns each call's outcome."""
    gate = gate or Gate()
    first = asyncio.ensure_future(store.call(gate))
    await wait_for(gate.entered.is_set)
    tasks = [asyncio.ensure_future(store.call(*c)) for c in calls]
    await wait_for(lambda: store.pending == len(calls))
    gate.release.set()
    await first
    return await asyncio.gather(*tasks, return_exceptions=True)


def reservations(store: Store) -> dict[str, int]:
    return {r["request_id"]: r["amount_micros"] for r in store.call_sync(LEDGER.open_reservations)}


def test_a_batch_of_calls_shares_one_commit(tmp_path, store):
    commits = commits_of(store)
    outcomes = asyncio.run(held(store, [reserve(f"r{i}") for i in range(40)]))
    assert outcomes == [0] * 40
    # The gate's batch and the 40 calls' batch: two COMMITs for 41 calls.
    assert len(commits) == 2
    assert len(reservations(store)) == 40
    assert store.call_sync(LEDGER.balance, "acme", NOW).reserved_micros == 40_000

    # The baseline commits once per call.
    base = Store(tmp_path / "baseline.db", group_commit=False)
    base.open()
    base.call_sync(LEDGER.create_tenant, "acme", 1_000_000, "day", NOW)
    base_commits = commits_of(base)

    async def forty():
        return await asyncio.gather(*(base.call(*reserve(f"r{i}")) for i in range(40)))

    assert asyncio.run(forty()) == [0] * 40
    base.close()
    assert len(base_commits) == 40


def test_a_failing_call_in_a_batch_rolls_back_only_itself(store):
    def writes_then_fails(db) -> None:
        LEDGER.reserve_first_fitting(db, "acme", "half-done", [Cand(5_000)], NOW, {})
        raise ValueError("changed its mind")

    commits = commits_of(store)
    outcomes = asyncio.run(
        held(store, [reserve("a"), reserve("too-big", 2_000_000), reserve("a"), (writes_then_fails,), reserve("b")])
    )
    assert len(commits) == 2  # the gate's batch and this one
    assert outcomes[0] == 0 and outcomes[4] == 0
    assert isinstance(outcomes[1], BudgetExhausted)
    assert isinstance(outcomes[2], sqlite3.IntegrityError)  # "a" twice: the second is refused on its own
    assert isinstance(outcomes[3], ValueError) and str(outcomes[3]) == "changed its mind"
    assert reservations(store) == {"a": 1_000, "b": 1_000}
    assert store.call_sync(LEDGER.balance, "acme", NOW).reserved_micros == 2_000
    assert store.fallbacks == 0


def test_a_call_cancelled_while_it_waits_is_dropped(store):
    ran: list[str] = []

    def noted(db) -> None:
        ran.append("noted")

    async def main():
        gate = Gate()
        first = asyncio.ensure_future(store.call(gate))
        await wait_for(gate.entered.is_set)
        waiting = asyncio.ensure_future(store.call(*reserve("cancelled")))
        other = asyncio.ensure_future(store.call(noted))
        await wait_for(lambda: store.pending == 2)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        gate.release.set()
        await asyncio.gather(first, other)

    asyncio.run(main())
    assert ran == ["noted"]
    assert reservations(store) == {}
    assert store.call_sync(LEDGER.balance, "acme", NOW).reserved_micros == 0


def test_a_settle_cancelled_inside_its_batch_is_still_written(store):
    store.call_sync(*reserve("r1", 2_000))

    async def main():
        gate0, gate1 = Gate(), Gate()
        first = asyncio.ensure_future(store.call(gate0))
        await wait_for(gate0.entered.is_set)
        second = asyncio.ensure_future(store.call(gate1))
        settle = asyncio.ensure_future(store.call(LEDGER.settle, row("r1", 700), None))
        await wait_for(lambda: store.pending == 2)
        gate0.release.set()
        # gate1 runs first in the next batch: the settle is taken into that batch already.
        await wait_for(gate1.entered.is_set)
        settle.cancel()
        gate1.release.set()
        await asyncio.gather(first, second)
        with pytest.raises(asyncio.CancelledError):
            await settle
        # The batch decided it: wait for its COMMIT to be visible.
        await wait_for(lambda: store.pending == 0)
        await store.call(lambda db: None)

    asyncio.run(main())
    assert reservations(store) == {}
    spent = store.call_sync(lambda db: db.execute("SELECT cost_micros, status FROM spend WHERE request_id = 'r1'").fetchall())
    assert spent == [(700, "ok")]
    b = store.call_sync(LEDGER.balance, "acme", NOW)
    assert (b.spent_micros, b.reserved_micros) == (700, 0)


def test_a_fault_at_commit_reruns_the_calls_one_by_one(store):
    """The batch's COMMIT fails (disk I/O error); each call then runs alone and gets its own true result."""
    real_commit = store._commit
    commits = {"n": 0}

    def failing_commit(conn) -> None:
        commits["n"] += 1
        if commits["n"] == 2:  # the batch after the gate's
            exc = sqlite3.OperationalError("disk I/O error")
            exc.sqlite_errorcode = 10  # SQLITE_IOERR
            raise exc
        real_commit(conn)

    store._commit = failing_commit  # type: ignore[method-assign]
    attempts = {"n": 0}

    def flaky(db) -> str:
        # Works inside the batch, but the disk is full when it runs again alone.
        attempts["n"] += 1
        if attempts["n"] == 2:
            raise disk_full()
        LEDGER.reserve_first_fitting(db, "acme", "flaky", [Cand(3_000)], NOW, {})
        return "reserved"

    outcomes = asyncio.run(held(store, [reserve("a"), reserve("too-big", 2_000_000), (flaky,), reserve("b")]))
    assert outcomes[0] == 0 and outcomes[3] == 0
    assert isinstance(outcomes[1], BudgetExhausted)  # it changed nothing, so it is not run again
    assert isinstance(outcomes[2], StorageUnavailable) and "disk is full" in outcomes[2].message
    assert attempts["n"] == 2
    assert store.fallbacks == 1
    # Nothing of the failed batch survived except what the one-by-one reruns wrote.
    assert reservations(store) == {"a": 1_000, "b": 1_000}
    assert store.call_sync(LEDGER.balance, "acme", NOW).reserved_micros == 2_000
    assert store.writable  # "b" wrote after the fault


def test_a_storage_fault_inside_a_batch_fails_only_that_call(store):
    def full(db) -> None:
        raise disk_full()

    outcomes = asyncio.run(held(store, [reserve("a"), (full,)]))
    assert outcomes[0] == 0
    assert isinstance(outcomes[1], StorageUnavailable)
    assert not store.writable  # the fault came last in its batch
    assert reservations(store) == {"a": 1_000}
    assert asyncio.run(store.probe())
    assert store.writable


WRITER = textwrap.dedent(
    """
    import asyncio, pathlib, sys
    from datetime import datetime, timezone
    from zoneinfo import ZoneInfo
    from ponderd.ledger.sqlite.ledger import Ledger
    from ponderd.ledger.sqlite.store import Store
    from ponderd.ledger.types import SpendRow, iso

    class Cand:
        worst_case_micros = 1_000
        def to_json(self):
            return {}

    def row(request_id):
        return SpendRow(
            request_id=request_id, tenant="acme", at=iso(datetime.now(timezone.utc)), severity="low",
            needs_reasoning=False, model_severity="low", model_needs_reasoning=False, risk_model="m",
            policy_version="p", level="direct", thinking_cap=0, answer_cap=16, samples_planned=1, prompt_tokens=10,
            thinking_tokens=0, answer_tokens=5, forced_tokens=0, samples_run=1, samples_stopped=0, cost_micros=400,
            latency_ms=5, status="ok",
        )

    async def main():
        store = Store(pathlib.Path(sys.argv[1]))
        store.open()
        ledger = Ledger(ZoneInfo("UTC"))
        await store.call(ledger.create_tenant, "acme", 10**12, "month", datetime.now(timezone.utc))
        print("ready", flush=True)

        async def worker(w):
            for i in range(10**6):
                rid = f"w{w}-{i}"
                await store.call(ledger.reserve_first_fitting, "acme", rid, [Cand()], datetime.now(timezone.utc), {})
                print("reserved", rid, flush=True)
                await store.call(ledger.settle, row(rid), None)
                print("settled", rid, flush=True)

        await asyncio.gather(*(worker(w) for w in range(32)))

    asyncio.run(main())
    """
)


def test_acknowledged_records_survive_a_sigkill_of_the_writer(tmp_path):
    path = tmp_path / "ponder.db"
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    proc = subprocess.Popen([sys.executable, str(script), str(path)], stdout=subprocess.PIPE, text=True,
                            env=os.environ | {"PYTHONUNBUFFERED": "1"})
    reserved: set[str] = set()
    settled: set[str] = set()
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        # Kill it mid-stream, with batches in flight.
        while len(settled) < 600:
            line = proc.stdout.readline()
            assert line, "the writer stopped by itself"
            what, rid = line.split()
            (reserved if what == "reserved" else settled).add(rid)
        proc.send_signal(signal.SIGKILL)
        # Acknowledgements already written to the pipe before the kill count too.
        for line in proc.stdout:
            what, _, rid = line.strip().partition(" ")
            if rid:
                (reserved if what == "reserved" else settled).add(rid)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(30)
    assert proc.returncode == -signal.SIGKILL

    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        spend = {r[0]: r[1] for r in conn.execute("SELECT request_id, cost_micros FROM spend")}
        held_now = {r[0] for r in conn.execute("SELECT request_id FROM reservations")}
        tenant = conn.execute("SELECT spent_micros, reserved_micros FROM tenants WHERE name = 'acme'").fetchone()
    # Every acknowledged settlement is on disk; every acknowledged reservation is held or settled.
    assert settled <= set(spend)
    assert all(spend[r] == 400 for r in settled)
    assert reserved <= set(spend) | held_now
    assert not (set(spend) & held_now)
    # The totals match the rows: nothing half-applied.
    assert tenant == (400 * len(spend), 1_000 * len(held_now))
