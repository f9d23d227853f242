"""Idempotency keys: an Ask or AskStream repeated with the same key is answered once and charged once.

The Python client sends a fresh key with every ask, so when gRPC retries a
call on UNAVAILABLE (the daemon drained or stopped after it had charged but
before the reply reached the client) the retry gets the stored answer back
instead of running, and being charged, again.

This module owns the `idempotency_keys` table (store.py m006): one row per
tenant and key, holding the request's fingerprint, the attempt running under
the key and, once it is answered, the serialized AskResponse.

    claim(tenant, key, fingerprint)
      no row, or an expired one      -> a new attempt: row `running` with a fresh request id
      same request, `done`           -> the stored reply (nothing runs, nothing is charged)
      a different request            -> InvalidRequest
      `running`, an attempt of ours  -> KeyInUse (ABORTED)
      `running`, nobody runs it      -> the process that ran it stopped: its spend record
                                        decides: settled `ok` -> `lost`; else taken over
      `lost`                         -> ReplyLost (FAILED_PRECONDITION)
    finish(attempt, reply)           -> `done`, with the reply
    release(attempt)                 -> the row is deleted: the next try runs afresh

The attempt's request id is chosen here, before it reserves, and the pipeline
settles under it (AskInput.request_id). So the spend record, written in the
same transaction as the charge, is the durable proof that an attempt was
answered and charged: if the process dies between the settle and `finish`
(a window of one database call), the claim it leaves is resolved as `lost`,
never released, and a retry is told so rather than charged twice.
"""

from __future__ import annotations

import logging
import secrets
from datetime import datetime, timedelta
from typing import Callable

from sqlite_utils import Database

from ponderd.clock import Clock
from ponderd.errors import InvalidRequest, KeyInUse, ReplyLost, StorageUnavailable
from ponderd.ledger.idempotency import Attempt
from ponderd.ledger.sqlite.ledger import Ledger
from ponderd.ledger.sqlite.store import Store
from ponderd.ledger.types import iso

log = logging.getLogger("ponder.idempotency")


class IdempotencyKeys:
    """Idempotency keys on the store's owner thread, kept `hours` after they were first used."""

    def __init__(
        self, store: Store, ledger: Ledger, clock: Clock, hours: int, owned: Callable[[], set[str]] = set,
    ) -> None:
        """`owned`: request ids still settling elsewhere (settlements waiting for the disk): not stale."""
        self.store, self.ledger, self.clock, self.hours = store, ledger, clock, hours
        self.owned = owned
        # Request ids of the attempts this process runs now: their claims are not stale.
        self.live: set[str] = set()

    @property
    def enabled(self) -> bool:
        return self.hours > 0

    def _busy(self) -> set[str]:
        return self.live | self.owned()

    async def claim(self, tenant: str, key: str, fingerprint: str, request_id: str = "") -> Attempt:
        request_id = request_id or secrets.token_hex(12)
        now = self.clock.now()
        # Live before the row exists: a concurrent claim of the same key must see it as running.
        self.live.add(request_id)
        try:
            outcome, value = await self.store.call(
                _claim, self.ledger, tenant, key, fingerprint, request_id, now, now + timedelta(hours=self.hours),
                self._busy(),
            )
        except BaseException:
            self.live.discard(request_id)
            raise
        if outcome == "claimed":
            return Attempt(tenant, key, request_id)
        self.live.discard(request_id)
        if isinstance(value, bytes):
            return Attempt(tenant, key, reply=value)
        raise ReplyLost(
            f"the request with idempotency key {key!r} was answered and charged (request {value}), but the daemon "
            "stopped before it kept the reply; its answer is in the spend records under that request id. "
            "Ask again with a new key to get a new answer (it will be charged)",
            key, str(value),
        )

    async def finish(self, attempt: Attempt, reply: bytes) -> None:
        try:
            await self.store.call(_finish, attempt.tenant, attempt.key, attempt.request_id, reply)
        except StorageUnavailable as exc:
            # The answer still goes to the caller; a repeat finds the claim stale and its spend record `ok`: `lost`.
            log.warning("request %s: its reply could not be kept for its idempotency key: %s", attempt.request_id, exc.message)
        finally:
            self.live.discard(attempt.request_id)

    async def release(self, attempt: Attempt) -> None:
        try:
            await self.store.call(_release, attempt.tenant, attempt.key, attempt.request_id)
        except StorageUnavailable as exc:
            # The claim is stale once this attempt is no longer live: the next claim takes it over.
            log.warning("request %s: its idempotency key could not be freed: %s", attempt.request_id, exc.message)
        finally:
            self.live.discard(attempt.request_id)

    async def recover(self) -> str:
        """Resolve claims no attempt runs (their process stopped) and drop expired keys: start-up and the job."""
        resolved = await self.store.call(_recover, self.ledger, self._busy())
        pruned = await self.store.call(_prune, self.clock.now())
        return (
            f"released {resolved[0]} and marked lost {resolved[1]} idempotency claim(s) left by a stopped attempt; "
            f"removed {pruned} expired idempotency key(s)"
        )


# SQL: everything below runs on the store's owner thread.


def _claim(
    db: Database, ledger: Ledger, tenant: str, key: str, fingerprint: str, request_id: str,
    now: datetime, expires: datetime, busy: set[str],
) -> tuple[str, bytes | str | None]:
    with db.atomic():
        row = db.execute(
            "SELECT fingerprint, state, request_id, reply, expires_at FROM idempotency_keys WHERE tenant = ? AND key = ?",
            [tenant, key],
        ).fetchone()
        # A running claim never expires by age: its attempt decides when it ends.
        if row is not None and (row[1] == "running" or row[4] > iso(now)):
            known, state, owner, reply = row[0], row[1], row[2], row[3]
            if known != fingerprint:
                raise InvalidRequest(
                    f"idempotency key {key!r} was used for a different request (its prompt, system, hints, seed, "
                    "explain or check differ); use a new key per request"
                )
            if state == "done":
                return "replay", bytes(reply)
            if state == "running" and owner in busy:
                raise KeyInUse(
                    f"a request with idempotency key {key!r} is still running; wait for it (retry later) or use a new key",
                    key,
                )
            if state == "lost" or ledger.status_of(db, owner) == "ok":
                db.execute(
                    "UPDATE idempotency_keys SET state = 'lost' WHERE tenant = ? AND key = ?", [tenant, key]
                )
                return "lost", owner
            log.info("idempotency key of request %s: its attempt ended without an answer; retrying it", owner)
        db.execute(
            """INSERT OR REPLACE INTO idempotency_keys
               (tenant, key, fingerprint, state, request_id, reply, created_at, expires_at)
               VALUES (?, ?, ?, 'running', ?, NULL, ?, ?)""",
            [tenant, key, fingerprint, request_id, iso(now), iso(expires)],
        )
    return "claimed", None


def _finish(db: Database, tenant: str, key: str, request_id: str, reply: bytes) -> None:
    db.execute(
        "UPDATE idempotency_keys SET state = 'done', reply = ? WHERE tenant = ? AND key = ? AND request_id = ?",
        [reply, tenant, key, request_id],
    )


def _release(db: Database, tenant: str, key: str, request_id: str) -> None:
    # Only this attempt's own claim: the row may have been taken over since.
    db.execute(
        "DELETE FROM idempotency_keys WHERE tenant = ? AND key = ? AND request_id = ? AND state = 'running'",
        [tenant, key, request_id],
    )


def _recover(db: Database, ledger: Ledger, busy: set[str]) -> tuple[int, int]:
    released = lost = 0
    with db.atomic():
        for tenant, key, owner in list(
            db.execute("SELECT tenant, key, request_id FROM idempotency_keys WHERE state = 'running'")
        ):
            if owner in busy:
                continue
            if ledger.status_of(db, owner) == "ok":
                db.execute("UPDATE idempotency_keys SET state = 'lost' WHERE tenant = ? AND key = ?", [tenant, key])
                lost += 1
            else:
                db.execute("DELETE FROM idempotency_keys WHERE tenant = ? AND key = ?", [tenant, key])
                released += 1
    return released, lost


def _prune(db: Database, now: datetime) -> int:
    return int(
        db.execute(
            "DELETE FROM idempotency_keys WHERE expires_at < ? AND state != 'running'", [iso(now)]
        ).rowcount
    )
