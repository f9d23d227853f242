"""Idempotency keys across the fleet: a key's claim is central, so a retry on another host never runs twice.

The same table of outcomes as a single host's (ledger/sqlite/idempotency.py),
with one more case: a claim that is `running` on another host. While that host
is alive (it refreshes `heartbeat_at` for its running claims every sync), the
repeat waits for it and then gets its stored reply; once its heartbeat is
older than `stale_seconds`, the claim is settled by the central spend record,
as a single host settles a claim its stopped process left: charged `ok` means
`lost`, anything else is taken over.

While the central ledger is unreachable, claims fall back to this host's own
file: a repeat on this host is still answered once, and one on another host
cannot be recognised until the ledger is back (docs/operations.md says so).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from datetime import timedelta
from typing import Any

from ponderd.clock import Clock
from ponderd.errors import InvalidRequest, KeyInUse, ReplyLost
from ponderd.ledger.idempotency import Attempt
from ponderd.ledger.postgres.fleet import UNREACHABLE, Fleet
from ponderd.ledger.sqlite.idempotency import IdempotencyKeys

log = logging.getLogger("ponder.idempotency")


class CentralIdempotency:
    """Idempotency (ledger/idempotency.py) and Recoverable on the central ledger, this host's file as the fallback."""

    def __init__(
        self, fleet: Fleet, local: IdempotencyKeys, clock: Clock, hours: int, wait_seconds: float = 60.0,
    ) -> None:
        self.fleet, self.local, self.clock, self.hours = fleet, local, clock, hours
        self.wait_seconds = wait_seconds
        # A claim on another host is dead once it has not been refreshed for this long.
        self.stale_seconds = max(3 * fleet.settings.sync_seconds, 5.0)
        self.live: set[str] = set()
        self._local_attempts: set[str] = set()
        fleet.heartbeats = lambda: set(self.live)

    @property
    def enabled(self) -> bool:
        return self.hours > 0

    async def claim(self, tenant: str, key: str, fingerprint: str, request_id: str = "") -> Attempt:
        request_id = request_id or secrets.token_hex(12)
        self.live.add(request_id)
        deadline = time.monotonic() + self.wait_seconds
        try:
            while True:
                try:
                    outcome, value = await asyncio.shield(self._claim(tenant, key, fingerprint, request_id))
                except UNREACHABLE:
                    self.live.discard(request_id)
                    attempt = await self.local.claim(tenant, key, fingerprint, request_id)
                    if attempt.reply is None:
                        self._local_attempts.add(attempt.request_id)
                    return attempt
                if outcome != "waiting":
                    break
                if time.monotonic() > deadline:
                    raise KeyInUse(
                        f"a request with idempotency key {key!r} is still running on host {value}; wait for it "
                        "(retry later) or use a new key", key,
                    )
                await asyncio.sleep(0.1)
        except BaseException:
            self.live.discard(request_id)
            raise
        if outcome == "claimed":
            return Attempt(tenant, key, request_id)
        self.live.discard(request_id)
        if isinstance(value, bytes):
            return Attempt(tenant, key, reply=value)
        raise ReplyLost(
            f"the request with idempotency key {key!r} was answered and charged (request {value}), but its host "
            "stopped before it kept the reply; its answer is in the spend records under that request id. "
            "Ask again with a new key to get a new answer (it will be charged)",
            key, str(value),
        )

    async def _claim(self, tenant: str, key: str, fingerprint: str, request_id: str) -> tuple[str, Any]:
        now = self.clock.now()
        async with self.fleet.pool.connection(timeout=2) as conn:
            async with conn.transaction():
                row = await (await conn.execute(
                    "SELECT * FROM idempotency_keys WHERE tenant = %s AND key = %s FOR UPDATE", [tenant, key]
                )).fetchone()
                if row is not None and (row["state"] == "running" or row["expires_at"] > now):
                    if row["fingerprint"] != fingerprint:
                        raise InvalidRequest(
                            f"idempotency key {key!r} was used for a different request (its prompt, system, hints, "
                            "seed, explain or check differ); use a new key per request"
                        )
                    if row["state"] == "done":
                        return "replay", bytes(row["reply"])
                    owner, host = row["request_id"], row["host_id"]
                    if row["state"] == "running":
                        if host == self.fleet.host and owner in self.live | self.local.owned():
                            raise KeyInUse(
                                f"a request with idempotency key {key!r} is still running; wait for it (retry later) "
                                "or use a new key", key,
                            )
                        alive = now - row["heartbeat_at"] < timedelta(seconds=self.stale_seconds)
                        if host != self.fleet.host and alive:
                            return "waiting", host
                    charged = await (await conn.execute(
                        "SELECT status FROM spend WHERE request_id = %s", [owner])).fetchone()
                    ok = bool(charged and charged["status"] == "ok")
                    if not ok and host == self.fleet.host:  # settled here, perhaps not shipped yet
                        ok = await self.local.store.call(self.local.ledger.status_of, owner) == "ok"
                    if row["state"] == "lost" or ok:
                        await conn.execute(
                            "UPDATE idempotency_keys SET state = 'lost' WHERE tenant = %s AND key = %s", [tenant, key])
                        return "lost", owner
                    log.info("idempotency key of request %s: its attempt ended without an answer; retrying it", owner)
                await conn.execute(
                    """INSERT INTO idempotency_keys (tenant, key, fingerprint, state, request_id, host_id, reply,
                           created_at, heartbeat_at, expires_at)
                       VALUES (%s, %s, %s, 'running', %s, %s, NULL, %s, %s, %s)
                       ON CONFLICT (tenant, key) DO UPDATE SET fingerprint = EXCLUDED.fingerprint, state = 'running',
                           request_id = EXCLUDED.request_id, host_id = EXCLUDED.host_id, reply = NULL,
                           created_at = EXCLUDED.created_at, heartbeat_at = EXCLUDED.heartbeat_at,
                           expires_at = EXCLUDED.expires_at""",
                    [tenant, key, fingerprint, request_id, self.fleet.host, now, now,
                     now + timedelta(hours=self.hours)],
                )
        return "claimed", None

    async def finish(self, attempt: Attempt, reply: bytes) -> None:
        if attempt.request_id in self._local_attempts:
            self._local_attempts.discard(attempt.request_id)
            return await self.local.finish(attempt, reply)
        try:
            async with self.fleet.pool.connection(timeout=2) as conn:
                await conn.execute(
                    "UPDATE idempotency_keys SET state = 'done', reply = %s "
                    "WHERE tenant = %s AND key = %s AND request_id = %s",
                    [reply, attempt.tenant, attempt.key, attempt.request_id],
                )
        except UNREACHABLE as exc:
            # The answer still goes to the caller; a repeat finds the claim stale and its spend record `ok`: `lost`.
            log.warning("request %s: its reply could not be kept for its idempotency key: %s", attempt.request_id, exc)
        finally:
            self.live.discard(attempt.request_id)

    async def release(self, attempt: Attempt) -> None:
        if attempt.request_id in self._local_attempts:
            self._local_attempts.discard(attempt.request_id)
            return await self.local.release(attempt)
        try:
            async with self.fleet.pool.connection(timeout=2) as conn:
                await conn.execute(
                    "DELETE FROM idempotency_keys WHERE tenant = %s AND key = %s AND request_id = %s AND state = 'running'",
                    [attempt.tenant, attempt.key, attempt.request_id],
                )
        except UNREACHABLE as exc:
            log.warning("request %s: its idempotency key could not be freed: %s", attempt.request_id, exc)
        finally:
            self.live.discard(attempt.request_id)

    async def recover(self) -> str:
        """Drop expired keys centrally (claims this host left are settled by the next claim); recover the local file."""
        local = await self.local.recover()
        try:
            async with self.fleet.pool.connection(timeout=5) as conn:
                cur = await conn.execute(
                    "DELETE FROM idempotency_keys WHERE expires_at < %s AND state != 'running'", [self.clock.now()]
                )
            return f"{local}; removed {cur.rowcount} expired fleet idempotency key(s)"
        except UNREACHABLE as exc:
            return f"{local}; the central ledger is unreachable ({exc}): its expired keys wait"

