"""Stop strings in one sample's bookkeeping (no model): the answer ends before the earliest stop string,
thinking text is never searched, and the stream never carries any part of a stop string."""

import pytest

from ponderd.engine import ANSWER, THINKING
from ponderd.engine.sample import SampleState, first_stop

CLOSE = (901, 902)
EOG = 0


def run(pieces, stop, thinking_cap=0, answer_cap=50):
    """Feed (token, text) pairs until the sample is done (or the pieces run out: then EOG).

    Returns the state, the streamed (phase, text) events and how many pieces it took."""
    events: list[tuple[str, str]] = []
    st = SampleState(0, thinking_cap, answer_cap, CLOSE, lambda i, phase, text: events.append((phase, text)),
                     stop_strings=tuple(stop))
    taken = 0
    for token, text in [*pieces, (EOG, "")]:
        if st.done:
            break
        st.accept(token, text.encode(), token == EOG)
        taken += 1
    return st, events, taken


def streamed(events, phase=ANSWER):
    return "".join(t for p, t in events if p == phase)


@pytest.mark.parametrize(
    "pieces, stop, text, tokens",
    [
        # one piece holds the stop string: cut before it, nothing after it is read
        ([(1, "Red"), (2, ".\nBlue"), (3, " more")], ["\n"], "Red.", 2),
        # the stop string split across two pieces
        ([(1, "one EN"), (2, "D two"), (3, " three")], ["END"], "one", 2),
        # split across three pieces, one character each
        ([(1, "ab"), (2, "<"), (3, "/"), (4, "s>"), (5, "zz")], ["</s>"], "ab", 4),
        # two stop strings: the earliest in the text wins, whichever is listed first
        ([(1, "x, y; z")], [";", ","], "x", 1),
        ([(1, "alpha"), (2, " STOP beta ."), (3, "gamma")], [".", "STOP"], "alpha", 2),
        # no stop string in the answer: the whole answer, held text flushed at the end
        ([(1, "plain"), (2, " answe"), (3, "r")], ["###"], "plain answer", 3),
        # a prefix of a stop string that does not complete it is answer text
        ([(1, "a EN"), (2, "dless")], ["END"], "a ENdless", 2),
        # the stop string at the very start: an empty answer
        ([(1, "\n\nHi")], ["\n"], "", 1),
    ],
)
def test_the_answer_ends_before_the_earliest_stop_string(pieces, stop, text, tokens):
    st, events, taken = run(pieces, stop)
    r = st.result
    assert (r.text, r.finish_reason) == (text, "stop")
    # Only the tokens that ran are counted: none after the one that completed the stop string.
    assert r.answer_tokens == tokens and taken in (tokens, tokens + 1)  # + 1: the end of generation, when no stop string came
    # The stream never carried any part of a stop string.
    assert streamed(events).strip() == text


def test_a_stop_string_inside_thinking_is_ignored():
    pieces = [(1, "think END here"), (2, "</think>"), (3, "answer"), (4, " END"), (5, " after")]
    st, events, _ = run(pieces, ["END"], thinking_cap=10)
    r = st.result
    assert r.thinking == "think END here" and r.thinking_tokens == 2
    assert (r.text, r.finish_reason, r.answer_tokens) == ("answer", "stop", 2)
    assert streamed(events, THINKING) == "think END here" and streamed(events) == "answer "


def test_the_stream_holds_back_the_longest_stop_strings_length_minus_one():
    events: list[tuple[str, str]] = []
    st = SampleState(0, 0, 50, CLOSE, lambda i, phase, text: events.append((phase, text)), stop_strings=("<END>", "!"))
    st.accept(1, b"Hello there", False)
    # The longest stop string has 5 characters: 4 are held, the rest streams at once.
    assert streamed(events) == "Hello t"
    st.accept(2, b"<EN", False)
    assert streamed(events) == "Hello ther"  # "e<EN" held: it could still hold the start of "<END>"
    st.accept(3, b"D> tail", False)
    assert st.done and st.result.text == "Hello there" and streamed(events) == "Hello there"


def test_held_text_is_flushed_when_the_sample_ends_otherwise():
    # By its answer cap: the held tail is answer text after all.
    st, events, _ = run([(1, "abc"), (2, "de")], ["zzzz"], answer_cap=2)
    assert (st.result.text, st.result.finish_reason, streamed(events)) == ("abcde", "length", "abcde")
    # Stopped from outside (vote decided): the same.
    events = []
    st = SampleState(0, 0, 50, CLOSE, lambda i, phase, text: events.append((phase, text)), stop_strings=("zzzz",))
    st.accept(1, b"abcdef", False)
    st.stop("vote_decided")
    assert (st.result.text, st.result.finish_reason, streamed(events)) == ("abcdef", "vote_decided", "abcdef")


def test_a_stop_string_that_would_close_thinking_again_is_still_cut():
    # The stray closing tag is removed first; the stop string is searched in the text that remains.
    st, _, _ = run([(1, "42"), (2, "</think>"), (3, "\nmore")], ["\n"])
    assert (st.result.text, st.result.finish_reason) == ("42", "stop")


def test_without_stop_strings_nothing_is_held():
    events: list[tuple[str, str]] = []
    st = SampleState(0, 0, 50, CLOSE, lambda i, phase, text: events.append((phase, text)))
    st.accept(1, b"Hello", False)
    assert streamed(events) == "Hello"


@pytest.mark.parametrize(
    "text, stops, at",
    [("abc", ("c", "b"), 1), ("abc", ("x",), None), ("abc", ("",), None), ("aXbX", ("X",), 1), ("", ("a",), None)],
)
def test_first_stop(text, stops, at):
    assert first_stop(text, stops) == at


WRAP = "Time is up. The final answer is"


@pytest.mark.parametrize(
    "stop, pieces, text",
    [
        (["."], [(5, " 42"), (6, ". Done")], f"{WRAP} 42"),
        (["final answer"], [(5, " 7"), (6, " final answer: 8")], f"{WRAP} 7"),
        (["answer is 9"], [(5, " 9"), (6, " more")], "Time is up. The final"),  # ends after the wrap-up: it counts
    ],
)
def test_a_stop_string_never_ends_the_answer_inside_the_wrap_up_text(stop, pieces, text):
    """At the thinking cap Ponder forces a wrap-up ("Time is up. The final answer is") that opens the answer:
    it is Ponder's text, so a stop string inside it does not count; one that ends after it does."""
    events: list[tuple[str, str]] = []
    st = SampleState(0, 2, 20, CLOSE, lambda i, phase, t: events.append((phase, t)), wrap_up=(801,), wrap_up_text=WRAP,
                     stop_strings=tuple(stop))
    for token, piece in [(1, "hm"), (2, "m"), *pieces, (EOG, "")]:
        if st.done:
            break
        st.accept(token, piece.encode(), token == EOG)
    assert st.result.thinking_capped and (st.result.text, st.result.finish_reason) == (text, "stop")
    assert streamed(events).strip() == text


@pytest.mark.parametrize("after, at", [(0, 1), (2, 3), (4, None)])
def test_first_stop_after_a_protected_prefix(after, at):
    assert first_stop("a.b.", (".",), after) == at
