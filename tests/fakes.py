"""Fakes at the engine and classifier seams, and a Pipeline on a real SQLite file, for fast fault tests.

The real request path (Pipeline, SqliteBudgets, Ledger, Store) runs unchanged;
only the model and the classifier are replaced, so a test can stop, fail or
hold the request at any step and check what the ledger says afterwards.
"""

from __future__ import annotations

import asyncio
import pathlib
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Awaitable, Callable, Sequence
from zoneinfo import ZoneInfo

from ponderd.clock import ManualClock
from ponderd.engine import EngineLimits, GenerationJob, GenerationResult, PreparedPrompt, SampleResult
from ponderd.errors import Unavailable
from ponderd.ledger.keys import Principal
from ponderd.ledger.sqlite.budgets import SqliteBudgets
from ponderd.ledger.sqlite.ledger import Ledger
from ponderd.ledger.sqlite.store import Store
from ponderd.ledger.types import to_micros
from ponderd.planning.policy_file import PolicyHolder
from ponderd.request.pipeline import Pipeline
from ponderd.risk.score import RiskScore

REPO = pathlib.Path(__file__).resolve().parent.parent
SMALL_POLICY = REPO / "tests" / "policies" / "small.toml"
START = datetime(2026, 3, 2, 10, 0, tzinfo=timezone.utc)
TENANT = Principal(key_id="k1", tenant="acme", scope="tenant")


class FakeClassifier:
    version = "fake-1"

    def score(self, text: str, explain: bool = False) -> RiskScore:
        severity = "high" if "prod" in text else "low"
        return RiskScore(severity, False, {"low": 0.0, "medium": 0.0, "high": 0.0} | {severity: 1.0}, 0.1, self.version)


class FakeClassifierHolder:
    def __init__(self) -> None:
        self.model = FakeClassifier()

    def current(self) -> FakeClassifier:
        return self.model


@dataclass
class FakeEngine:
    """Generates `tokens_per_sample` answer tokens per sample, one per loop turn, and honours cancel.

    `hold` (an asyncio.Event) keeps every job from the `hold_from`-th on (0: every job; 1: a
    request's refinement rounds, not its samples) running until it is set; `entered` is set
    when a held job starts; `fail_with` makes generate raise;
    `result_error`/`fatal` make the result report a failure after running.
    """

    tokens_per_sample: int = 4
    hold: asyncio.Event | None = None
    hold_from: int = 0
    jobs: int = 0
    fail_with: BaseException | None = None
    result_error: str = ""
    fatal: bool = False
    entered: asyncio.Event = field(default_factory=asyncio.Event)
    prepare_gate: threading.Event | None = None
    preparing: threading.Event = field(default_factory=threading.Event)
    prepared: threading.Event = field(default_factory=threading.Event)
    limits: EngineLimits = field(default_factory=lambda: EngineLimits(4096, 4096, 16))
    model_name: str = "fake"

    def prepare(self, system: str, prompt: str, history: Sequence[tuple[str, str]] = ()) -> PreparedPrompt:
        self.preparing.set()
        if self.prepare_gate is not None:
            self.prepare_gate.wait(10)
        self.prepared.set()
        return PreparedPrompt(tuple(range(len(prompt.split()) + 8)), (), (), ())

    async def generate(self, job: GenerationJob) -> GenerationResult:
        if self.fail_with is not None:
            raise self.fail_with
        held = self.hold is not None and self.jobs >= self.hold_from
        self.jobs += 1
        if held or self.hold is None:
            self.entered.set()
        samples = [SampleResult(i) for i in range(job.samples)]
        for _ in range(self.tokens_per_sample):
            if job.cancelled.is_set():
                break
            for s in samples:
                s.answer_tokens += 1
                s.text += "4"
            if held and self.hold is not None:
                hold = asyncio.ensure_future(self.hold.wait())
                cancel = asyncio.ensure_future(asyncio.to_thread(job.cancelled.wait, 10))
                await asyncio.wait([hold, cancel], return_when=asyncio.FIRST_COMPLETED)
                hold.cancel()
            else:
                await asyncio.sleep(0)
        for s in samples:
            s.answer = "4"
            s.finish_reason = "cancelled" if job.cancelled.is_set() else ("error" if self.result_error else "stop")
        return GenerationResult(len(job.prompt.tokens), 0, samples, self.result_error, self.fatal)

    def failure(self) -> str:
        return ""

    def last_progress(self) -> float:
        return time.monotonic()

    def queue_depth(self) -> int:
        return 0


class GatedBudgets:
    """The real SqliteBudgets, with a hook before each call: tests hold or fail a chosen step."""

    def __init__(self, inner: SqliteBudgets) -> None:
        self.inner = inner
        self.hooks: dict[str, Callable[[], Awaitable[None]]] = {}
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if name not in ("reserve", "settle", "refuse", "balance"):
            return attr

        async def call(*args: Any, **kwargs: Any) -> Any:
            self.calls.append(name)
            hook = self.hooks.get(name)
            if hook is not None:
                await hook()
            return await attr(*args, **kwargs)

        return call


@dataclass
class Harness:
    store: Store
    ledger: Ledger
    budgets: GatedBudgets
    engine: FakeEngine
    pipeline: Pipeline
    clock: ManualClock

    def query(self, sql: str, args: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        return self.store.call_sync(lambda db: list(db.query(sql, args)))

    def tenant(self) -> dict[str, Any]:
        return self.query("SELECT * FROM tenants WHERE name = 'acme'")[0]

    def records(self) -> list[dict[str, Any]]:
        return self.query("SELECT * FROM spend ORDER BY at")

    def reservations(self) -> list[dict[str, Any]]:
        return self.query("SELECT * FROM reservations")

    def block_db(self) -> threading.Event:
        """Hold the database's owner thread until the returned event is set (calls queue up behind it)."""
        release = threading.Event()
        started = threading.Event()

        def wait(db: Any) -> None:  # noqa: ARG001
            started.set()
            release.wait(30)

        self.store._pool.submit(self.store._run, wait)
        started.wait(10)
        return release

    def assert_ledger_consistent(self) -> None:
        """The tenant's counters match the rows: reserved = open reservations, spent = charged records."""
        t = self.tenant()
        held = sum(r["amount_micros"] for r in self.reservations())
        charged = sum(r["cost_micros"] for r in self.records() if r["window_start"] == t["window_start"])
        assert t["reserved_micros"] == held
        assert t["spent_micros"] == charged
        assert t["spent_micros"] + t["reserved_micros"] <= t["budget_micros"]
        for r in self.records():
            assert r["cost_micros"] <= r["reserved_micros"]

    def close(self) -> None:
        self.store.close()


def harness(tmp_path: pathlib.Path, budget: float = 1000.0, policy: pathlib.Path = SMALL_POLICY, **engine: Any) -> Harness:
    clock = ManualClock(START)
    store = Store(tmp_path / "ponder.db")
    store.open()
    ledger = Ledger(ZoneInfo("UTC"))
    store.call_sync(ledger.create_tenant, "acme", to_micros(budget), "day", clock.now())
    budgets = GatedBudgets(SqliteBudgets(store, ledger, clock))
    fake = FakeEngine(**engine)
    pipeline = Pipeline(PolicyHolder(policy), FakeClassifierHolder(), fake, budgets, clock)  # type: ignore[arg-type]
    return Harness(store, ledger, budgets, fake, pipeline, clock)


async def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait for an observable state, turning the loop; fail loudly if it never comes."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("the expected state was not reached in time")
        await asyncio.sleep(0.005)


__all__ = ["FakeEngine", "GatedBudgets", "Harness", "TENANT", "Unavailable", "harness", "wait_for"]
