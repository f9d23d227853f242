"""A Hypothesis state machine over the request path and the ledger.

Requests are started, let run a few loop turns, cancelled at whatever await
they have reached, finished, or lost in a crash (the database thread stops
mid-queue, the process's tasks vanish, a new process recovers from the file);
the clock moves across budget windows. After every step the ledger's
invariants hold, and once everything has quiesced nothing is held and every
reservation ever taken ended in exactly one spend record.
"""

from __future__ import annotations

import asyncio
import pathlib
import shutil
import tempfile
import warnings
from datetime import timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from fakes import SMALL_POLICY, START, TENANT, FakeClassifierHolder, FakeEngine
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from ponderd.clock import ManualClock
from ponderd.engine import GenerationJob, GenerationResult
from ponderd.ledger.sqlite.budgets import SqliteBudgets
from ponderd.ledger.sqlite.ledger import Ledger
from ponderd.ledger.sqlite.store import Store
from ponderd.ledger.types import to_micros
from ponderd.planning.policy_file import PolicyHolder
from ponderd.request.pipeline import AskInput, Pipeline

BUDGET = to_micros(0.2)  # a handful of small requests at once, so refusals happen


class HeldEngine(FakeEngine):
    """Each job (told apart by its seed) runs until the machine releases it or it is cancelled."""

    def __init__(self) -> None:
        super().__init__(tokens_per_sample=3)
        self.holds: dict[int, asyncio.Event] = {}

    async def generate(self, job: GenerationJob) -> GenerationResult:
        stopped = asyncio.Event()
        cancel = job.cancel

        def cancel_and_wake() -> None:
            cancel()
            stopped.set()

        job.cancel = cancel_and_wake  # type: ignore[method-assign]
        if job.cancelled.is_set():
            stopped.set()
        hold = self.holds.setdefault(job.seed, asyncio.Event())
        waits = [asyncio.ensure_future(hold.wait()), asyncio.ensure_future(stopped.wait())]
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        for w in waits:
            w.cancel()
        return await super().generate(job)


class LedgerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="ponder-machine-")
        self.clock = ManualClock(START)
        self.ledger = Ledger(ZoneInfo("UTC"))
        self.next_seed = 1
        self.crashes = 0
        self._boot(first=True)

    # process life -----------------------------------------------------------

    def _boot(self, first: bool = False) -> None:
        self.loop = asyncio.new_event_loop()
        self.store = Store(pathlib.Path(self.dir) / "ponder.db")
        self.store.open()
        if first:
            self.store.call_sync(self.ledger.create_tenant, "acme", BUDGET, "day", self.clock.now())
            # Every reservation ever taken, kept by the database itself, so a crash cannot hide one.
            self.store.call_sync(
                lambda db: db.executescript(
                    "CREATE TABLE reserved_log (request_id TEXT PRIMARY KEY);"
                    "CREATE TRIGGER log_reservation AFTER INSERT ON reservations "
                    "BEGIN INSERT INTO reserved_log VALUES (NEW.request_id); END;"
                )
            )
        self.engine = HeldEngine()
        budgets = SqliteBudgets(self.store, self.ledger, self.clock)
        self.pipeline = Pipeline(
            PolicyHolder(SMALL_POLICY), FakeClassifierHolder(), self.engine, budgets, self.clock  # type: ignore[arg-type]
        )
        self.tasks: dict[int, asyncio.Task[Any]] = {}
        # What a restart does first: whatever is still reserved was left by the dead process.
        self.store.call_sync(self.ledger.settle_orphans, set(), self.clock.now() + timedelta(seconds=1), self.clock.now())

    def _spin(self, turns: int) -> None:
        async def spin() -> None:
            for _ in range(turns):
                await asyncio.sleep(0)

        self.loop.run_until_complete(spin())

    def _running(self) -> list[int]:
        return [seed for seed, t in self.tasks.items() if not t.done()]

    # rules ------------------------------------------------------------------

    @rule(turns=st.integers(0, 12))
    def ask(self, turns: int) -> None:
        seed = self.next_seed
        self.next_seed += 1
        self.tasks[seed] = self.loop.create_task(self.pipeline.ask(TENANT, AskInput(f"question {seed}", seed=seed)))
        self._spin(turns)

    @rule(turns=st.integers(1, 30))
    def turn(self, turns: int) -> None:
        self._spin(turns)

    @rule()
    def let_the_database_catch_up(self) -> None:
        self.loop.run_until_complete(self.store.call(lambda db: None))

    # Which requests have ended depends on the database thread's timing, so the
    # draws pick from every request started since the last boot (a rule-made,
    # deterministic list): Hypothesis must see the same choices when it replays.
    # Cancelling or releasing one that has already ended does nothing.
    @precondition(lambda self: self.tasks)
    @rule(data=st.data(), turns=st.integers(0, 6))
    def cancel(self, data: st.DataObject, turns: int) -> None:
        seed = data.draw(st.sampled_from(sorted(self.tasks)))
        self.tasks[seed].cancel()
        self._spin(turns)

    @precondition(lambda self: self.tasks)
    @rule(data=st.data(), turns=st.integers(0, 6))
    def finish(self, data: st.DataObject, turns: int) -> None:
        seed = data.draw(st.sampled_from(sorted(self.tasks)))
        self.engine.holds.setdefault(seed, asyncio.Event()).set()
        self._spin(turns)

    @rule(hours=st.integers(1, 30))
    def advance_clock(self, hours: int) -> None:
        self.clock.advance(timedelta(hours=hours))
        self.store.call_sync(self.ledger.renew_windows, self.clock.now())

    @rule()
    def crash(self) -> None:
        """SIGKILL: queued database work never runs, the running transaction ends atomically, tasks vanish."""
        self.crashes += 1
        pool = self.store._pool
        pool.shutdown(wait=True, cancel_futures=True)
        db = self.store._db
        self.store._db = None
        if db is not None:
            db.conn.close()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for task in asyncio.all_tasks(self.loop):
                task._log_destroy_pending = False  # type: ignore[attr-defined]
            self.loop.close()
        self._boot()

    # invariants -------------------------------------------------------------

    def _query(self, sql: str) -> list[dict[str, Any]]:
        return self.store.call_sync(lambda db: list(db.query(sql)))

    @invariant()
    def counters_match_rows(self) -> None:
        (t,) = self._query("SELECT * FROM tenants")
        held = sum(r["amount_micros"] for r in self._query("SELECT amount_micros FROM reservations"))
        assert t["reserved_micros"] == held
        assert t["spent_micros"] + t["reserved_micros"] <= t["budget_micros"]
        spent = self._query(f"SELECT COALESCE(SUM(cost_micros), 0) AS s FROM spend WHERE window_start = '{t['window_start']}'")
        assert t["spent_micros"] == spent[0]["s"]
        assert not self._query("SELECT request_id FROM spend WHERE cost_micros > reserved_micros")

    def teardown(self) -> None:
        try:
            for hold in list(self.engine.holds.values()):
                hold.set()
            for seed in self._running():
                self.engine.holds.setdefault(seed, asyncio.Event()).set()

            async def quiesce() -> None:
                await asyncio.gather(*self.tasks.values(), return_exceptions=True)
                assert await self.pipeline.inflight.wait_idle(10)

            self.loop.run_until_complete(quiesce())
            assert self._query("SELECT * FROM reservations") == []
            assert self.pipeline.live == set()
            # Every reservation ever taken ended in exactly one record; only crashes leave 'interrupted'.
            missing = self._query(
                "SELECT request_id FROM reserved_log WHERE request_id NOT IN (SELECT request_id FROM spend)"
            )
            assert missing == []
            if not self.crashes:
                assert not self._query("SELECT * FROM spend WHERE status = 'interrupted'")
            self.counters_match_rows()
        finally:
            self.store.close()
            self.loop.close()
            shutil.rmtree(self.dir, ignore_errors=True)


LedgerMachine.TestCase.settings = settings(
    max_examples=40, stateful_step_count=30, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
test_ledger_machine = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")(
    LedgerMachine.TestCase
)
