"""API keys: issue, revoke, verify. Only a SHA-256 of each secret is stored.

A token reads `pnd_<key_id>_<secret>`. The key id finds the row; the secret's
hash is then compared in constant time. Secrets are 256 random bits, so a plain
SHA-256 (not a slow password hash) is the right tool: there is nothing to brute-force.

A key may expire (`expires_at`): from then on it is refused, saying when it
expired; rotation sets the old key's expiry to the end of the overlap. When a
key was last used is kept in memory here (`take_usage`) and written by the
`flush_key_usage` job, never by the request itself.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import pathlib
import secrets
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Iterable, Mapping

from ponderd.clock import Clock, SystemClock
from ponderd.errors import KeyExpired, PermissionDenied, Unauthenticated

PREFIX = "pnd"


@dataclass(frozen=True)
class Principal:
    """Who is calling: a tenant's key, or an admin key (no tenant)."""

    key_id: str
    scope: str
    tenant: str | None


@dataclass(frozen=True)
class _KeyEntry:
    secret_sha256: bytes
    principal: Principal
    expires_at: datetime | None = None


def as_instant(value: Any) -> datetime | None:
    """A stored instant (an ISO string from SQLite, a datetime from PostgreSQL, or None) as an aware datetime."""
    if value is None or value == "":
        return None
    when = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


def _iso(when: datetime) -> str:
    return when.astimezone(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_token() -> tuple[str, str, str]:
    """A fresh (key_id, secret, token)."""
    key_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    return key_id, secret, f"{PREFIX}_{key_id}_{secret}"


class Keyring:
    """An in-memory copy of the active keys and tenant states, refreshed after every change.

    Authentication runs on every call; reading it from memory keeps it off the
    database thread. The backend calls `load` after every change it commits (ledger/sqlite/keys.py: refresh).
    """

    def __init__(self, clock: Clock | None = None) -> None:
        self.clock = clock or SystemClock()
        self._lock = threading.Lock()
        self._keys: dict[str, _KeyEntry] = {}
        self._disabled: frozenset[str] = frozenset()
        self._tenants: frozenset[str] = frozenset()
        # key id -> when it last authenticated, since the last `take_usage`.
        self._used: dict[str, datetime] = {}

    def load(self, keys: Iterable[Mapping[str, Any]], tenants: Mapping[str, bool]) -> None:
        """Swap in the unrevoked keys (key_id, scope, tenant, secret_sha256 in hex, expires_at if any)
        and every tenant's enabled flag."""
        entries = {
            row["key_id"]: _KeyEntry(
                bytes.fromhex(row["secret_sha256"]), Principal(row["key_id"], row["scope"], row["tenant"]),
                as_instant(row.get("expires_at")),
            )
            for row in keys
        }
        disabled = frozenset(name for name, enabled in tenants.items() if not enabled)
        with self._lock:
            self._keys, self._disabled, self._tenants = entries, disabled, frozenset(tenants)

    def authenticate(self, authorization: str | None) -> Principal:
        """Map an `authorization` metadata value to a principal, or raise."""
        if not authorization:
            raise Unauthenticated(
                "missing credentials: send metadata 'authorization: Bearer <token>' "
                "(the CLI reads PONDER_TOKEN or the state directory's local.token)"
            )
        scheme, _, token = authorization.partition(" ")
        parts = token.strip().split("_", 2)
        if scheme.lower() != "bearer" or len(parts) != 3 or parts[0] != PREFIX:
            raise Unauthenticated("malformed credentials: expected 'Bearer pnd_<key id>_<secret>'")
        with self._lock:
            entry = self._keys.get(parts[1])
            disabled = self._disabled
        # Hash even when the key id is unknown, so both paths cost the same.
        presented = hashlib.sha256(parts[2].encode()).digest()
        expected = entry.secret_sha256 if entry else b"\0" * 32
        if not hmac.compare_digest(presented, expected) or entry is None:
            raise Unauthenticated("unknown or revoked token: ask an admin for a new key")
        now = self.clock.now()
        if entry.expires_at is not None and now >= entry.expires_at:
            raise KeyExpired(
                f"key {entry.principal.key_id} expired at {_iso(entry.expires_at)}; ask an admin for a new key "
                "('ponder admin key issue' or 'ponder admin key rotate')"
            )
        _check_enabled(entry.principal.tenant, disabled)
        with self._lock:
            self._used[entry.principal.key_id] = now
        return entry.principal

    def take_usage(self) -> dict[str, datetime]:
        """When each key was last used since the previous call (the flush job writes these), and forget them."""
        with self._lock:
            used, self._used = self._used, {}
        return used

    def restore_usage(self, used: Mapping[str, datetime]) -> None:
        """Put back usage a flush could not write, keeping any newer use."""
        with self._lock:
            for key_id, when in used.items():
                if key_id not in self._used or self._used[key_id] < when:
                    self._used[key_id] = when

    def certificate(self, identity: str, tenant: str) -> Principal:
        """The principal of a verified client certificate that [tls] identities maps to `tenant`."""
        with self._lock:
            known, disabled = tenant in self._tenants, self._disabled
        if not known:
            raise PermissionDenied(
                f"client certificate {identity!r} is mapped to tenant {tenant!r}, which does not exist; "
                "create it ('ponder admin tenant create') or fix [tls] identities"
            )
        _check_enabled(tenant, disabled)
        # Shown as the acting key in logs; never a key in the keys table.
        return Principal(f"cert:{identity}", "tenant", tenant)


def _check_enabled(tenant: str | None, disabled: frozenset[str]) -> None:
    if tenant in disabled:
        raise PermissionDenied(
            f"tenant {tenant!r} is disabled; an admin can enable it with 'ponder admin tenant enable'"
        )


def write_credential(path: pathlib.Path, token: str) -> None:
    """Write a token file readable by its owner only (0600), atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(token + "\n")
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
