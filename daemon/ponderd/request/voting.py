"""Self-consistency votes: tally, winner, and when a vote is already decided. Pure functions."""

from __future__ import annotations

from collections import Counter
from typing import Sequence


def tally(answers: Sequence[str]) -> list[tuple[str, int]]:
    """Answers with their counts, most votes first; ties keep the order answers arrived in.

    Empty answers (a sample that said nothing extractable) do not vote.
    """
    counts = Counter(a for a in answers if a)
    order = {a: i for i, a in reversed(list(enumerate(answers)))}
    return sorted(counts.items(), key=lambda item: (-item[1], order[item[0]]))


def vote_decided(answers: Sequence[str], remaining: int) -> bool:
    """True when the samples still running cannot change the winner, even all voting together."""
    votes = tally(answers)
    if not votes or remaining <= 0:
        return remaining <= 0
    leader = votes[0][1]
    runner_up = votes[1][1] if len(votes) > 1 else 0
    # A tie goes to the answer that arrived first, so the leader is safe only
    # when the rest cannot reach its count.
    return leader > runner_up + remaining


def winner(answers: Sequence[str]) -> tuple[str, int]:
    """The winning answer and the index of the first sample that gave it ((\"\", 0) if none)."""
    votes = tally(answers)
    if not votes:
        return "", 0
    best = votes[0][0]
    return best, list(answers).index(best)


# Weighted votes (DeepConf): each sample's answer counts its confidence, in
# (0, 1], instead of 1, so a few sure samples can outvote many guessing ones.


def never_decided(answers: Sequence[str], remaining: int) -> bool:
    """The weighted vote's early-stop rule: none yet. A sample still running may weigh
    anything up to 1, so the count rule above is not sound for weights; every sample runs."""
    return False


def weighted_tally(answers: Sequence[str], weights: Sequence[float]) -> list[tuple[str, float]]:
    """Answers with their summed weights, heaviest first; ties keep arrival order. Empty answers do not vote."""
    if len(answers) != len(weights):
        raise ValueError(f"{len(answers)} answers but {len(weights)} weights")
    sums: dict[str, float] = {}
    for a, w in zip(answers, weights):
        if a:
            sums[a] = sums.get(a, 0.0) + w
    order = {a: i for i, a in reversed(list(enumerate(answers)))}
    return sorted(sums.items(), key=lambda item: (-item[1], order[item[0]]))


def weighted_winner(answers: Sequence[str], weights: Sequence[float]) -> tuple[str, int]:
    """The heaviest answer and the index of the first sample that gave it ((\"\", 0) if none)."""
    votes = weighted_tally(answers, weights)
    if not votes:
        return "", 0
    best = votes[0][0]
    return best, list(answers).index(best)
