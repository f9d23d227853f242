"""Fault injection on the request path: cancel, fail or stall each step, then read the ledger.

The Pipeline, budgets, ledger and SQLite file are the real ones; the engine
and classifier are fakes (tests/fakes.py) so each step can be held exactly.
After every scenario: nothing is reserved, every request that reserved has
exactly one record with the status that says what happened, and the tenant's
counters equal the sum of its rows.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
import threading

import pytest
from fakes import SMALL_POLICY, TENANT, FakeClassifier, harness

from ponderd.errors import BudgetExhausted, Cancelled, EngineFailure, StorageUnavailable, Unavailable
from ponderd.request.inflight import DRAINED
from ponderd.request.pipeline import AskInput

QUESTION = AskInput("what is 2 + 2?")


def run(coro):
    return asyncio.run(coro)


async def hold_db_during(h, step: str) -> asyncio.Event:
    """When the request reaches `step`, block the database thread first, so its call queues behind the block."""
    entered = asyncio.Event()

    async def hook() -> None:
        h.release = await asyncio.to_thread(h.block_db)
        entered.set()

    h.budgets.hooks[step] = hook
    return entered


@pytest.mark.parametrize(
    "step, statuses",
    [
        # Cancelled before it reserved: nothing held, nothing to record.
        ("balance", []),
        # Cancelled while its reservation was queued: the reservation commits, the request
        # sees it and settles it at once for nothing run (this orphaned it before).
        ("reserve", [("cancelled", 0)]),
        # Cancelled while its settlement was queued: the settlement still lands (it was dropped before).
        ("settle", [("ok", None)]),
    ],
)
def test_cancel_while_a_database_call_is_queued(tmp_path, step, statuses):
    h = harness(tmp_path)

    async def main():
        entered = await hold_db_during(h, step)
        task = asyncio.ensure_future(h.pipeline.ask(TENANT, QUESTION))
        await entered.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # The caller is gone, the request is not: it is still running, held by the database.
        assert len(h.pipeline.inflight) == 1
        h.release.set()
        assert await h.pipeline.inflight.wait_idle(10)

    run(main())
    got = [(r["status"], r["cost_micros"]) for r in h.records()]
    assert [s for s, _ in got] == [s for s, _ in statuses]
    for (_, cost), (_, want) in zip(got, statuses):
        assert cost == want if want is not None else cost > 0
    assert h.reservations() == []
    assert h.pipeline.live == set()
    h.assert_ledger_consistent()
    h.close()


def test_cancel_while_the_prompt_is_tokenised_waits_for_the_tokeniser(tmp_path):
    gate = threading.Event()
    h = harness(tmp_path, prepare_gate=gate)

    async def main():
        task = asyncio.ensure_future(h.pipeline.ask(TENANT, QUESTION))
        await asyncio.to_thread(h.engine.preparing.wait, 10)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # Shutdown waits for this: the tokeniser must not outlive the model.
        assert len(h.pipeline.inflight) == 1
        assert not await h.pipeline.inflight.wait_idle(0.05)
        gate.set()
        assert await h.pipeline.inflight.wait_idle(10)
        assert h.engine.prepared.is_set()

    run(main())
    assert h.records() == [] and h.reservations() == []
    h.assert_ledger_consistent()
    h.close()


class SlowEmbeddingClassifier:
    """A classifier with the embedding view (it has an embedder), held inside score() until released."""

    version = "fake-embedding"
    embedder = object()

    def __init__(self) -> None:
        self.scoring, self.release = threading.Event(), threading.Event()

    def score(self, text, explain=False):
        self.scoring.set()
        self.release.wait(10)
        return FakeClassifier().score(text, explain)


def test_cancel_while_a_model_with_the_embedding_view_scores_waits_and_reserves_nothing(tmp_path):
    h = harness(tmp_path)
    slow = SlowEmbeddingClassifier()
    h.pipeline.classifier.model = slow

    async def main():
        task = asyncio.ensure_future(h.pipeline.ask(TENANT, QUESTION))
        # Scored in a worker thread: the event loop still turns while it runs.
        await asyncio.to_thread(slow.scoring.wait, 10)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert len(h.pipeline.inflight) == 1
        assert not await h.pipeline.inflight.wait_idle(0.05)
        slow.release.set()
        assert await h.pipeline.inflight.wait_idle(10)

    run(main())
    # Stopped before it reserved: no reservation, no record, nothing charged.
    assert h.records() == [] and h.reservations() == [] and h.pipeline.live == set()
    h.assert_ledger_consistent()
    h.close()


class AwaitedEmbeddingClassifier(SlowEmbeddingClassifier):
    """The same, scored by awaiting (as the engine's embedder is): the await is where the stop lands."""

    async def score_async(self, text, explain=False):
        self.scoring.set()
        try:
            await asyncio.Event().wait()  # until cancelled: the embedding never comes
        except asyncio.CancelledError:
            self.withdrawn = True
            raise


def test_cancel_while_an_awaited_embedding_waits_withdraws_it_and_reserves_nothing(tmp_path):
    h = harness(tmp_path)
    slow = AwaitedEmbeddingClassifier()
    h.pipeline.classifier.model = slow

    async def main():
        task = asyncio.ensure_future(h.pipeline.ask(TENANT, QUESTION))
        await asyncio.to_thread(slow.scoring.wait, 10)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # The stop cancels the scoring: the request ends at once, not when an embedding would have come.
        assert await h.pipeline.inflight.wait_idle(10)

    run(main())
    assert getattr(slow, "withdrawn", False)
    assert h.records() == [] and h.reservations() == [] and h.pipeline.live == set()
    h.assert_ledger_consistent()
    h.close()


@pytest.mark.parametrize("timeout, status", [(None, "cancelled"), (0.0, "deadline")])
def test_cancel_while_generating_charges_what_ran(tmp_path, timeout, status):
    h = harness(tmp_path)

    async def main():
        h.engine.hold = asyncio.Event()
        h.engine.entered = asyncio.Event()
        task = asyncio.ensure_future(h.pipeline.ask(TENANT, AskInput("what is 2 + 2?", timeout=timeout)))
        await h.engine.entered.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await h.pipeline.inflight.wait_idle(10)

    run(main())
    (record,) = h.records()
    assert record["status"] == status
    assert 0 < record["cost_micros"] < record["reserved_micros"]
    assert record["answer_tokens"] == 1  # one token per sample ran before the stop
    assert h.reservations() == []
    h.assert_ledger_consistent()
    h.close()


def refining_policy(tmp_path):
    """The small policy with one refinement round on every level."""
    text = re.sub(r"^(\[levels\.\w+\]\n)", r"\1refine = 1\nrefine_tokens = 8\n", SMALL_POLICY.read_text(), flags=re.M)
    path = tmp_path / "refine.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("how", ["cancelled", "drained"])
def test_a_stop_during_a_refinement_round_charges_the_samples_and_the_round_so_far(tmp_path, how):
    # The samples finish; the request is stopped while its refinement round (the second job) runs.
    h = harness(tmp_path, policy=refining_policy(tmp_path), hold_from=1)

    async def main():
        h.engine.hold = asyncio.Event()
        task = asyncio.ensure_future(h.pipeline.ask(TENANT, QUESTION))
        await h.engine.entered.wait()
        assert h.engine.jobs == 2  # the samples' job ran; the round is the one held
        if how == "cancelled":
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        else:
            h.pipeline.inflight.draining = True
            assert h.pipeline.inflight.stop_all(DRAINED) == 1
            with pytest.raises(Unavailable, match="shut down"):
                await task
        assert await h.pipeline.inflight.wait_idle(10)

    run(main())
    (record,) = h.records()
    assert record["status"] == how
    samples = record["samples_run"] * h.engine.tokens_per_sample
    # Every sample's tokens, and the one token the round wrote before the stop.
    assert record["answer_tokens"] == samples + 1
    assert 0 < record["cost_micros"] < record["reserved_micros"]
    assert h.reservations() == [] and h.pipeline.live == set()
    h.assert_ledger_consistent()
    h.close()


def test_a_refinement_round_that_fails_to_prepare_ends_the_request_with_the_samples_charged(tmp_path):
    # The samples finish; preparing the round's prompt (engine.prepare, the second call) raises.
    h = harness(tmp_path, policy=refining_policy(tmp_path))
    prepare, calls = h.engine.prepare, []

    def failing(system, prompt, history=()):
        calls.append(prompt)
        if len(calls) > 1:
            raise RuntimeError("the tokenizer broke")
        return prepare(system, prompt, history)

    h.engine.prepare = failing
    with pytest.raises(EngineFailure, match="refinement failed: the tokenizer broke"):
        run(h.pipeline.ask(TENANT, QUESTION))
    assert len(calls) == 2 and h.engine.jobs == 1  # the round never started
    (record,) = h.records()
    assert record["status"] == "failed" and "refinement failed" in record["error"]
    # The samples ran to the end and are charged; the round wrote nothing.
    assert record["answer_tokens"] == record["samples_run"] * h.engine.tokens_per_sample
    assert 0 < record["cost_micros"] <= record["reserved_micros"]
    assert h.reservations() == [] and h.pipeline.live == set()
    h.assert_ledger_consistent()
    h.close()


def test_drain_stops_running_requests_and_says_so(tmp_path):
    h = harness(tmp_path)

    async def main():
        h.engine.hold = asyncio.Event()
        h.engine.entered = asyncio.Event()
        task = asyncio.ensure_future(h.pipeline.ask(TENANT, QUESTION))
        await h.engine.entered.wait()
        h.pipeline.inflight.draining = True
        assert h.pipeline.inflight.stop_all(DRAINED) == 1
        with pytest.raises(Unavailable, match="shut down"):
            await task
        with pytest.raises(Unavailable, match="shutting down"):
            await h.pipeline.ask(TENANT, QUESTION)

    run(main())
    (record,) = h.records()
    assert record["status"] == "drained" and record["cost_micros"] > 0
    h.assert_ledger_consistent()
    h.close()


@pytest.mark.parametrize(
    "engine, error, status, charged",
    [
        # Refused before running (queue full, shutting down): nothing is charged.
        ({"fail_with": Unavailable("64 requests are already waiting")}, Unavailable, "refused", False),
        # A bug in the engine before it ran: nothing is charged, and the caller hears INTERNAL.
        ({"fail_with": RuntimeError("boom")}, EngineFailure, "failed", False),
        # The model failed part-way: what ran is charged.
        ({"result_error": "llama_decode returned 1"}, EngineFailure, "failed", True),
        # The engine thread died: what ran is charged, the caller is told to retry.
        ({"result_error": "owner thread died", "fatal": True}, Unavailable, "failed", True),
    ],
)
def test_engine_faults(tmp_path, engine, error, status, charged):
    h = harness(tmp_path, **engine)
    with pytest.raises(error):
        run(h.pipeline.ask(TENANT, QUESTION))
    (record,) = h.records()
    assert record["status"] == status
    assert (record["cost_micros"] > 0) == charged
    if not charged:
        assert record["prompt_tokens"] == 0
    assert h.reservations() == []
    h.assert_ledger_consistent()
    h.close()


def disk_full() -> sqlite3.OperationalError:
    exc = sqlite3.OperationalError("database or disk is full")
    exc.sqlite_errorcode = 13  # SQLITE_FULL, as sqlite3 sets it
    return exc


def fail_once(h, name: str) -> None:
    real = getattr(h.ledger, name)
    calls = {"n": 0}

    def failing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            raise disk_full()
        return real(*args, **kwargs)

    setattr(h.ledger, name, failing)


def test_disk_full_when_reserving_is_unavailable_and_holds_nothing(tmp_path):
    h = harness(tmp_path)
    fail_once(h, "reserve_first_fitting")
    with pytest.raises(StorageUnavailable, match="disk is full") as info:
        run(h.pipeline.ask(TENANT, QUESTION))
    assert isinstance(info.value, Unavailable)
    assert not h.store.writable
    assert h.records() == [] and h.reservations() == []
    # The next write that succeeds marks the database writable again.
    run(h.pipeline.ask(TENANT, QUESTION))
    assert h.store.writable
    h.assert_ledger_consistent()
    h.close()


def test_disk_full_when_settling_keeps_the_settlement_and_writes_it_later(tmp_path):
    h = harness(tmp_path)
    fail_once(h, "settle")
    outcome = run(h.pipeline.ask(TENANT, QUESTION))
    assert outcome.answer == "4" and outcome.cost_micros > 0
    # The reservation still covers the request, and the sweeper knows it is owned.
    (held,) = h.reservations()
    assert held["request_id"] == outcome.request_id
    assert h.budgets.unsettled() == {outcome.request_id}
    owned = h.pipeline.live | h.budgets.unsettled()
    assert h.store.call_sync(h.ledger.settle_orphans, owned, h.clock.now(), h.clock.now()) == []
    assert run(h.budgets.retry_unsettled()) == 1
    (record,) = h.records()
    assert (record["status"], record["cost_micros"]) == ("ok", outcome.cost_micros)
    assert h.reservations() == [] and h.budgets.unsettled() == set()
    h.assert_ledger_consistent()
    h.close()


def test_budget_refusal_is_recorded_even_when_the_disk_is_full(tmp_path):
    h = harness(tmp_path, budget=0.000001)
    fail_once(h, "record_refusal")
    with pytest.raises(BudgetExhausted):
        run(h.pipeline.ask(TENANT, QUESTION))
    assert len(h.budgets.unsettled()) == 1
    assert run(h.budgets.retry_unsettled()) == 1
    (record,) = h.records()
    assert (record["status"], record["cost_micros"]) == ("refused", 0)
    h.close()


def test_cancelled_error_is_a_cancelled_status(tmp_path):
    """The inner request raises Cancelled after settling; a caller still awaiting it hears that."""
    h = harness(tmp_path)

    async def main():
        h.engine.hold = asyncio.Event()
        h.engine.entered = asyncio.Event()
        stops = []
        real_run = h.pipeline.inflight.run

        async def spy(body, deadline=None):
            async def wrapped(stop):
                stops.append(stop)
                return await body(stop)

            return await real_run(wrapped, deadline)

        h.pipeline.inflight.run = spy
        task = asyncio.ensure_future(h.pipeline.ask(TENANT, QUESTION))
        await h.engine.entered.wait()
        stops[0].request("cancelled")
        with pytest.raises(Cancelled, match="charged"):
            await task

    run(main())
    assert [r["status"] for r in h.records()] == ["cancelled"]
    h.close()
