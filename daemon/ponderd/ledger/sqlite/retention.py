"""Retention: every stored copy of what a tenant asked and was answered goes after `risk.keep_prompts_days`.

Three tables hold such text: `prompts` (the prompt), `feedback.text` (the
prompt, copied when feedback is given, for retraining) and `spend.answer` (the
voted answer). Spend records themselves stay: they are the ledger, and hold
only counts, labels and costs once the text is gone.

The age of a feedback copy is its request's age, not the feedback's: a copy
must not outlive the prompt it was taken from. So labeled feedback older than
the window can no longer teach the classifier (`feedback.labeled_examples`
skips rows without text).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlite_utils import Database

from ponderd.ledger.types import iso


@dataclass(frozen=True)
class Pruned:
    prompts: int
    feedback_texts: int
    answers: int

    def summary(self, days: int) -> str:
        return (
            f"removed {self.prompts} prompt(s), {self.feedback_texts} feedback prompt copy(ies) and "
            f"{self.answers} answer(s) of requests older than {days} day(s)"
        )


def prune(db: Database, cutoff: datetime) -> Pruned:
    """Drop the text of every request made before `cutoff`, in one transaction."""
    at = iso(cutoff)
    with db.atomic():
        prompts = db.execute("DELETE FROM prompts WHERE at < ?", [at]).rowcount
        feedback_texts = db.execute(
            """UPDATE feedback SET text = NULL
               WHERE text IS NOT NULL
                 AND request_id IN (SELECT request_id FROM spend WHERE at < ?)""",
            [at],
        ).rowcount
        answers = db.execute("UPDATE spend SET answer = '' WHERE at < ? AND answer != ''", [at]).rowcount
    return Pruned(prompts, feedback_texts, answers)
