"""Labeled feedback as training examples for the retrainer (ledger/sqlite/feedback.py stores it)."""

from __future__ import annotations

from typing import Any

from sqlite_utils import Database

from ponderd.risk.corpus import Example


def labeled_examples(db: Database) -> list[Example]:
    """Feedback that carries a true label and its prompt, newest per request.

    A missing axis takes the classifier's own verdict at the time, so a label
    on one axis never invents a correction on the other.
    """
    rows: list[dict[str, Any]] = list(
        db.query(
            """SELECT f.request_id, f.text, f.true_severity, f.true_needs_reasoning,
                      s.model_severity, s.model_needs_reasoning
               FROM feedback f JOIN spend s ON s.request_id = f.request_id
               WHERE f.text IS NOT NULL
                 AND (f.true_severity IS NOT NULL OR f.true_needs_reasoning IS NOT NULL)
               ORDER BY f.at"""
        )
    )
    latest = {r["request_id"]: r for r in rows}
    return [
        Example(
            r["text"],
            r["true_severity"] or r["model_severity"],
            bool(r["model_needs_reasoning"] if r["true_needs_reasoning"] is None else r["true_needs_reasoning"]),
            f"feedback:{r['request_id']}",
        )
        for r in latest.values()
    ]
