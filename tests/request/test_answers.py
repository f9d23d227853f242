"""Final-answer extraction and normalisation, as tables."""

import pytest

from ponderd.answers import ANSWER_FORMATS, extract_answer, extractor, normalise, normalise_number


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
        ("The answer is \\frac{3}{4}", "0.75"),
        ("So it is 6/8.", "0.75"),
        ("on 3/4/2024", "2024"),  # a date is not a fraction
        ("Answer: \u22122.50 m", "-2.5"),  # a Unicode minus and a unit
        ("The difference 17-5 is 12", "12"),  # a hyphen between numbers is not a sign
    ],
)
def test_extract_answer(text, answer):
    assert extract_answer(text) == answer


@pytest.mark.parametrize(
    "raw, normal",
    [
        ("1,000", "1000"), ("+5", "5"), ("2.50", "2.5"), ("3.0", "3"), ("-0", "0"), ("-0.0", "0"), ("12", "12"),
        ("3/4", "0.75"), ("6/8", "0.75"), ("1/3", "1/3"), ("2/6", "1/3"), ("4/2", "2"), ("1 1/2", "1.5"),
        ("\\frac{1}{8}", "0.125"), ("\\dfrac{10}{4}", "2.5"), ("\u22123", "-3"), ("-3/4", "-0.75"), (".5", "0.5"),
        ("1e3", "1000"), ("2.5E-2", "0.025"), ("1/0", ""), ("seven", ""), ("1" * 50, "1" * 50),
    ],
)
def test_normalise_number(raw, normal):
    assert normalise_number(raw) == normal


@pytest.mark.parametrize(
    "raw, normal",
    [("  Paris!  ", "paris"), ("`x = 2`", "x = 2"), ("42.", "42"), ("The   Answer", "the answer"), ("a" * 300, "a" * 120)],
)
def test_normalise(raw, normal):
    assert normalise(raw) == normal


def test_every_format_has_an_extractor():
    assert [extractor(f)("") for f in ANSWER_FORMATS] == [""] * len(ANSWER_FORMATS)


NUMBER = [
    ("\\boxed{1,234} apples", "1234"),
    ("It costs $1,234.50 in total", "1234.5"),
    ("Answer: 12 kg", "12"),
    ("Answer: 50%", "50"),
    ("Answer: -7, I think, not 3", "-7"),  # the answer phrase's first number, not the text's last
    ("Half is 1/2.\nAnswer: I cannot tell, maybe 0.5", "0.5"),
    ("Answer: I cannot tell.\nThe sum was 9", "9"),  # a phrase with no number: the text's last
    ("Answer: Paris", ""),  # nothing numeric: the sample does not vote
    ("The answer is (C)", ""),
    ("", ""),
]

CHOICE = [
    ("Answer: (C)", "C"),
    ("The correct answer is B because the others are wrong.", "B"),
    ("the answer is b", "B"),
    ("\\boxed{D}", "D"),
    ("**Answer:** **A**", "A"),
    ("I would pick option d.", "D"),
    ("Between (A) and (B), it must be (B).", "B"),
    ("Let me think.\nC)\n", "C"),
    ("E", "E"),
    # What SmolLM2 writes, as seen: a later phrase without a letter does not hide an earlier one.
    ("Answer: A. carrot\n\nThis answer is incorrect.", "A"),
    ("The correct option is C. Red.\n\nThe reason is the sunset.", "C"),
    ("A) cat\n\nExplanation: The answer C) fish is a fish", "C"),
    ("A. red", "A"),
    ("A) cat.", "A"),
    ("Answer: Paris", ""),  # a word that starts with a capital is not a letter choice
    ("A cat sat on the mat.", ""),  # nor is the article
    ("The answer is 42", ""),
    ("", ""),
]

PHRASE = [
    ("Answer: The Eiffel Tower.", "eiffel tower"),
    ("Final answer: an apple", "apple"),
    ("\\boxed{Blue Whale}", "blue whale"),
    ("Paris. It is big.", "paris"),
    ("Answer: 2.50 m", "2.5 m"),  # numbers inside a phrase are normalised too
    ("Answer: 42.", "42"),
    ("Answer: 1,000", "1000"),
    ("", ""),
]

FREE = [("Write me a poem about 3 cats: cats, cats, cats.", ""), ("Answer: 4", ""), ("", "")]


@pytest.mark.parametrize(
    "fmt, text, answer",
    [("number", *row) for row in NUMBER]
    + [("choice", *row) for row in CHOICE]
    + [("phrase", *row) for row in PHRASE]
    + [("free", *row) for row in FREE],
)
def test_extract_by_format(fmt, text, answer):
    assert extractor(fmt)(text) == answer


def test_auto_votes_a_poem_by_its_last_number_but_free_text_does_not_vote():
    # Why the format matters: "auto" reads free text as if it were a number.
    poem = "Three cats sat, 3 cats in a row, and 2 of them slept."
    assert extractor("auto")(poem) == "2"
    assert extractor("free")(poem) == ""
