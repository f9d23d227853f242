"""Final-answer extraction and normalisation, as tables."""

import pytest

from ponderd.answers import extract_answer, normalise, normalise_number


@pytest.mark.parametrize(
    "text, answer",
    [
        ("So the result is \\boxed{391}.", "391"),
        ("first \\boxed{1} then \\boxed{2}", "2"),
        ("Let me compute.\nAnswer: 391", "391"),
        ("Answer: 391 apples", "391"),
        ("The answer to this question is - 218.", "218"),
        ("Final answer = Paris.", "paris"),
        ("I think the answer is yes.", "yes"),
        ("Respuesta: 12", "12"),
        ("17 * 23 = 391", "391"),
        ("It costs 1,234.50 dollars", "1234.5"),
        ("Paris is the capital. It is big.", "paris is the capital"),
        ("**Paris**", "paris"),
        ("", ""),
        ("   \n ", ""),
    ],
)
def test_extract_answer(text, answer):
    assert extract_answer(text) == answer


@pytest.mark.parametrize(
    "raw, normal",
    [("1,000", "1000"), ("+5", "5"), ("2.50", "2.5"), ("3.0", "3"), ("-0", "0"), ("-0.0", "0"), ("12", "12")],
)
def test_normalise_number(raw, normal):
    assert normalise_number(raw) == normal


@pytest.mark.parametrize(
    "raw, normal",
    [("  Paris!  ", "paris"), ("`x = 2`", "x = 2"), ("42.", "42"), ("The   Answer", "the answer"), ("a" * 300, "a" * 120)],
)
def test_normalise(raw, normal):
    assert normalise(raw) == normal
