"""What the request path knows about a query: the classifier's score, then the policy's adjustments."""

from __future__ import annotations

from dataclasses import dataclass, field

from ponderd.planning.policy import SEVERITIES, Policy
from ponderd.risk.cues import stakes_cues
from ponderd.risk.score import RiskScore

RANK = {s: i for i, s in enumerate(SEVERITIES)}


@dataclass(frozen=True)
class Assessment:
    """The labels the planner uses: the score after overrides and client floors."""

    severity: str
    needs_reasoning: bool
    score: RiskScore
    adjustments: tuple[str, ...] = field(default=())
    # Stakes cues found in a query the classifier was unsure about (empty when
    # the unsure floor did not fire); the planner raises the plan's floor.
    unsure_cues: tuple[str, ...] = ()

    @property
    def confidence(self) -> float:
        return max(self.score.severity_probs.values(), default=0.0)


def adjust(score: RiskScore, policy: Policy, tenant: str | None, text: str, severity_floor: str | None) -> Assessment:
    """Apply the policy's override rules, then the client's severity floor (already allowed)."""
    severity, reasoning = score.severity, score.needs_reasoning
    notes: list[str] = []
    for rule in policy.overrides:
        if not rule.applies(tenant, text):
            continue
        label = f"override {rule.number}" + (f" ({rule.note})" if rule.note else "")
        if rule.severity and rule.severity != severity:
            notes.append(f"{label}: severity {severity} -> {rule.severity}")
            severity = rule.severity
        if rule.severity_floor and RANK[rule.severity_floor] > RANK[severity]:
            notes.append(f"{label}: severity floor {rule.severity_floor}")
            severity = rule.severity_floor
        if rule.needs_reasoning is not None and rule.needs_reasoning != reasoning:
            notes.append(f"{label}: needs_reasoning -> {str(rule.needs_reasoning).lower()}")
            reasoning = rule.needs_reasoning
    if severity_floor and RANK[severity_floor] > RANK[severity]:
        notes.append(f"client severity floor {severity_floor}")
        severity = severity_floor
    return Assessment(severity, reasoning, score, tuple(notes), unsure(score, severity, policy, tenant, text))


def unsure(score: RiskScore, severity: str, policy: Policy, tenant: str | None, text: str) -> tuple[str, ...]:
    """Stakes cues, when the unsure floor applies: on, severity below high, classifier unsure.

    Only a verdict below high can under-serve; the cue patterns run only then,
    so confident verdicts pay nothing.
    """
    rules = policy.rules_for(tenant)
    if not rules.unsure_floor or severity == "high":
        return ()
    if max(score.severity_probs.values(), default=0.0) >= rules.unsure_confidence:
        return ()
    return stakes_cues(text)
