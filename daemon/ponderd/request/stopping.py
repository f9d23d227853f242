"""When to stop drawing samples, and which samples to stop. Pure functions, tested with tables.

Three ways a level spends fewer samples than it planned (the reservation
always covers the plan; the charge is only what ran):

- stop rules (`stop`): "decided" stops the samples still running once they
  cannot change the winner even voting together; "beta" stops once the leader
  is the true majority with probability >= stop_confidence under a uniform
  Beta prior on the leader's share of the two front answers (Adaptive-
  Consistency, Aggarwal et al. 2023); "never" runs every sample.
- escalation (`first_samples = k`): draw k samples first, and the rest only
  when those k do not all give the same answer.
- pruning (`prune`): a running sample whose lowest sliding-window confidence so
  far is already below a percentile of the finished samples' confidences is
  stopped and does not vote (DeepConf online, Fu et al. 2025). The lowest
  window can only fall as a sample goes on, so it would have ended below too.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

from ponderd.request.voting import never_decided, tally, vote_decided

# Finished samples needed before any running one is judged against them.
PRUNE_WARMUP = 2

# Why a request's sampling ended (Usage.stop_reason).
ALL, AGREED, PRUNED = "all", "agreed", "pruned"


def p_leader(counts: Sequence[int]) -> float:
    """P(the leader's true share exceeds the runner-up's) given vote counts, most first.

    With a uniform prior the leader's share of the two front answers is
    Beta(v1 + 1, v2 + 1); this is P(that share > 1/2). 0.0 with no votes.
    """
    if not counts or counts[0] <= 0:
        return 0.0
    v1, v2 = counts[0], counts[1] if len(counts) > 1 else 0
    return _beta_sf_half(v1 + 1, v2 + 1)


def _beta_sf_half(a: int, b: int) -> float:
    """P(X > 1/2) for X ~ Beta(a, b)."""
    # Integer a, b: I_x(a, b) = P(Binomial(a + b - 1, x) >= a), so exact with no special functions.
    n, k = int(a + b - 1), int(a)
    return sum(math.comb(n, j) for j in range(k)) / 2.0**n


def beta_decided(threshold: float) -> Callable[[Sequence[str], int], bool]:
    """The "beta" stop rule as a vote_decided callable: (answers, remaining) -> stop?"""

    def decided(answers: Sequence[str], remaining: int) -> bool:
        return remaining <= 0 or p_leader([n for _, n in tally(answers)]) >= threshold

    return decided


def stop_rule(stop: str, vote: str, threshold: float) -> Callable[[Sequence[str], int], bool]:
    """The callable the engine asks after each finished sample; "never" never stops early.

    Stop rules count votes, so a weighted vote never stops early (policy.py refuses the combination)."""
    if vote != "majority" or stop == "never":
        return never_decided
    return beta_decided(threshold) if stop == "beta" else vote_decided


def agreed(answers: Sequence[str]) -> bool:
    """Escalation's test: every sample so far gave the same, non-empty answer."""
    return bool(answers) and all(answers) and len(set(answers)) == 1


def prune_threshold(confidences: Sequence[float], percentile: float, warmup: int = PRUNE_WARMUP) -> float | None:
    """The confidence below which a running sample is stopped; None until `warmup` samples finished.

    The `percentile`-th percentile (linear interpolation) of the finished samples' confidences.
    """
    if percentile <= 0 or len(confidences) < max(1, warmup):
        return None
    xs = sorted(confidences)
    rank = (len(xs) - 1) * min(percentile, 100) / 100.0
    lo = math.floor(rank)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (rank - lo)


def stop_reason(stop: str, vote_stopped: bool, agreed_early: bool, pruned: int) -> str:
    """Why sampling ended: the rule that fired, else "agreed", else "pruned", else "all"."""
    if vote_stopped:
        return stop
    if agreed_early:
        return AGREED
    if pruned:
        return PRUNED
    return ALL
