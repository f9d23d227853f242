"""The engine under faults, with the real embedded model: a job's failing callback fails that job
only, a dying owner thread resolves every job and refuses new ones, cancelled waiting jobs leave
the queue at once, and refusals happen before anything runs."""

import asyncio
import threading
import time

import pytest

from ponderd.answers import extract_answer
from ponderd.engine import GenerationJob
from ponderd.engine.llama import LlamaEngine
from ponderd.errors import Unavailable
from ponderd.settings import ModelSettings

pytestmark = pytest.mark.model

# Long enough for a test to act while the job still runs (it is cancelled afterwards).
LONG = {"thinking": 100, "answer": 100}


@pytest.fixture
def small_engine():
    """A fresh engine a test may break: two sequences, so one running job blocks the rest."""
    e = LlamaEngine(ModelSettings(n_ctx=512, n_seq_max=2), max_queue=4)
    e.start()
    yield e
    closing = threading.Thread(target=e.close)
    closing.start()
    closing.join(30)
    assert not closing.is_alive(), "close() hung"


def make_job(e, prompt="Tell me about the sea.", samples=2, thinking=8, answer=8, seed=1,
             extract=extract_answer, decided=None, on_text=None):
    return GenerationJob(e.prepare("", prompt), samples, thinking, answer, seed, extract,
                         decided or (lambda answers, remaining: False), on_text)


def gather(e, jobs, timeout=60):
    """Run jobs together; a hung engine fails the test instead of hanging it."""
    async def main():
        return await asyncio.wait_for(asyncio.gather(*(e.generate(j) for j in jobs), return_exceptions=True), timeout)

    return asyncio.run(main())


def started_flag():
    """An on_text sink that sets an event at the first text: the job is running."""
    flag = threading.Event()
    return flag, lambda sample, phase, text: flag.set()


def assert_healthy(e):
    (later,) = gather(e, [make_job(e, seed=9)])
    assert not later.error and len(later.samples) == 2
    assert e.failure() == ""


def _raise(exc):
    raise exc


def failing_extract(text):
    raise ValueError("no answer in this text")


def failing_vote(answers, remaining):
    raise ValueError("cannot count these votes")


def failing_sink_after(n):
    calls = []

    def sink(sample, phase, text):
        calls.append(text)
        if len(calls) > n:
            raise ConnectionError("the stream is gone")

    return sink


@pytest.mark.parametrize(
    "kind, expected",
    [
        ("extract", "extract_answer raised ValueError: no answer in this text"),
        ("vote", "vote_decided raised ValueError: cannot count these votes"),
        ("sink", "the text sink (on_text) raised ConnectionError: the stream is gone"),
    ],
)
def test_a_raising_callback_fails_only_its_own_job(engine, kind, expected):
    bad = {
        "extract": lambda: make_job(engine, samples=3, thinking=0, answer=6, seed=5, extract=failing_extract),
        "vote": lambda: make_job(engine, samples=3, thinking=0, answer=6, seed=5, decided=failing_vote),
        "sink": lambda: make_job(engine, samples=3, thinking=4, answer=6, seed=5, on_text=failing_sink_after(2)),
    }[kind]()
    good = make_job(engine, samples=2, thinking=4, answer=6, seed=6)
    rb, rg = gather(engine, [bad, good])

    assert not isinstance(rb, Exception) and not isinstance(rg, Exception), (rb, rg)
    assert rb.error == expected and not rb.fatal
    assert {s.finish_reason for s in rb.samples} == {"error"}
    # What ran before the failure is still reported, so it can be charged.
    assert rb.thinking_tokens + rb.answer_tokens > 0 and rb.prompt_tokens == len(bad.prompt.tokens)
    assert not rg.error and {s.finish_reason for s in rg.samples} <= {"stop", "length"}
    assert_healthy(engine)
    assert engine.queue_depth() == 0


def test_a_future_cancelled_while_its_job_runs_does_not_stop_the_engine(engine):
    started, sink = started_flag()
    job = make_job(engine, samples=2, seed=3, on_text=sink, **LONG)
    future = engine._submit(job)
    assert started.wait(60)
    # The engine marked it running when it took the job: only the job can be cancelled now.
    assert not future.cancel()
    job.cancel()
    result = future.result(timeout=30)
    assert {s.finish_reason for s in result.samples} == {"cancelled"} and not result.error
    assert_healthy(engine)


def test_a_future_cancelled_while_waiting_takes_its_job_out_of_the_queue(engine):
    started, sink = started_flag()
    head = make_job(engine, samples=8, thinking=50, answer=50, seed=3, on_text=sink)  # every sequence
    head_future = engine._submit(head)
    assert started.wait(60)
    waiting = make_job(engine, samples=1, seed=4)
    future = engine._submit(waiting)
    assert engine.queue_depth() == 2
    assert future.cancel()
    assert waiting.cancelled.is_set() and engine.queue_depth() == 1
    head.cancel()
    assert not head_future.result(timeout=30).error
    assert_healthy(engine)


def test_cancelling_the_generate_call_stops_a_running_job(engine):
    async def main():
        loop = asyncio.get_running_loop()
        started = asyncio.Event()
        job = make_job(engine, samples=2, seed=3, on_text=lambda *a: loop.call_soon_threadsafe(started.set), **LONG)
        task = asyncio.ensure_future(engine.generate(job))
        await asyncio.wait_for(started.wait(), 60)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return job

    job = asyncio.run(main())
    assert job.cancelled.is_set()  # nobody reads the result, so the samples must not run out their caps
    assert_healthy(engine)


def test_a_cancelled_job_waiting_behind_a_blocked_head_resolves_at_once(engine):
    async def main():
        loop = asyncio.get_running_loop()
        started = asyncio.Event()
        # Four long samples hold half the sequences; the next job needs five, so it blocks the head.
        running = make_job(engine, samples=4, seed=3, on_text=lambda *a: loop.call_soon_threadsafe(started.set), **LONG)
        running_task = asyncio.ensure_future(engine.generate(running))
        await asyncio.wait_for(started.wait(), 60)
        head = make_job(engine, samples=5, thinking=50, answer=50, seed=4)
        head_future = engine._submit(head)
        small = make_job(engine, samples=1, thinking=0, answer=4, seed=5)
        small_task = asyncio.ensure_future(engine.generate(small))
        await asyncio.sleep(0)  # one turn of the event loop: the task has queued its job
        assert engine.queue_depth() == 3

        small.cancel()  # what the pipeline does when its caller goes away, then it awaits the generation
        result = await asyncio.wait_for(small_task, 2)
        still_blocked = not running_task.done() and not head_future.done()

        running.cancel()
        head.cancel()
        await asyncio.wait_for(running_task, 30)
        head_future.result(timeout=30)
        return result, still_blocked

    result, still_blocked = asyncio.run(main())
    assert (result.error, result.samples, result.samples_run) == ("cancelled before it started", [], 0)
    assert still_blocked
    assert engine.queue_depth() == 0


def test_the_loop_turns_while_idle(engine):
    assert engine.queue_depth() == 0
    before = engine.last_progress()
    deadline = time.monotonic() + 5
    while engine.last_progress() <= before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert engine.last_progress() > before
    assert time.monotonic() - engine.last_progress() < 2
    assert engine.failure() == ""


def _break_while_running(e):
    """Start a job holding both sequences and queue one behind it; return both with their futures."""
    started, sink = started_flag()
    running = make_job(e, samples=2, seed=3, on_text=sink, **LONG)
    running_future = e._submit(running)
    assert started.wait(60)
    waiting = make_job(e, samples=1, seed=4)
    waiting_future = e._submit(waiting)
    assert e.queue_depth() == 2
    return running, running_future, waiting_future


def _assert_stopped(e, running, running_future, waiting_future, why):
    result = running_future.result(timeout=30)
    assert result.fatal and why in result.error
    # What the running job decoded is reported, so it can be charged.
    assert result.thinking_tokens + result.answer_tokens > 0 and result.prompt_tokens == len(running.prompt.tokens)
    assert {s.finish_reason for s in result.samples} == {"error"}
    refused = waiting_future.exception(timeout=30)
    assert isinstance(refused, Unavailable)
    assert refused.message.startswith("the model engine stopped:") and "restarting" in refused.message
    assert why in e.failure()
    assert e.queue_depth() == 0
    (late,) = gather(e, [make_job(e)], timeout=5)
    assert isinstance(late, Unavailable) and late.message.startswith("the model engine stopped:")


def test_a_fault_in_the_loop_stops_the_engine_and_resolves_every_job(small_engine, monkeypatch):
    e = small_engine
    running, running_future, waiting_future = _break_while_running(e)
    monkeypatch.setattr(e, "_step", lambda: _raise(RuntimeError("injected fault")))
    _assert_stopped(e, running, running_future, waiting_future, "RuntimeError: injected fault")


class _ComputeFails:
    """llama_cpp as the engine sees it, except that decoding fails the way a lost GPU does."""

    def __init__(self, real):
        self._real = real

    def __getattr__(self, name):
        return getattr(self._real, name)

    def llama_decode(self, ctx, batch):
        return -3


def test_a_llama_compute_failure_stops_the_engine(small_engine):
    e = small_engine
    running, running_future, waiting_future = _break_while_running(e)
    e._L = _ComputeFails(e._L)
    _assert_stopped(e, running, running_future, waiting_future, "llama_decode returned -3")


def test_a_full_queue_refuses_before_anything_is_queued(small_engine):
    e = small_engine
    started, sink = started_flag()
    running = make_job(e, samples=2, seed=3, on_text=sink, **LONG)
    running_future = e._submit(running)
    assert started.wait(60)
    waiting = [make_job(e, samples=1, seed=10 + i) for i in range(4)]
    futures = [e._submit(j) for j in waiting]
    texts = []
    late = make_job(e, samples=1, on_text=lambda *a: texts.append(a))
    (refused,) = gather(e, [late], timeout=5)
    assert isinstance(refused, Unavailable) and "already waiting for the model" in refused.message
    assert e.queue_depth() == 5 and late._on_cancel is None

    for j in [running, *waiting]:
        j.cancel()
    assert all(f.result(timeout=0).error == "cancelled before it started" for f in futures)
    running_future.result(timeout=30)
    assert texts == [] and e.queue_depth() == 0


def test_close_refuses_waiting_jobs_and_new_ones(small_engine):
    e = small_engine
    started, sink = started_flag()
    running = make_job(e, samples=2, seed=3, on_text=sink, **LONG)
    running_future = e._submit(running)
    assert started.wait(60)
    waiting_future = e._submit(make_job(e, samples=1, seed=4))
    late = make_job(e)  # prepared while the model is loaded

    closing = threading.Thread(target=e.close)
    closing.start()
    refused = waiting_future.exception(timeout=30)
    assert isinstance(refused, Unavailable) and "shutting down" in refused.message
    assert {s.finish_reason for s in running_future.result(timeout=30).samples} == {"cancelled"}
    closing.join(30)
    assert not closing.is_alive()
    (refused_late,) = gather(e, [late], timeout=5)
    assert isinstance(refused_late, Unavailable) and "shutting down" in refused_late.message
