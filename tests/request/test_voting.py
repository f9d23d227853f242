"""Self-consistency votes: tally, winner, early decision. Tables, no model."""

import pytest

from ponderd.request.voting import never_decided, tally, vote_decided, weighted_tally, weighted_winner, winner


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


@pytest.mark.parametrize(
    "answers, weights, expected, won",
    [
        ([], [], [], ("", 0)),
        (["a", "a", "a", "b"], [0.1, 0.1, 0.1, 0.9], [("b", 0.9), ("a", 0.3)], ("b", 3)),  # sure beats many guesses
        (["a", "b", "a"], [0.5, 0.9, 0.5], [("a", 1.0), ("b", 0.9)], ("a", 0)),
        (["b", "a"], [0.5, 0.5], [("b", 0.5), ("a", 0.5)], ("b", 0)),  # a tie keeps arrival order
        (["", "x", ""], [1.0, 0.2, 1.0], [("x", 0.2)], ("x", 1)),  # empty answers do not vote, however sure
    ],
)
def test_weighted_tally_and_winner(answers, weights, expected, won):
    got = weighted_tally(answers, weights)
    assert [a for a, _ in got] == [a for a, _ in expected]
    assert [w for _, w in got] == pytest.approx([w for _, w in expected])
    assert weighted_winner(answers, weights) == won


def test_weights_must_match_answers():
    with pytest.raises(ValueError, match="2 answers but 1 weights"):
        weighted_tally(["a", "b"], [1.0])


def test_a_weighted_vote_is_never_decided_early():
    # The count rule would call this one for "a" (3 > 0 + 1), yet one sure "b" could still win.
    assert vote_decided(["a", "a", "a"], 1) and not never_decided(["a", "a", "a"], 1)
