"""Client feedback on answers: stored with the request's prompt, so it can teach the classifier (risk/feedback.py reads it)."""

from __future__ import annotations

import secrets
from datetime import datetime

from sqlite_utils import Database

from ponderd.errors import InvalidRequest, NotFound
from ponderd.ledger.types import iso

# A request id may be shortened, as git's object ids are, to a prefix this long
# that starts exactly one of the tenant's own requests.
MIN_PREFIX = 6
# An ambiguous prefix's message lists at most this many of the requests it starts.
SHOWN = 5


def resolve(db: Database, tenant: str, given: str) -> str:
    """The tenant's request whose id is `given`, or the only one whose id starts with it (at least MIN_PREFIX long).

    Only the tenant's own requests are looked at: another tenant's id, or a
    prefix that only another tenant's requests share, is not found, so ids reveal nothing.
    """
    if not given:
        raise InvalidRequest("request_id is empty: give the request_id that Ask returned (or its first 6 characters or more)")
    row = db.execute("SELECT tenant FROM spend WHERE request_id = ?", [given]).fetchone()
    if row is not None and row[0] == tenant:
        return given
    matches: list[tuple[str, str]] = []
    if len(given) >= MIN_PREFIX:
        matches = _starting_with(db, tenant, given, SHOWN + 1)
    if not matches:
        short = f" (a prefix needs at least {MIN_PREFIX} characters)" if len(given) < MIN_PREFIX else ""
        raise NotFound(
            f"no request {given!r} for tenant {tenant!r}, and none whose id starts with it{short}; "
            "use the request_id that Ask returned, or a prefix of it"
        )
    if len(matches) == 1:
        return str(matches[0][0])
    total = len(matches) if len(matches) <= SHOWN else len(_starting_with(db, tenant, given, None))
    listed = ", ".join(f"{rid} (at {at[:16].replace('T', ' ')} UTC)" for rid, at in matches[:SHOWN])
    more = f" and {total - SHOWN} more" if total > SHOWN else ""
    raise InvalidRequest(
        f"request id prefix {given!r} is ambiguous: it starts {total} of your requests (tenant {tenant!r}): "
        f"{listed}{more}; give more of the request id"
    )


def _starting_with(db: Database, tenant: str, prefix: str, limit: int | None) -> list[tuple[str, str]]:
    """The tenant's requests (id, time) whose id starts with `prefix`, newest first."""
    # A range over the primary key, so only the ids that start with `prefix` are read.
    sql = "SELECT request_id, at FROM spend WHERE request_id >= ? AND substr(request_id, 1, ?) = ? AND tenant = ?"
    params: list[object] = [prefix, len(prefix), prefix, tenant]
    upper = _after_prefix(prefix)
    if upper is not None:
        sql += " AND request_id < ?"
        params.append(upper)
    sql += " ORDER BY at DESC, request_id"
    if limit is not None:
        sql += " LIMIT ?"
        params.append(limit)
    return [(str(rid), str(at)) for rid, at in db.execute(sql, params).fetchall()]


def _after_prefix(prefix: str) -> str | None:
    """The least string above every string that starts with `prefix` (SQLite compares text bytewise), if simple."""
    last = ord(prefix[-1])
    if last >= 0x10FFFF or 0xD7FF <= last < 0xE000:
        return None  # no plain successor (never so for hex ids): the substr check alone bounds the match
    return prefix[:-1] + chr(last + 1)


def record(
    db: Database,
    tenant: str,
    request_id: str,
    correct: bool | None,
    true_severity: str | None,
    true_needs_reasoning: bool | None,
    comment: str,
    now: datetime,
) -> str:
    """Store one piece of feedback on the tenant's own request (its id, or a unique prefix of it); return its id."""
    if correct is None and true_severity is None and true_needs_reasoning is None and not comment:
        raise InvalidRequest("empty feedback: set correct, true_severity, true_needs_reasoning or comment")
    request_id = resolve(db, tenant, request_id)
    prompt = db.execute("SELECT text FROM prompts WHERE request_id = ?", [request_id]).fetchone()
    feedback_id = secrets.token_hex(8)
    db.table("feedback").insert(
        {
            "feedback_id": feedback_id,
            "request_id": request_id,
            "tenant": tenant,
            "at": iso(now),
            "correct": None if correct is None else int(correct),
            "true_severity": true_severity,
            "true_needs_reasoning": None if true_needs_reasoning is None else int(true_needs_reasoning),
            "comment": comment,
            "text": prompt[0] if prompt else None,
        }
    )
    return feedback_id
