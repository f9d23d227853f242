"""Stop rules, escalation and pruning bars: pure tables."""


import pytest

from ponderd.request.stopping import agreed, beta_decided, p_leader, prune_threshold, stop_reason, stop_rule
from ponderd.request.voting import never_decided, vote_decided


@pytest.mark.parametrize(
    "counts, p",
    [
        ([], 0.0),
        ([1], 0.75),  # Beta(2, 1): P(x > 1/2) = 1 - 1/4
        ([4], 1 - 0.5**5),
        ([2, 2], 0.5),
        ([3, 1], 0.8125),  # Beta(4, 2): 1 - I_0.5(4, 2) = 13/16
        ([5, 1, 1], 1 - 8 / 128),  # only the two front answers count
    ],
)
def test_p_leader_is_the_beta_posterior(counts, p):
    assert p_leader(counts) == pytest.approx(p)


def test_p_leader_matches_scipy():
    from scipy.stats import beta

    for v1, v2 in [(1, 0), (3, 2), (7, 3), (10, 9)]:
        assert p_leader([v1, v2]) == pytest.approx(beta(v1 + 1, v2 + 1).sf(0.5))


@pytest.mark.parametrize(
    "answers, remaining, threshold, stop",
    [
        (["4"] * 3, 5, 0.95, False),  # 0.9375
        (["4"] * 4, 5, 0.95, True),  # 0.969: stops with 5 still to come, where counting would not
        (["4", "4", "4", "4", "5"], 3, 0.95, False),
        (["4", "", "", "4", "4", "4"], 1, 0.95, True),  # empty answers do not vote
        (["4"], 1, 0.7, True),
        ([], 4, 0.5, False),
        (["4", "5"], 0, 0.99, True),  # nothing left to run
    ],
)
def test_beta_rule(answers, remaining, threshold, stop):
    assert beta_decided(threshold)(answers, remaining) is stop


def test_the_beta_rule_stops_sooner_than_counting():
    answers = ["7"] * 4
    assert beta_decided(0.95)(answers, 6) and not vote_decided(answers, 6)


def test_stop_rule_by_setting():
    assert stop_rule("decided", "majority", 0.95) is vote_decided
    assert stop_rule("never", "majority", 0.95) is never_decided
    assert stop_rule("beta", "weighted", 0.95) is never_decided  # counts do not bound weights
    assert stop_rule("beta", "majority", 0.95)(["1"] * 5, 3)


@pytest.mark.parametrize(
    "answers, same",
    [(["3", "3"], True), (["3", "4"], False), (["3", ""], False), ([""], False), ([], False), (["x"], True)],
)
def test_agreed(answers, same):
    assert agreed(answers) is same


@pytest.mark.parametrize(
    "confidences, percentile, warmup, bar",
    [
        ([0.5], 10, 2, None),  # too few finished to judge by
        ([0.5, 0.7, 0.9], 10, 2, 0.54),
        ([0.9, 0.5, 0.7], 50, 2, 0.7),
        ([0.2, 0.8], 90, 1, 0.74),
        ([0.2, 0.8], 0, 1, None),  # off
    ],
)
def test_prune_threshold(confidences, percentile, warmup, bar):
    got = prune_threshold(confidences, percentile, warmup)
    assert got == (None if bar is None else pytest.approx(bar))


@pytest.mark.parametrize(
    "stop, vote_stopped, agreed_early, pruned, reason",
    [
        ("beta", True, False, 2, "beta"),
        ("decided", True, False, 0, "decided"),
        ("decided", False, True, 1, "agreed"),
        ("never", False, False, 1, "pruned"),
        ("decided", False, False, 0, "all"),
    ],
)
def test_stop_reason(stop, vote_stopped, agreed_early, pruned, reason):
    assert stop_reason(stop, vote_stopped, agreed_early, pruned) == reason
