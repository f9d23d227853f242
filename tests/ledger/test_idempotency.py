"""Idempotency keys on a real SQLite file, without the model: the claim table, recovery, expiry, the migration.

The daemon-level behaviour (replays through gRPC, the client's retries) is in
tests/ledger/test_daemon_idempotency.py; these check the rules of idempotency.py one
by one, fast.
"""

from __future__ import annotations

import asyncio
import pathlib
import sqlite3
from datetime import timedelta
from zoneinfo import ZoneInfo

import pytest
from fakes import START, TENANT, harness
from sqlite_utils import Database

from ponder.v1 import ponder_pb2
from ponderd.clock import ManualClock
from ponderd.errors import InvalidRequest, KeyInUse, ReplyLost
from ponderd.ledger.idempotency import Attempt, check_key, fingerprint
from ponderd.ledger.sqlite import store as store_module
from ponderd.ledger.sqlite.idempotency import IdempotencyKeys
from ponderd.ledger.sqlite.ledger import Ledger
from ponderd.ledger.sqlite.store import Store
from ponderd.ledger.types import SpendRow, iso, to_micros
from ponderd.request.pipeline import AskInput


def run(coro):
    return asyncio.run(coro)


@pytest.fixture
def keys(tmp_path):
    clock = ManualClock(START)
    store = Store(tmp_path / "ponder.db")
    store.open()
    ledger = Ledger(ZoneInfo("UTC"))
    store.call_sync(ledger.create_tenant, "acme", to_micros(100), "day", clock.now())
    k = IdempotencyKeys(store, ledger, clock, hours=24)
    yield k
    store.close()


def rows(k: IdempotencyKeys) -> list[dict]:
    return k.store.call_sync(lambda db: list(db.query("SELECT * FROM idempotency_keys ORDER BY key")))


def settle_ok(k: IdempotencyKeys, request_id: str, status: str = "ok") -> None:
    """A spend record for `request_id`, as a settle writes it (reserve, then settle)."""

    class Cand:
        worst_case_micros = 10

        def to_json(self) -> dict:
            return {}

    now = k.clock.now()
    k.store.call_sync(k.ledger.reserve_first_fitting, "acme", request_id, [Cand()], now)
    row = SpendRow(
        request_id=request_id, tenant="acme", at=iso(now), severity="low", needs_reasoning=False,
        model_severity="low", model_needs_reasoning=False, risk_model="m", policy_version="p", level="quick",
        thinking_cap=0, answer_cap=8, samples_planned=1, prompt_tokens=1, thinking_tokens=0, answer_tokens=1,
        forced_tokens=0, samples_run=1, samples_stopped=0, cost_micros=5, latency_ms=1, status=status,
    )
    k.store.call_sync(k.ledger.settle, row, None)


@pytest.mark.parametrize(
    "key, says",
    [
        ("k" * 129, "129 characters long; use at most 128"),
        ("caf\u00e9", "not printable ASCII at position 3"),
        ("a\nb", "not printable ASCII at position 1"),
        ("tab\there", "not printable ASCII at position 3"),
    ],
)
def test_a_bad_key_says_what_to_change(key, says):
    with pytest.raises(InvalidRequest, match=says):
        check_key(key)


def test_good_keys_pass():
    for key in ("", "k" * 128, "0b8e2f0c-3f1e-4d6a-9a5b-1c2d3e4f5a6b", "order 42/retry #1 ~ok"):
        check_key(key)


def test_the_fingerprint_ignores_the_key_and_the_method_but_not_the_fields():
    base = dict(prompt="What is 2 + 2?", seed=3, hints=ponder_pb2.Hints(samples=2))
    a = ponder_pb2.AskRequest(idempotency_key="one", **base)
    assert fingerprint(a) == fingerprint(ponder_pb2.AskRequest(idempotency_key="two", **base))
    assert fingerprint(a) == fingerprint(ponder_pb2.AskStreamRequest(idempotency_key="one", **base))
    assert fingerprint(a) != fingerprint(ponder_pb2.AskRequest(idempotency_key="one", **(base | {"seed": 4})))
    assert a.idempotency_key == "one"  # the request itself is left as it was


def test_claim_finish_replay_and_a_different_request(keys):
    async def main():
        first = await keys.claim("acme", "k1", "fp")
        assert first.reply is None and first.request_id in keys.live
        # While it runs, the same key is ABORTED and another request under it is refused.
        with pytest.raises(KeyInUse, match="still running; wait for it"):
            await keys.claim("acme", "k1", "fp")
        with pytest.raises(InvalidRequest, match="used for a different request"):
            await keys.claim("acme", "k1", "other")
        await keys.finish(first, b"reply-bytes")
        assert keys.live == set()
        again = await keys.claim("acme", "k1", "fp")
        assert again == Attempt("acme", "k1", reply=b"reply-bytes")
        with pytest.raises(InvalidRequest, match="use a new key per request"):
            await keys.claim("acme", "k1", "other")

    run(main())
    (row,) = rows(keys)
    assert row["state"] == "done" and row["reply"] == b"reply-bytes"
    assert row["expires_at"] == iso(START + timedelta(hours=24))


def test_a_released_key_runs_afresh_and_a_release_never_frees_someone_elses_claim(keys):
    async def main():
        first = await keys.claim("acme", "k1", "fp")
        await keys.release(first)
        assert rows(keys) == [] and keys.live == set()
        second = await keys.claim("acme", "k1", "fp")
        assert second.request_id != first.request_id
        # A late release of the first attempt leaves the second's claim alone.
        await keys.release(first)
        assert [r["request_id"] for r in rows(keys)] == [second.request_id]

    run(main())


def test_keys_are_per_tenant(keys):
    keys.store.call_sync(keys.ledger.create_tenant, "other", to_micros(100), "day", START)

    async def main():
        a = await keys.claim("acme", "k1", "fp")
        b = await keys.claim("other", "k1", "another request")
        assert a.request_id and b.request_id

    run(main())


def test_a_claim_left_by_a_stopped_attempt_is_taken_over_or_lost_by_its_spend_record(keys):
    async def main():
        unanswered = await keys.claim("acme", "unanswered", "fp")
        answered = await keys.claim("acme", "answered", "fp")
        failed = await keys.claim("acme", "failed", "fp")
        settle_ok(keys, answered.request_id)
        settle_ok(keys, failed.request_id, status="drained")
        # The process that ran them stopped: none is live any more.
        keys.live.clear()
        retry = await keys.claim("acme", "unanswered", "fp")
        assert retry.request_id and retry.request_id != unanswered.request_id
        assert (await keys.claim("acme", "failed", "fp")).request_id
        # Answered and charged, reply never kept: a retry is told, never charged again.
        with pytest.raises(ReplyLost, match=f"answered and charged \\(request {answered.request_id}\\)") as err:
            await keys.claim("acme", "answered", "fp")
        assert err.value.request_id == answered.request_id
        with pytest.raises(ReplyLost):
            await keys.claim("acme", "answered", "fp")

    run(main())
    assert {r["key"]: r["state"] for r in rows(keys)} == {"answered": "lost", "failed": "running", "unanswered": "running"}


def test_a_claim_whose_settlement_waits_for_the_disk_is_still_in_use(keys):
    waiting: set[str] = set()
    keys.owned = lambda: waiting

    async def main():
        first = await keys.claim("acme", "k1", "fp")
        keys.live.clear()
        waiting.add(first.request_id)
        with pytest.raises(KeyInUse):
            await keys.claim("acme", "k1", "fp")

    run(main())


def test_recovery_at_start_up_frees_unanswered_claims_marks_answered_ones_lost_and_prunes_expired_keys(keys):
    async def main():
        done = await keys.claim("acme", "done", "fp")
        await keys.finish(done, b"r")
        unanswered = await keys.claim("acme", "unanswered", "fp")
        answered = await keys.claim("acme", "answered", "fp")
        running = await keys.claim("acme", "running", "fp")
        settle_ok(keys, answered.request_id)
        keys.live -= {unanswered.request_id, answered.request_id}
        summary = await keys.recover()
        assert summary == (
            "released 1 and marked lost 1 idempotency claim(s) left by a stopped attempt; "
            "removed 0 expired idempotency key(s)"
        )
        assert {r["key"]: r["state"] for r in rows(keys)} == {"answered": "lost", "done": "done", "running": "running"}
        # A day later the answered keys have expired; the one still running has not (it has no age limit).
        keys.clock.advance(timedelta(hours=24, seconds=1))  # type: ignore[attr-defined]
        assert (await keys.recover()).endswith("removed 2 expired idempotency key(s)")
        assert [r["key"] for r in rows(keys)] == ["running"]
        await keys.release(running)

    run(main())


def test_an_expired_key_not_yet_pruned_runs_afresh(keys):
    async def main():
        first = await keys.claim("acme", "k1", "fp")
        await keys.finish(first, b"r")
        keys.clock.advance(timedelta(hours=24, seconds=1))  # type: ignore[attr-defined]
        # Even a different request may use it now: the key is forgotten.
        second = await keys.claim("acme", "k1", "another")
        assert second.reply is None and second.request_id

    run(main())


def test_the_pipeline_settles_under_the_claims_request_id_and_reports_how_it_ended(tmp_path):
    """The seam the service uses: AskInput.request_id names the spend record; `ended` hears the outcome."""
    h = harness(tmp_path)
    heard: list[object] = []

    async def ended(outcome):
        heard.append(outcome)

    async def main():
        out = await h.pipeline.ask(TENANT, AskInput("what is 2 + 2?", request_id="claimed-id"), ended=ended)
        assert out.request_id == "claimed-id" and heard == [out]
        with pytest.raises(InvalidRequest):
            await h.pipeline.ask(TENANT, AskInput("  ", request_id="other"), ended=ended)
        assert heard[-1] is None

    run(main())
    assert [r["request_id"] for r in h.records()] == ["claimed-id"]
    h.close()


def test_the_migration_adds_the_table_to_an_existing_database(tmp_path: pathlib.Path):
    path = tmp_path / "ponder.db"
    db = Database(sqlite3.connect(str(path), isolation_level=None))
    store_module.migrations.apply(db, stop_before="m006_idempotency_keys")
    assert "idempotency_keys" not in db.table_names()
    db.execute(
        "INSERT INTO tenants (name, budget_micros, window, window_start, created_at) VALUES ('acme', 5, 'day', ?, ?)",
        [iso(START), iso(START)],
    )
    db.close()
    # The daemon opens it as it opens any older file: pending migrations apply, the data stays.
    s = Store(path)
    s.open()
    try:
        assert s.call_sync(lambda db: [r["name"] for r in db.query("SELECT name FROM tenants")]) == ["acme"]
        keys = IdempotencyKeys(s, Ledger(ZoneInfo("UTC")), ManualClock(START), hours=1)
        assert run(keys.claim("acme", "k1", "fp")).request_id
        applied = s.call_sync(lambda db: [r["name"] for r in db.query("SELECT name FROM _sqlite_migrations")])
        assert "m006_idempotency_keys" in applied  # (and any later ones)
    finally:
        s.close()
