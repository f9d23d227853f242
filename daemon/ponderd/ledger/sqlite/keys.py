"""API keys in SQLite: issue, revoke, list; the rows the Keyring verifies against."""


from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlite_utils import Database

from ponderd.errors import NotFound
from ponderd.ledger.keys import Keyring, _hash, new_token
from ponderd.ledger.types import iso


def issue_key(db: Database, tenant: str | None, scope: str, label: str, now: datetime) -> tuple[str, str]:
    """Store a new key's hash; return (key_id, token). The token is never stored."""
    if scope not in ("tenant", "admin"):
        raise ValueError("scope must be 'tenant' or 'admin'")
    if scope == "tenant" and not db["tenants"].count_where("name = ?", [tenant]):
        raise NotFound(f"no tenant named {tenant!r}")
    key_id, secret, token = new_token()
    db.table("keys").insert(
        {
            "key_id": key_id,
            "tenant": tenant if scope == "tenant" else None,
            "scope": scope,
            "secret_sha256": _hash(secret),
            "label": label,
            "created_at": iso(now),
            "revoked_at": None,
        }
    )
    return key_id, token


def revoke_key(db: Database, key_id: str, now: datetime) -> None:
    if not db["keys"].count_where("key_id = ? AND revoked_at IS NULL", [key_id]):
        raise NotFound(f"no active key {key_id!r}; 'ponder admin key list' shows them")
    db.table("keys").update(key_id, {"revoked_at": iso(now)})


def list_keys(db: Database, tenant: str | None) -> list[dict[str, Any]]:
    if tenant:
        return list(db.query("SELECT * FROM keys WHERE tenant = ? ORDER BY created_at", [tenant]))
    return list(db.query("SELECT * FROM keys ORDER BY created_at"))


def refresh(keyring: Keyring, db: Database) -> None:
    """Load the keyring from the keys and tenants tables (after every change, on the store's thread)."""
    keyring.load(
        db.query("SELECT key_id, scope, tenant, secret_sha256 FROM keys WHERE revoked_at IS NULL"),
        {r["name"]: bool(r["enabled"]) for r in db.query("SELECT name, enabled FROM tenants")},
    )
