"""API keys in SQLite: issue, rotate, revoke, list, record use; the rows the Keyring verifies against."""


from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Mapping

from sqlite_utils import Database

from ponderd.errors import InvalidRequest, NotFound
from ponderd.ledger.keys import Keyring, _hash, as_instant, new_token
from ponderd.ledger.types import iso


def issue_key(
    db: Database, tenant: str | None, scope: str, label: str, now: datetime, expires_at: datetime | None = None,
    budget_micros: int | None = None,
) -> tuple[str, str]:
    """Store a new key's hash; return (key_id, token). The token is never stored.

    `budget_micros`: the key's own cap per its tenant's window (None: none, only the tenant's budget).
    """
    if scope not in ("tenant", "admin"):
        raise ValueError("scope must be 'tenant' or 'admin'")
    if budget_micros is not None and scope != "tenant":
        raise InvalidRequest("only a tenant's key can have a budget cap; drop --budget for an admin key")
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
            "expires_at": iso(expires_at) if expires_at else None,
            "budget_micros": budget_micros,
        }
    )
    return key_id, token


def set_key_budget(db: Database, key_id: str, budget_micros: int | None) -> dict[str, Any]:
    """Give a tenant's key a cap of its own (None: remove it); return its row.

    What it spent this window still counts: a cap below that lets no new request through until the window
    restarts. Open reservations made under no cap stay outside the key's count (they settle against the tenant).
    """
    with db.atomic():
        rows = list(db.query("SELECT * FROM keys WHERE key_id = ? AND revoked_at IS NULL", [key_id]))
        if not rows:
            raise NotFound(f"no active key {key_id!r}; 'ponder admin key list' shows them")
        if rows[0]["scope"] != "tenant":
            raise InvalidRequest(f"key {key_id!r} is an admin key; only a tenant's key can have a budget cap")
        db.table("keys").update(key_id, {"budget_micros": budget_micros})
        return dict(db.table("keys").get(key_id))


def rotate_key(
    db: Database, key_id: str, overlap: timedelta, expires_at: datetime | None, now: datetime
) -> dict[str, Any]:
    """Issue a successor (same tenant, scope, label) and let the old key expire at the end of the overlap.

    The successor expires at `expires_at`, or, when None, after the old key's
    lifetime if it had one. Returns key_id, token, expires_at (the new key's),
    old_key_id and old_expires_at.
    """
    with db.atomic():
        rows = list(db.query("SELECT * FROM keys WHERE key_id = ? AND revoked_at IS NULL", [key_id]))
        old = rows[0] if rows else None
        old_expiry = as_instant(old["expires_at"]) if old else None
        if old is None or (old_expiry is not None and old_expiry <= now):
            raise NotFound(f"no active key {key_id!r} to rotate; 'ponder admin key list' shows them")
        if old["replaced_by"]:
            raise NotFound(
                f"key {key_id!r} was rotated already (to {old['replaced_by']}); rotate that one instead"
            )
        if expires_at is None and old_expiry is not None:
            expires_at = now + (old_expiry - as_instant(old["created_at"]))  # type: ignore[operator]
        new_id, token = issue_key(db, old["tenant"], old["scope"], old["label"], now, expires_at)
        if old.get("budget_micros") is not None:
            # The successor keeps the cap and starts from what the old key spent this window (so a
            # rotation never refills a cap); each key's own requests settle against that key.
            db.table("keys").update(
                new_id, {"budget_micros": old["budget_micros"], "spent_micros": old["spent_micros"]}
            )
        end = now + overlap
        if old_expiry is not None:
            end = min(end, old_expiry)
        changes: dict[str, Any] = {"replaced_by": new_id, "expires_at": iso(end)}
        if overlap <= timedelta(0):
            changes["revoked_at"] = iso(now)
        db.table("keys").update(key_id, changes)
    return {"key_id": new_id, "token": token, "expires_at": expires_at, "old_key_id": key_id, "old_expires_at": end}


def revoke_key(db: Database, key_id: str, now: datetime) -> None:
    if not db["keys"].count_where("key_id = ? AND revoked_at IS NULL", [key_id]):
        raise NotFound(f"no active key {key_id!r}; 'ponder admin key list' shows them")
    db.table("keys").update(key_id, {"revoked_at": iso(now)})


def record_use(db: Database, used: Mapping[str, datetime]) -> int:
    """Write when keys were last used (a batch from the keyring), never moving a time back; return rows changed."""
    with db.atomic():
        before = db.conn.total_changes
        db.conn.executemany(
            "UPDATE keys SET last_used_at = ? WHERE key_id = ? AND (last_used_at IS NULL OR last_used_at < ?)",
            [[iso(when), key_id, iso(when)] for key_id, when in used.items()],
        )
        return db.conn.total_changes - before


def list_keys(db: Database, tenant: str | None) -> list[dict[str, Any]]:
    if tenant:
        return list(db.query("SELECT * FROM keys WHERE tenant = ? ORDER BY created_at", [tenant]))
    return list(db.query("SELECT * FROM keys ORDER BY created_at"))


def refresh(keyring: Keyring, db: Database) -> None:
    """Load the keyring from the keys and tenants tables (after every change, on the store's thread)."""
    keyring.load(
        db.query("SELECT key_id, scope, tenant, secret_sha256, expires_at FROM keys WHERE revoked_at IS NULL"),
        {r["name"]: bool(r["enabled"]) for r in db.query("SELECT name, enabled FROM tenants")},
    )
