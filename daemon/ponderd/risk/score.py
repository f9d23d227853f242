"""The classifier's verdict on a query, as every reader of it sees it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Contribution:
    axis: str
    feature: str
    weight: float


@dataclass(frozen=True)
class RiskScore:
    """The classifier's verdict: labels, calibrated probabilities, the model that gave them."""

    severity: str
    needs_reasoning: bool
    severity_probs: dict[str, float]
    needs_reasoning_prob: float
    model_version: str
    explanation: tuple[Contribution, ...] = ()
