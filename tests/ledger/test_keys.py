"""API keys: only hashes stored, constant-time comparison, clear refusals."""

import hmac
from datetime import datetime, timezone

import pytest

from ponderd.errors import PermissionDenied, Unauthenticated
from ponderd.ledger.keys import Keyring, write_credential
from ponderd.ledger.sqlite.keys import issue_key, refresh, revoke_key
from ponderd.ledger.sqlite.ledger import Ledger
from ponderd.ledger.sqlite.store import connect

NOW = datetime(2026, 3, 2, tzinfo=timezone.utc)


@pytest.fixture
def db(tmp_path):
    db = connect(tmp_path / "p.db")
    Ledger(timezone.utc).create_tenant(db, "acme", 1_000_000, "day", NOW)
    return db


def test_only_the_secrets_hash_is_stored(db):
    key_id, token = issue_key(db, "acme", "tenant", "ci", NOW)
    secret = token.split("_", 2)[2]
    dump = "\n".join(db.conn.iterdump())
    assert token.startswith(f"pnd_{key_id}_") and secret not in dump and token not in dump


def test_authenticate_maps_token_to_principal(db):
    _, token = issue_key(db, "acme", "tenant", "", NOW)
    _, admin = issue_key(db, None, "admin", "", NOW)
    ring = Keyring()
    refresh(ring, db)
    who = ring.authenticate(f"Bearer {token}")
    assert (who.tenant, who.scope) == ("acme", "tenant")
    assert ring.authenticate(f"bearer {admin}").scope == "admin"


def test_comparison_is_constant_time(db, monkeypatch):
    _, token = issue_key(db, "acme", "tenant", "", NOW)
    ring = Keyring()
    refresh(ring, db)
    calls = []
    real = hmac.compare_digest
    monkeypatch.setattr(hmac, "compare_digest", lambda a, b: calls.append((a, b)) or real(a, b))
    ring.authenticate(f"Bearer {token}")
    with pytest.raises(Unauthenticated):
        ring.authenticate("Bearer pnd_000000000000_wrong")  # unknown key id: still one comparison
    assert len(calls) == 2


@pytest.mark.parametrize(
    "header, message",
    [
        (None, "missing credentials"),
        ("", "missing credentials"),
        ("Basic abc", "malformed credentials"),
        ("Bearer nothing", "malformed credentials"),
        ("Bearer pnd_abc_def", "unknown or revoked token"),
    ],
)
def test_bad_credentials_are_unauthenticated(db, header, message):
    ring = Keyring()
    refresh(ring, db)
    with pytest.raises(Unauthenticated, match=message):
        ring.authenticate(header)


def test_revoked_key_and_disabled_tenant(db):
    key_id, token = issue_key(db, "acme", "tenant", "", NOW)
    ring = Keyring()
    db["tenants"].update("acme", {"enabled": 0})
    refresh(ring, db)
    with pytest.raises(PermissionDenied, match="tenant 'acme' is disabled"):
        ring.authenticate(f"Bearer {token}")
    revoke_key(db, key_id, NOW)
    refresh(ring, db)
    with pytest.raises(Unauthenticated, match="unknown or revoked"):
        ring.authenticate(f"Bearer {token}")


def test_credential_file_is_owner_only(tmp_path):
    path = tmp_path / "sub" / "local.token"
    write_credential(path, "pnd_x_y")
    assert path.read_text() == "pnd_x_y\n"
    assert path.stat().st_mode & 0o777 == 0o600
