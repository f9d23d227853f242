"""Expected-loss planning, pure: which level minimises expected cost + P(wrong) x loss(severity).

The seed's question, "how bad is it if the answer is wrong?", as arithmetic.
For each level the tenant may use, P(wrong) comes from the accuracy estimates
(the calibrated profile, moved by verified outcomes) for each (severity,
needs_reasoning) slice, weighted by how likely the classifier thinks each
slice is; the loss of a wrong answer is the policy's price of that severity.
See docs/policy.md § Expected-loss planning.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from ponderd.ledger.types import to_credits
from ponderd.planning.assessment import RANK, Assessment
from ponderd.planning.policy import SEVERITIES, Policy


class Estimate(Protocol):
    accuracy: float
    n: int


class LevelCosts(Protocol):
    mean_cost: float
    mean_prompt_tokens: float


class Accuracy(Protocol):
    """What the planner needs from an accuracy profile (profile.Profile, accuracy.Learned)."""

    levels: Any  # Mapping[str, LevelCosts]

    def estimate(self, level: str, severity: str, needs_reasoning: bool) -> Estimate | None:
        """The level's accuracy on this slice, or None when the level was never measured."""


@dataclass(frozen=True)
class Choice:
    level: str
    # Credits: the plan's expected cost, its probability of a wrong answer, the expected loss.
    cost: float
    p_wrong: float
    risk: float

    @property
    def total(self) -> float:
        return self.cost + self.risk

    def reason(self, currency: str = "credits") -> str:
        return (
            f"expected loss: {self.level} costs ~{self.cost:.4f} + P(wrong) {self.p_wrong:.2f} x loss "
            f"= {self.risk:.4f} -> {self.total:.4f} {currency}"
        )


def slice_weights(a: Assessment) -> dict[tuple[str, bool], float]:
    """P(severity, needs_reasoning) for this query.

    The classifier's probabilities, with what the policy or client pinned made
    certain: mass below an adjusted (raised) severity moves onto it, and an
    overridden needs_reasoning is taken as given.
    """
    probs = dict(a.score.severity_probs) or {a.severity: 1.0}
    if a.severity != a.score.severity:
        floor = RANK[a.severity]
        moved = sum(p for s, p in probs.items() if RANK.get(s, 0) < floor)
        probs = {s: p for s, p in probs.items() if RANK.get(s, 0) >= floor}
        probs[a.severity] = probs.get(a.severity, 0.0) + moved
    total = sum(probs.values()) or 1.0
    if a.needs_reasoning != a.score.needs_reasoning:
        reasoning = 1.0 if a.needs_reasoning else 0.0
    else:
        reasoning = a.score.needs_reasoning_prob
    out: dict[tuple[str, bool], float] = {}
    for sev in SEVERITIES:
        p = probs.get(sev, 0.0) / total
        out[(sev, True)] = p * reasoning
        out[(sev, False)] = p * (1 - reasoning)
    return out


def expected_cost(plan: Any, policy: Policy, accuracy: Accuracy) -> float:
    """Credits the plan will likely cost: the profile's mean for its level, corrected for this prompt's length.

    Never above the worst case the ledger reserves; the worst case itself when
    the level was not measured.
    """
    worst = to_credits(plan.worst_case_micros)
    lp = accuracy.levels.get(plan.level)
    if lp is None:
        return worst
    per_prompt_token = float(policy.prices_for(plan.model).prompt) / 1000
    guess = lp.mean_cost + per_prompt_token * (plan.prompt_tokens - lp.mean_prompt_tokens)
    return min(max(guess, 0.0), worst)


def choose(assessment: Assessment, policy: Policy, accuracy: Accuracy, plans: list[Any]) -> list[Choice]:
    """Every measured plan's expected total, lowest first (ties: the cheaper plan)."""
    weights = slice_weights(assessment)
    loss = policy.planning.loss
    out: list[Choice] = []
    for plan in plans:
        p_wrong, risk, measured = 0.0, 0.0, True
        for (sev, reasoning), w in weights.items():
            if not w:
                continue
            est = accuracy.estimate(plan.level, sev, reasoning)
            if est is None:
                measured = False
                break
            wrong = 1.0 - est.accuracy
            p_wrong += w * wrong
            risk += w * wrong * loss.get(sev, 0.0)
        if measured:
            out.append(Choice(plan.level, expected_cost(plan, policy, accuracy), p_wrong, risk))
    order = {p.level: p.worst_case_micros for p in plans}
    return sorted(out, key=lambda c: (round(c.total, 9), order[c.level]))
