"""What each level's answers are worth, learned from verified outcomes, gated like the classifier.

The accuracy profile (`ponder calibrate`, named by the policy's
planning.profile) is the prior. Outcomes come from requests that sent a Check
(the daemon verified the answer) and from Feedback that says whether an answer
was right (feedback wins over the check for the same request). The
`update_accuracy` job counts them per (level, severity, needs_reasoning) and
puts the counts into force only when at least `min_new_outcomes` arrived since
the counts in force, so a handful of outcomes cannot swing the plan; every run
is logged in `accuracy_updates`, accepted or not. With counts (n, c) on a slice
and the profile's estimate p0 there, the planner uses

    (prior_weight * p0 + c) / (prior_weight + n)

so the profile is worth `prior_weight` outcomes, and measured traffic takes over
as it grows. Runs on the store's owner thread: the SQL for these tables lives here.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Mapping

from sqlite_utils import Database

from ponderd.ledger.types import iso
from ponderd.planning.profile import Estimate, slice_key

log = logging.getLogger("ponder.accuracy")

# (level, "severity/reasoning|direct") -> (outcomes, correct)
Counts = dict[tuple[str, str], tuple[int, int]]


@dataclass(frozen=True)
class Learned:
    """The profile's estimates moved by the counted outcomes (an expected_loss.Accuracy)."""

    profile: Any
    counts: Mapping[tuple[str, str], tuple[int, int]] = field(default_factory=dict)
    prior_weight: float = 20.0

    @property
    def levels(self) -> Any:
        return self.profile.levels

    def estimate(self, level: str, severity: str, needs_reasoning: bool) -> Estimate | None:
        prior = self.profile.estimate(level, severity, needs_reasoning)
        if prior is None:
            return None
        n, c = self.counts.get((level, slice_key(severity, needs_reasoning)), (0, 0))
        if not n:
            return prior
        w = self.prior_weight
        return Estimate((w * prior.accuracy + c) / (w + n), prior.n + n)


@dataclass(frozen=True)
class UpdateResult:
    accepted: bool
    outcomes: int
    new_outcomes: int
    reason: str

    def summary(self) -> str:
        verdict = "accepted" if self.accepted else "kept the estimates in force"
        return f"{verdict}: {self.outcomes} verified outcome(s), {self.new_outcomes} new; {self.reason}"


class AccuracyEstimates:
    """The outcome counts in force, combined with whichever profile the policy names now."""

    def __init__(self, prior_weight: float = 20.0, min_new_outcomes: int = 20) -> None:
        self.prior_weight = prior_weight
        self.min_new_outcomes = min_new_outcomes
        self._counts: Counts = {}
        self._outcomes = 0
        self._lock = threading.Lock()
        self._cache: tuple[int, Learned | None] = (0, None)

    def load(self, db: Database) -> None:
        """Put the last accepted counts in force (at start)."""
        row = db.execute(
            "SELECT outcomes, counts FROM accuracy_updates WHERE accepted = 1 ORDER BY id DESC LIMIT 1"
        ).fetchone()
        if row is not None:
            self._swap(_decode(row[1]), row[0])

    def current(self, profile: Any) -> Learned | None:
        """The estimates for the planner, or None when the policy names no profile."""
        if profile is None:
            return None
        with self._lock:
            key, cached = self._cache
            if cached is not None and key == id(profile) and cached.profile is profile:
                return cached
            learned = Learned(profile, dict(self._counts), self.prior_weight)
            self._cache = (id(profile), learned)
            return learned

    def update(self, db: Database, now: datetime) -> UpdateResult:
        """Count every verified outcome; accept the counts when enough are new. Logged either way."""
        counts, total = count_outcomes(db)
        new = total - self._outcomes
        if new >= self.min_new_outcomes:
            result = UpdateResult(True, total, new, f"{new} new outcome(s) >= min_new_outcomes {self.min_new_outcomes}")
        else:
            result = UpdateResult(
                False, total, max(new, 0), f"{max(new, 0)} new outcome(s) < min_new_outcomes {self.min_new_outcomes}"
            )
        db.table("accuracy_updates").insert(
            {
                "at": iso(now),
                "outcomes": total,
                "new_outcomes": max(new, 0),
                "accepted": int(result.accepted),
                "reason": result.reason,
                "counts": _encode(counts),
            }
        )
        if result.accepted:
            self._swap(counts, total)
        return result

    def _swap(self, counts: Counts, outcomes: int) -> None:
        with self._lock:
            self._counts, self._outcomes = counts, outcomes
            self._cache = (0, None)

    @property
    def in_force(self) -> tuple[Counts, int]:
        with self._lock:
            return dict(self._counts), self._outcomes


def count_outcomes(db: Database) -> tuple[Counts, int]:
    """Verified outcomes by (level, slice): the latest feedback's `correct`, else the check's verdict."""
    rows = db.execute(
        """SELECT s.level, s.severity, s.needs_reasoning,
                  COALESCE(
                    (SELECT f.correct FROM feedback f
                      WHERE f.request_id = s.request_id AND f.correct IS NOT NULL
                      ORDER BY f.at DESC LIMIT 1),
                    s.verified) AS correct
           FROM spend s
           WHERE s.status = 'ok'"""
    ).fetchall()
    counts: Counts = {}
    total = 0
    for level, severity, reasoning, correct in rows:
        if correct is None:
            continue
        key = (level, slice_key(severity, bool(reasoning)))
        n, c = counts.get(key, (0, 0))
        counts[key] = (n + 1, c + int(correct))
        total += 1
    return counts, total


def history(db: Database, limit: int = 20) -> list[dict[str, Any]]:
    """The latest update runs, newest first."""
    return [
        dict(r) | {"accepted": bool(r["accepted"])}
        for r in db.query(
            "SELECT at, outcomes, new_outcomes, accepted, reason FROM accuracy_updates ORDER BY id DESC LIMIT ?",
            [limit],
        )
    ]


def _encode(counts: Counts) -> str:
    return json.dumps([[level, key, n, c] for (level, key), (n, c) in sorted(counts.items())])


def _decode(text: str) -> Counts:
    return {(level, key): (int(n), int(c)) for level, key, n, c in json.loads(text)}
