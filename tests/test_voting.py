"""Self-consistency votes: tally, winner, early decision. Tables, no model."""

import pytest

from ponderd.voting import tally, vote_decided, winner


@pytest.mark.parametrize(
    "answers, expected",
    [
        ([], []),
        (["a"], [("a", 1)]),
        (["a", "b", "a"], [("a", 2), ("b", 1)]),
        (["b", "a", "a", "b"], [("b", 2), ("a", 2)]),  # a tie keeps arrival order
        (["", "x", ""], [("x", 1)]),  # empty answers do not vote
    ],
)
def test_tally(answers, expected):
    assert tally(answers) == expected


@pytest.mark.parametrize(
    "answers, remaining, decided",
    [
        ([], 3, False),
        (["a"], 0, True),
        (["a"], 1, False),
        (["a", "a"], 1, True),  # 2 > 0 + 1
        (["a", "a"], 2, False),  # 2 == 0 + 2 could tie
        (["a", "a", "b"], 1, False),  # 2 == 1 + 1 could tie
        (["a", "a", "a", "b"], 1, True),
        (["a", "a", "a"], 2, True),  # majority of 5 already
        (["", "", ""], 2, False),
        (["", ""], 0, True),
    ],
)
def test_vote_decided(answers, remaining, decided):
    assert vote_decided(answers, remaining) is decided


@pytest.mark.parametrize(
    "answers, expected",
    [([], ("", 0)), (["", ""], ("", 0)), (["b", "a", "a"], ("a", 1)), (["x", "y"], ("x", 0)), (["", "q"], ("q", 1))],
)
def test_winner(answers, expected):
    assert winner(answers) == expected
