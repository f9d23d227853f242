"""API keys: issue, revoke, verify. Only a SHA-256 of each secret is stored.

A token reads `pnd_<key_id>_<secret>`. The key id finds the row; the secret's
hash is then compared in constant time. Secrets are 256 random bits, so a plain
SHA-256 (not a slow password hash) is the right tool: there is nothing to brute-force.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import pathlib
import secrets
import threading
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from ponderd.errors import PermissionDenied, Unauthenticated

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

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._keys: dict[str, _KeyEntry] = {}
        self._disabled: frozenset[str] = frozenset()
        self._tenants: frozenset[str] = frozenset()

    def load(self, keys: Iterable[Mapping[str, Any]], tenants: Mapping[str, bool]) -> None:
        """Swap in the active keys (key_id, scope, tenant, secret_sha256 in hex) and every tenant's enabled flag."""
        entries = {
            row["key_id"]: _KeyEntry(
                bytes.fromhex(row["secret_sha256"]), Principal(row["key_id"], row["scope"], row["tenant"])
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
        _check_enabled(entry.principal.tenant, disabled)
        return entry.principal

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
