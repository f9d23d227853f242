"""Idempotency keys, whatever the backend: the key's rules, a request's fingerprint, the seam (a Protocol).

The table of what a claim returns, and the SQLite implementation, are in ledger/sqlite/idempotency.py.
"""


from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Protocol

from google.protobuf import message

from ponderd.errors import InvalidRequest

MAX_KEY_LENGTH = 128


def check_key(key: str) -> None:
    """Refuse a key that is too long or not printable ASCII (empty: no key, allowed)."""
    if len(key) > MAX_KEY_LENGTH:
        raise InvalidRequest(
            f"idempotency_key is {len(key)} characters long; use at most {MAX_KEY_LENGTH} (a UUID is 36)"
        )
    bad = next((i for i, c in enumerate(key) if not " " <= c <= "~"), None)
    if bad is not None:
        raise InvalidRequest(
            f"idempotency_key has a character that is not printable ASCII at position {bad} ({key[bad]!r}); "
            "use letters, digits and punctuation only, e.g. a UUID"
        )


def fingerprint(request: message.Message) -> str:
    """SHA-256 of the request's fields without its key: what "the same request" means.

    Ask and AskStream requests with the same fields serialize alike, so either
    method may repeat the other's request.
    """
    bare = type(request)()
    bare.CopyFrom(request)
    bare.ClearField("idempotency_key")  # type: ignore[arg-type]
    return hashlib.sha256(bare.SerializeToString(deterministic=True)).hexdigest()


@dataclass(frozen=True)
class Attempt:
    """A claimed key: either a new attempt to run under `request_id`, or the stored `reply` to send again."""

    tenant: str
    key: str
    request_id: str = ""
    reply: bytes | None = None


class Recoverable(Protocol):
    """What the prune_idempotency job asks of the keys' backend."""

    async def recover(self) -> str:
        """Resolve claims no attempt runs (their process stopped) and drop expired keys; say what was done."""


class Idempotency(Protocol):
    """The seam the Ponder service uses; SQLite today (IdempotencyKeys)."""

    @property
    def enabled(self) -> bool:
        """False when keys are off (`idempotency_hours = 0`): requests run as if they had none."""

    async def claim(self, tenant: str, key: str, fingerprint: str, request_id: str = "") -> Attempt:
        """Claim the key for a new attempt (run under `request_id`; "": a fresh one), or return the stored reply (see the module's table)."""

    async def finish(self, attempt: Attempt, reply: bytes) -> None:
        """Keep the attempt's answer for repeats of its key."""

    async def release(self, attempt: Attempt) -> None:
        """Free the key: the attempt ended without an answer."""
