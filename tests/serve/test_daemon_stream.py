"""AskStream through the real daemon, and cancellation: what was used is settled, nothing leaks."""

import sqlite3
import time

import grpc
import pytest

from ponder.v1 import ponder_pb2, ponder_pb2_grpc

pytestmark = pytest.mark.model


def test_stream_sends_the_plan_then_text_then_the_result(daemon):
    with daemon.client() as c:
        events = list(c.ask_stream("Count from one to five.", samples=2, thinking_tokens=6, seed=5))
    kinds = [e.WhichOneof("event") for e in events]
    assert kinds[0] == "plan" and kinds[-1] == "result" and "delta" in kinds
    result = events[-1].result
    request_id = events[0].request_id
    assert request_id == result.request_id and all(e.request_id == request_id for e in events)
    for sample in result.samples:
        thinking = "".join(e.delta.text for e in events if e.WhichOneof("event") == "delta"
                           and e.delta.sample == sample.index and e.delta.phase == ponder_pb2.TextDelta.PHASE_THINKING)
        answer = "".join(e.delta.text for e in events if e.WhichOneof("event") == "delta"
                         and e.delta.sample == sample.index and e.delta.phase == ponder_pb2.TextDelta.PHASE_ANSWER)
        assert thinking.strip() == sample.thinking
        assert answer.strip() == sample.text


def test_a_cancelled_call_settles_what_it_used_and_releases_its_reservation(daemon):
    with daemon.client() as c:
        before = c.balance()
    metadata = (("authorization", f"Bearer {daemon.token()}"),)
    request = ponder_pb2.AskStreamRequest(
        prompt="Write a long story about a dragon.", hints=ponder_pb2.Hints(samples=4, thinking_tokens=64, level="thorough")
    )
    with grpc.insecure_channel(daemon.address) as ch:
        stream = ponder_pb2_grpc.PonderServiceStub(ch).AskStream(request, metadata=metadata)
        seen = 0
        for event in stream:
            seen += event.WhichOneof("event") == "delta"
            if seen >= 5:
                stream.cancel()
                break
    deadline = time.time() + 30
    while time.time() < deadline:
        with sqlite3.connect(daemon.settings.database) as conn:
            row = conn.execute("SELECT status, cost_micros, reserved_micros, thinking_tokens FROM spend").fetchone()
            open_reservations = conn.execute("SELECT COUNT(*) FROM reservations").fetchone()[0]
        if row:
            break
        time.sleep(0.1)
    status, cost, reserved, thinking = row
    assert status == "cancelled" and open_reservations == 0
    assert 0 < cost < reserved and thinking > 0
    with daemon.client() as c:
        after = c.balance()
    assert after.reserved == 0
    assert after.spent - before.spent == pytest.approx(cost / 1e6)
    assert daemon.daemon.engine.queue_depth() == 0


def test_unary_calls_cancelled_by_deadline_are_settled_too(daemon):
    metadata = (("authorization", f"Bearer {daemon.token()}"),)
    request = ponder_pb2.AskRequest(prompt="Tell me everything about rivers.", hints=ponder_pb2.Hints(samples=8, thinking_tokens=64))
    with grpc.insecure_channel(daemon.address) as ch:
        with pytest.raises(grpc.RpcError) as err:
            ponder_pb2_grpc.PonderServiceStub(ch).Ask(request, metadata=metadata, timeout=0.5)
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    deadline = time.time() + 30
    status = None
    while time.time() < deadline and status is None:
        with sqlite3.connect(daemon.settings.database) as conn:
            row = conn.execute("SELECT status FROM spend").fetchone()
        status = row[0] if row else None
        time.sleep(0.1)
    # Recorded as the deadline, not as a client that went away.
    assert status == "deadline"
    assert daemon.daemon.pipeline.live == set()
