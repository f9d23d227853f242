"""Idempotency keys through the real daemon: the model, the SQLite file, gRPC on loopback, the Python client.

The point of issue #10: the client's automatic retry on UNAVAILABLE must never
charge a tenant twice for one answer. Each test ends by reading the ledger.
Where a test must hold an attempt or lose its reply, it wraps the daemon's
idempotency collaborator (the seam the Ponder service is given), never the
model or the database.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from datetime import timedelta
from typing import Any

import grpc
import pytest

from conftest import DaemonThread, make_settings
from ponder.aio import AsyncPonderClient
from ponder.errors import Aborted, BudgetExhausted, FailedPrecondition, InvalidArgument
from ponder.v1 import ponder_pb2, ponder_pb2_grpc
from ponderd.errors import Unavailable
from ponderd.ledger.idempotency import Attempt, Idempotency

pytestmark = pytest.mark.model

QUESTION = "What is 2 + 3? Reply with just the number."
SMALL = {"seed": 1, "thinking_tokens": 0, "samples": 1}


class HeldKeys:
    """The daemon's real IdempotencyKeys, with a hold before `finish` and a fault after it."""

    def __init__(self, inner: Idempotency) -> None:
        self.inner = inner
        self.claims = 0
        self.finishing = threading.Event()
        self.go = threading.Event()
        self.go.set()
        # How many times to lose the reply after it was kept (the connection drops, the daemon drains).
        self.lose_replies = 0

    @property
    def enabled(self) -> bool:
        return self.inner.enabled

    async def claim(self, tenant: str, key: str, fingerprint: str, request_id: str = "") -> Attempt:
        self.claims += 1
        return await self.inner.claim(tenant, key, fingerprint, request_id)

    async def finish(self, attempt: Attempt, reply: bytes) -> None:
        self.finishing.set()
        await asyncio.to_thread(self.go.wait, 120)
        await self.inner.finish(attempt, reply)
        if self.lose_replies:
            self.lose_replies -= 1
            raise Unavailable("test fault: the reply was lost after the answer was kept; retry")

    async def release(self, attempt: Attempt) -> None:
        await self.inner.release(attempt)


@pytest.fixture
def held(tmp_path):
    d = DaemonThread(make_settings(tmp_path / "state"))
    keys = HeldKeys(d.daemon.keys)
    # create_server hands daemon.keys to the Ponder service when the daemon starts.
    d.daemon.keys = keys  # type: ignore[assignment]
    d.start()
    yield d, keys
    keys.go.set()
    d.stop()


def rows(d: DaemonThread, sql: str, args: tuple = ()) -> list[dict]:
    with sqlite3.connect(d.settings.database) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute(sql, args)]


def wait_until(predicate, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not reached in {timeout}s")
        time.sleep(0.02)


def assert_charged_once_per_record(d: DaemonThread) -> None:
    """The tenant's spent equals the sum of its spend records, and nothing is held."""
    (t,) = rows(d, "SELECT * FROM tenants WHERE name = 'local'")
    spent = rows(d, "SELECT COALESCE(SUM(cost_micros), 0) AS s FROM spend WHERE tenant = 'local'")[0]["s"]
    assert t["spent_micros"] == spent and t["reserved_micros"] == 0
    assert rows(d, "SELECT * FROM reservations") == []


def without_replayed(r: ponder_pb2.AskResponse) -> ponder_pb2.AskResponse:
    copy = ponder_pb2.AskResponse()
    copy.CopyFrom(r)
    copy.ClearField("replayed")
    return copy


def test_the_same_key_twice_is_answered_once_and_charged_once(daemon):
    with daemon.client() as c:
        first = c.ask(QUESTION, idempotency_key="order-42", **SMALL)
        after_first = c.balance()
        second = c.ask(QUESTION, idempotency_key="order-42", **SMALL)
        after_second = c.balance()
    assert not first.replayed and second.replayed
    assert without_replayed(second) == first
    assert first.cost > 0 and after_second.spent == after_first.spent
    (record,) = rows(daemon, "SELECT * FROM spend")
    assert record["request_id"] == first.request_id and record["status"] == "ok"
    (claim,) = rows(daemon, "SELECT * FROM idempotency_keys")
    assert claim["state"] == "done" and claim["request_id"] == first.request_id
    assert ponder_pb2.AskResponse.FromString(claim["reply"]) == first
    assert_charged_once_per_record(daemon)


def test_another_request_under_a_used_key_and_a_bad_key_are_invalid_argument(daemon):
    with daemon.client() as c:
        c.ask(QUESTION, idempotency_key="k-1", **SMALL)
        with pytest.raises(InvalidArgument, match="idempotency key 'k-1' was used for a different request.*use a new key"):
            c.ask("What is 3 + 3? Reply with just the number.", idempotency_key="k-1", **SMALL)
        with pytest.raises(InvalidArgument, match="at most 128"):
            c.ask(QUESTION, idempotency_key="k" * 129, **SMALL)
        with pytest.raises(InvalidArgument, match="not printable ASCII"):
            c.ask(QUESTION, idempotency_key="cl\u00e9", **SMALL)
    assert len(rows(daemon, "SELECT * FROM spend")) == 1
    assert_charged_once_per_record(daemon)


def test_without_a_key_every_ask_runs_and_each_client_call_sends_its_own_key(daemon):
    with daemon.client() as c:
        a = c.ask(QUESTION, idempotency_key="", **SMALL)
        b = c.ask(QUESTION, idempotency_key="", **SMALL)
        # The default: a fresh key per call, so two calls of the same question are two answers.
        d = c.ask(QUESTION, **SMALL)
        e = c.ask(QUESTION, **SMALL)
    assert not any(r.replayed for r in (a, b, d, e))
    assert len({r.request_id for r in (a, b, d, e)}) == 4
    assert len(rows(daemon, "SELECT * FROM spend")) == 4
    assert len(rows(daemon, "SELECT * FROM idempotency_keys WHERE state = 'done'")) == 2
    assert_charged_once_per_record(daemon)


def test_a_repeat_while_the_first_is_running_is_aborted(held):
    d, keys = held
    keys.go.clear()
    result: dict[str, Any] = {}

    def first() -> None:
        with d.client() as c:
            result["first"] = c.ask(QUESTION, idempotency_key="busy", **SMALL)

    t = threading.Thread(target=first)
    t.start()
    # The first attempt has answered and is about to keep its reply: its claim is running.
    assert keys.finishing.wait(120)
    assert [r["state"] for r in rows(d, "SELECT state FROM idempotency_keys")] == ["running"]
    with d.client() as c:
        with pytest.raises(Aborted, match="still running; wait for it \\(retry later\\) or use a new key") as err:
            c.ask(QUESTION, idempotency_key="busy", **SMALL)
    assert err.value.reason == "IDEMPOTENCY_KEY_IN_USE" and err.value.idempotency_key == "busy"
    keys.go.set()
    t.join(120)
    with d.client() as c:
        again = c.ask(QUESTION, idempotency_key="busy", **SMALL)
    assert again.replayed and without_replayed(again) == result["first"]
    assert len(rows(d, "SELECT * FROM spend")) == 1
    assert_charged_once_per_record(d)


def test_the_clients_automatic_retry_gets_the_kept_answer_and_is_charged_once(held):
    """The reply is lost after the daemon settled and kept it (UNAVAILABLE); gRPC retries with the same key."""
    d, keys = held
    keys.lose_replies = 1
    with d.client() as c:
        before = c.balance()
        r = c.ask(QUESTION, **SMALL)  # no key given: the client's own UUID
        after = c.balance()
    assert keys.claims == 2 and keys.lose_replies == 0  # the daemon saw the call twice
    assert r.replayed
    (record,) = rows(d, "SELECT * FROM spend")
    assert record["request_id"] == r.request_id and record["status"] == "ok"
    assert after.spent - before.spent == pytest.approx(record["cost_micros"] / 1e6)
    assert_charged_once_per_record(d)


def test_the_asyncio_clients_retry_is_charged_once_too(held):
    d, keys = held
    keys.lose_replies = 1

    async def main() -> ponder_pb2.AskResponse:
        async with AsyncPonderClient(d.address, d.token(), timeout=120) as c:
            return await c.ask(QUESTION, **SMALL)

    r = asyncio.run(main())
    assert r.replayed and keys.claims == 2
    assert len(rows(d, "SELECT * FROM spend")) == 1
    assert_charged_once_per_record(d)


def test_an_attempt_that_ends_without_an_answer_frees_its_key_and_a_retry_runs_and_is_charged(daemon):
    with daemon.admin() as admin:
        token = admin.create_tenant("poor", 0.000001).token
    with daemon.client(token) as c:
        with pytest.raises(BudgetExhausted):
            c.ask(QUESTION, idempotency_key="try-1", seed=1)
    assert rows(daemon, "SELECT * FROM idempotency_keys") == []
    with daemon.admin() as admin:
        admin.set_budget("poor", 100.0)
    with daemon.client(token) as c:
        r = c.ask(QUESTION, idempotency_key="try-1", seed=1)
    assert not r.replayed and r.cost > 0
    statuses = [x["status"] for x in rows(daemon, "SELECT status FROM spend WHERE tenant = 'poor' ORDER BY at")]
    assert statuses == ["refused", "ok"]


def test_a_cancelled_stream_frees_its_key_keeps_its_charge_and_a_retry_runs(daemon):
    request = ponder_pb2.AskStreamRequest(
        prompt="Write a long story about a dragon.", idempotency_key="cancel-me",
        hints=ponder_pb2.Hints(samples=2, thinking_tokens=32),
    )
    metadata = (("authorization", f"Bearer {daemon.token()}"),)
    with grpc.insecure_channel(daemon.address) as ch:
        stream = ponder_pb2_grpc.PonderServiceStub(ch).AskStream(request, metadata=metadata)
        for event in stream:
            if event.WhichOneof("event") == "delta":
                # Generating: the key is claimed and its request runs.
                assert [r["state"] for r in rows(daemon, "SELECT state FROM idempotency_keys")] == ["running"]
                stream.cancel()
                break
    # The request stops and settles on its own after its caller left; then the key is free.
    wait_until(lambda: rows(daemon, "SELECT * FROM spend"), "the stopped request's spend record")
    wait_until(lambda: not rows(daemon, "SELECT * FROM idempotency_keys"), "the key is freed")
    (stopped,) = rows(daemon, "SELECT * FROM spend")
    assert stopped["status"] == "cancelled" and stopped["cost_micros"] > 0
    with daemon.client() as c:
        r = c.ask(request.prompt, idempotency_key="cancel-me", samples=2, thinking_tokens=32)
    assert not r.replayed and r.cost > 0
    records = rows(daemon, "SELECT request_id, status FROM spend ORDER BY at")
    assert [x["status"] for x in records] == ["cancelled", "ok"] and records[1]["request_id"] == r.request_id
    # What the cancelled attempt ran stays charged: two records, both in spent.
    assert_charged_once_per_record(daemon)


def test_ask_stream_replays_its_result_and_ask_may_repeat_it(daemon):
    with daemon.client() as c:
        events = list(c.ask_stream(QUESTION, idempotency_key="s-1", **SMALL))
        replay = list(c.ask_stream(QUESTION, idempotency_key="s-1", **SMALL))
        unary = c.ask(QUESTION, idempotency_key="s-1", **SMALL)
    result = events[-1].result
    assert events[0].WhichOneof("event") == "plan" and not result.replayed
    assert [e.WhichOneof("event") for e in replay] == ["result"]
    assert replay[0].request_id == result.request_id and replay[0].result.replayed
    assert without_replayed(replay[0].result) == result == without_replayed(unary)
    assert len(rows(daemon, "SELECT * FROM spend")) == 1
    assert_charged_once_per_record(daemon)


def test_a_raw_grpc_caller_sees_aborted_with_error_info(held):
    d, keys = held
    keys.go.clear()
    metadata = (("authorization", f"Bearer {d.token()}"),)
    request = ponder_pb2.AskRequest(prompt=QUESTION, seed=1, idempotency_key="raw", hints=ponder_pb2.Hints(samples=1))
    with grpc.insecure_channel(d.address) as ch:
        stub = ponder_pb2_grpc.PonderServiceStub(ch)
        first = stub.Ask.future(request, metadata=metadata, timeout=120)
        assert keys.finishing.wait(120)
        with pytest.raises(grpc.RpcError) as err:
            stub.Ask(request, metadata=metadata, timeout=60)
        assert err.value.code() == grpc.StatusCode.ABORTED
        keys.go.set()
        assert not first.result().replayed


def test_expired_keys_are_pruned_and_then_run_afresh(clocked_daemon, clock):
    d = clocked_daemon
    with d.client() as c:
        first = c.ask(QUESTION, idempotency_key="old", **SMALL)
    clock.advance(timedelta(hours=d.settings.idempotency_hours, seconds=1))
    with d.admin() as admin:
        summary = admin.run_job("prune_idempotency")
    assert summary.endswith("removed 1 expired idempotency key(s)")
    assert rows(d, "SELECT * FROM idempotency_keys") == []
    with d.client() as c:
        second = c.ask(QUESTION, idempotency_key="old", **SMALL)
    assert not second.replayed and second.request_id != first.request_id
    assert len(rows(d, "SELECT * FROM spend")) == 2


def test_keys_off_runs_every_request(tmp_path):
    d = DaemonThread(make_settings(tmp_path / "state", idempotency_hours=0)).start()
    try:
        with d.client() as c:
            a = c.ask(QUESTION, idempotency_key="same", **SMALL)
            b = c.ask(QUESTION, idempotency_key="same", **SMALL)
        assert not a.replayed and not b.replayed and a.request_id != b.request_id
        assert rows(d, "SELECT * FROM idempotency_keys") == []
    finally:
        d.stop()


def test_start_up_frees_a_claim_a_killed_process_left_and_keeps_a_lost_one_lost(tmp_path):
    state = tmp_path / "state"
    d = DaemonThread(make_settings(state)).start()
    with d.client() as c:
        answered = c.ask(QUESTION, idempotency_key="answered", **SMALL)
    d.stop()
    # As a process killed between claiming and finishing would leave them: one never settled, one settled ok.
    with sqlite3.connect(state / "ponder.db") as conn:
        conn.execute(
            "INSERT INTO idempotency_keys VALUES ('local', 'unanswered', 'fp', 'running', 'gone', NULL, ?, ?)",
            ("2026-01-01T00:00:00+00:00", "2999-01-01T00:00:00+00:00"),
        )
        conn.execute(
            "UPDATE idempotency_keys SET state = 'running', reply = NULL WHERE key = 'answered'"
        )
    d = DaemonThread(make_settings(state)).start()
    try:
        assert {r["key"]: r["state"] for r in rows(d, "SELECT key, state FROM idempotency_keys")} == {"answered": "lost"}
        with d.client() as c:
            with pytest.raises(FailedPrecondition, match=f"answered and charged \\(request {answered.request_id}\\)") as err:
                c.ask(QUESTION, idempotency_key="answered", **SMALL)
        assert err.value.reason == "IDEMPOTENCY_REPLY_LOST"
        assert len(rows(d, "SELECT * FROM spend")) == 1
    finally:
        d.stop()
