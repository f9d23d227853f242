"""Self-refinement through the real daemon: rounds after the vote, charged, reserved, and kept by the policy's rule."""

import sqlite3
import time

import grpc
import pytest

from conftest import SMALL_POLICY, DaemonThread, make_settings
from ponder.client import PonderClient
from ponder.v1 import ponder_pb2, ponder_pb2_grpc

pytestmark = pytest.mark.model

SUM = "What is 2 + 3? Reply with just the number."


@pytest.fixture(scope="module")
def refining(tmp_path_factory):
    policy = tmp_path_factory.mktemp("policy") / "refine.toml"
    text = SMALL_POLICY.read_text()
    # careful: keep a revision only when the vote was not decided; thorough: always keep it.
    text = text.replace("[levels.careful]\n", "[levels.careful]\nrefine = 1\nrefine_tokens = 24\n")
    text = text.replace("[levels.thorough]\n", '[levels.thorough]\nrefine = 2\nrefine_tokens = 160\nrefine_keep = "always"\n')
    policy.write_text(text)
    d = DaemonThread(make_settings(tmp_path_factory.mktemp("state"), policy=policy)).start()
    yield d
    d.stop()


def slow_client(d):
    """A slow, shared machine may need minutes for a request and its rounds."""
    return PonderClient(d.address, d.token("local"), timeout=900)


def charged(r):
    """The small policy's prices: 1 per 1000 prompt (and forced) tokens, 2 per 1000 thinking and answer tokens."""
    u = r.usage
    return ((u.prompt_tokens + u.forced_tokens) + 2 * (u.thinking_tokens + u.answer_tokens)) / 1000


def test_a_decided_vote_is_kept_whatever_the_revision_says(refining):
    with slow_client(refining) as c:
        r = c.ask(SUM, level="careful", thinking_tokens=0, seed=7)
    assert r.plan.refine == 1 and r.usage.stop_reason == "decided"  # "5", "5": the third could not change it
    (x,) = r.refinements
    assert x.round == 1 and x.text and x.prompt_tokens > r.usage.prompt_tokens - x.prompt_tokens
    assert r.voted_answer == r.votes[0].answer
    assert r.answer == r.voted_answer  # unless_decided: a decided vote stands
    assert x.kept == (x.answer == r.voted_answer)
    assert r.cost == pytest.approx(charged(r), abs=2e-6) and r.cost <= r.plan.worst_case_cost
    assert r.balance.spent == pytest.approx(r.cost) and r.balance.reserved == 0


def test_always_keeps_each_revision_and_rounds_build_on_the_last(refining):
    with slow_client(refining) as c:
        r = c.ask("Name a prime number between 10 and 20.", level="thorough", samples=2, thinking_tokens=0, seed=3)
    assert r.plan.refine == 2 and 1 <= len(r.refinements) <= 2
    kept = [x for x in r.refinements if x.kept]
    # Rounds stop at the first revision not kept (here: only one with nothing extractable).
    assert all(x.kept for x in r.refinements[:-1])
    assert (r.answer, r.text) == ((kept[-1].answer, kept[-1].text) if kept else (r.voted_answer, r.voted_text))
    assert r.cost == pytest.approx(charged(r), abs=2e-6) and r.cost <= r.plan.worst_case_cost
    assert r.usage.answer_tokens == sum(s.answer_tokens for s in r.samples) + sum(x.answer_tokens for x in r.refinements)


def test_without_refinement_the_voted_answer_is_the_answer(refining):
    with slow_client(refining) as c:
        r = c.ask(SUM, level="brief", thinking_tokens=0, seed=7)
    assert r.plan.refine == 0 and not r.refinements
    assert (r.voted_text, r.voted_answer) == (r.text, r.answer)


def test_the_stream_labels_each_rounds_text_and_a_cancel_during_a_round_charges_what_ran(refining):
    metadata = (("authorization", f"Bearer {refining.token()}"),)
    request = ponder_pb2.AskStreamRequest(
        prompt="Write a short story about a dragon.", seed=5,
        hints=ponder_pb2.Hints(level="thorough", samples=1, thinking_tokens=0),
    )
    stub = lambda ch: ponder_pb2_grpc.PonderServiceStub(ch)  # noqa: E731
    # A whole stream first: the samples' text has round 0, each round's text its number and sample 0.
    with grpc.insecure_channel(refining.address) as ch:
        events = list(stub(ch).AskStream(request, metadata=metadata, timeout=900))
    result = events[-1].result
    deltas = [e.delta for e in events if e.WhichOneof("event") == "delta"]
    assert result.refinements and {d.refine_round for d in deltas} == {0} | {x.round for x in result.refinements}
    for x in result.refinements:
        assert all(d.sample == 0 for d in deltas if d.refine_round == x.round)
        assert "".join(d.text for d in deltas if d.refine_round == x.round).strip() == x.text
    # The same request again (same seed: the same sample), cancelled as soon as its first round writes.
    with grpc.insecure_channel(refining.address) as ch:
        stream = stub(ch).AskStream(request, metadata=metadata, timeout=900)
        for event in stream:
            if event.WhichOneof("event") == "delta" and event.delta.refine_round == 1:
                request_id = event.request_id
                stream.cancel()
                break
    row, held = wait_for_record(refining, request_id)
    assert row["status"] == "cancelled" and held == 0
    # The sample's tokens and the round's so far are charged, and no more than was reserved.
    assert row["answer_tokens"] > result.samples[0].answer_tokens
    assert row["answer_tokens"] < result.usage.answer_tokens
    assert 0 < row["cost_micros"] < row["reserved_micros"]


def wait_for_record(d, request_id):
    """The request's spend record once it is written (the daemon settles after the cancel), and how many reservations are open."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with sqlite3.connect(d.settings.database) as conn:
            conn.row_factory = sqlite3.Row
            row = conn.execute("SELECT * FROM spend WHERE request_id = ?", (request_id,)).fetchone()
            held = conn.execute("SELECT COUNT(*) FROM reservations").fetchone()[0]
        if row is not None:
            return dict(row), held
        time.sleep(0.05)
    raise AssertionError(f"no spend record for {request_id} within 60 s")
