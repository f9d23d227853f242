"""Client feedback on answers: stored with the request's prompt, so it can teach the classifier (risk/feedback.py reads it)."""

from __future__ import annotations

import secrets
from datetime import datetime

from sqlite_utils import Database

from ponderd.errors import InvalidRequest, NotFound
from ponderd.ledger.types import iso


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
    """Store one piece of feedback on the tenant's own request; return its id."""
    if correct is None and true_severity is None and true_needs_reasoning is None and not comment:
        raise InvalidRequest("empty feedback: set correct, true_severity, true_needs_reasoning or comment")
    row = db.execute("SELECT tenant FROM spend WHERE request_id = ?", [request_id]).fetchone()
    # Another tenant's request is reported as missing, so ids reveal nothing.
    if row is None or row[0] != tenant:
        raise NotFound(f"no request {request_id!r} for tenant {tenant!r}; use the request_id that Ask returned")
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
