"""One sample's thinking/answer bookkeeping: the cap is exact, forced tokens are counted apart."""

import pytest

from ponderd.engine.sample import SampleState

CLOSE = (901, 902, 903)  # what the engine would force to close thinking
EOG = 0


def run(cap, answer_cap, pieces, events=None):
    """Feed (token, text) pairs until the sample is done; return the state and the feeds it asked for."""
    st = SampleState(0, cap, answer_cap, CLOSE, (lambda i, phase, text: events.append((phase, text))) if events is not None else None)
    feeds = []
    for token, text in pieces:
        if st.done:
            break
        st.accept(token, text.encode() if isinstance(text, str) else text, token == EOG)
        feeds.append(list(st.feed))
    return st, feeds


def words(n, start=10):
    return [(start + i, f" w{i}") for i in range(n)]


@pytest.mark.parametrize("cap", [1, 2, 7, 16])
def test_thinking_never_exceeds_the_cap_and_the_block_is_closed_by_force(cap):
    st, feeds = run(cap, 4, words(cap + 10) + [(EOG, "")])
    r = st.result
    assert r.thinking_tokens == cap
    assert r.thinking_capped
    assert feeds[cap - 1] == [10 + cap - 1, *CLOSE]  # the cap-th token, then the forced closing tag
    assert r.forced_tokens == len(CLOSE)
    assert r.answer_tokens == 4 and r.finish_reason == "length"


def test_model_closing_its_own_block_is_not_capped():
    st, feeds = run(10, 5, [(1, "let me"), (2, " see"), (3, "</think>"), (4, "Answer: 5"), (EOG, "")])
    r = st.result
    assert (r.thinking_tokens, r.thinking, r.thinking_capped, r.forced_tokens) == (3, "let me see", False, 0)
    assert (r.text, r.answer_tokens, r.finish_reason) == ("Answer: 5", 1, "stop")
    assert feeds[2] == [3]


def test_closing_tag_split_across_tokens():
    st, _ = run(10, 5, [(1, "ok"), (2, "</"), (3, "think"), (4, ">"), (5, "42"), (EOG, "")])
    assert st.result.thinking == "ok"
    assert st.result.thinking_tokens == 4 and st.result.text == "42"


def test_end_of_generation_while_thinking_forces_the_answer_without_counting_it():
    st, feeds = run(10, 5, [(1, "hmm"), (EOG, ""), (7, "yes"), (EOG, "")])
    r = st.result
    assert r.thinking_tokens == 1 and not r.thinking_capped
    assert feeds[1] == list(CLOSE)
    assert (r.text, r.finish_reason, r.forced_tokens) == ("yes", "stop", len(CLOSE))


def test_zero_cap_answers_directly():
    st, _ = run(0, 3, [(1, "a"), (2, "b"), (EOG, "")])
    assert (st.result.thinking_tokens, st.result.text, st.result.forced_tokens) == (0, "ab", 0)


def test_multibyte_characters_split_across_tokens():
    euro = "€".encode()
    st, _ = run(0, 5, [(1, euro[:1]), (2, euro[1:]), (3, b"5"), (EOG, b"")])
    assert st.result.text == "€5"


def test_stop_ends_a_sample_with_a_reason_and_accepts_nothing_after():
    st, _ = run(5, 5, [(1, "x")])
    st.stop("vote_decided")
    assert st.done and st.result.finish_reason == "vote_decided" and st.feed == []
    with pytest.raises(RuntimeError):
        st.accept(2, b"y", False)


def test_text_events_are_tagged_with_their_phase():
    events = []
    run(2, 2, [(1, "a"), (2, "b"), (3, "c"), (EOG, "")], events)
    assert events == [("thinking", "a"), ("thinking", "b"), ("answer", "c")]


@pytest.mark.parametrize(
    "pieces, text",
    [
        ([(5, "327"), (6, "\n</"), (7, "think"), (8, ">")], "327"),
        ([(5, "The answer is"), (6, "</think>"), (7, " 5.")], "The answer is 5."),
        ([(5, "a <"), (6, "/b"), (7, " c")], "a </b c"),  # held while it could be the tag, then let go
        ([(5, "x </thi")], "x </thi"),  # held at the end: flushed when the sample stops
    ],
)
def test_a_stray_closing_tag_after_thinking_is_not_answer_text(pieces, text):
    events = []
    st, _ = run(1, 10, [(1, "t"), *pieces, (EOG, "")], events)
    assert st.result.text == text
    assert "".join(t for phase, t in events if phase == "answer").strip() == text


WRAP = (801, 802)  # what the engine would force after CLOSE at the cap: "Time is up. The answer is"


def run_wrapped(cap, answer_cap, pieces, events=None):
    st = SampleState(0, cap, answer_cap, CLOSE, (lambda i, phase, text: events.append((phase, text))) if events is not None else None,
                     WRAP, "The answer is")
    feeds = []
    for token, text in pieces:
        if st.done:
            break
        st.accept(token, text.encode(), token == EOG)
        feeds.append(list(st.feed))
    return st, feeds


def test_at_the_cap_the_wrap_up_is_forced_after_the_close_and_opens_the_answer():
    events = []
    st, feeds = run_wrapped(2, 3, [(1, "a"), (2, "b"), (3, " 42"), (EOG, "")], events)
    r = st.result
    assert feeds[1] == [2, *CLOSE, *WRAP]
    assert (r.thinking, r.thinking_tokens, r.thinking_capped) == ("ab", 2, True)
    assert (r.text, r.answer_tokens, r.forced_tokens) == ("The answer is 42", 1, len(CLOSE) + len(WRAP))
    assert events == [("thinking", "a"), ("thinking", "b"), ("answer", "The answer is"), ("answer", " 42")]


@pytest.mark.parametrize(
    "pieces, forced, text",
    [
        ([(1, "a"), (EOG, ""), (3, "42"), (EOG, "")], CLOSE, "42"),  # the model stopped thinking itself: no wrap-up
        ([(1, "a"), (2, "</think>"), (3, "42"), (EOG, "")], (), "42"),  # it closed the block itself
    ],
)
def test_the_wrap_up_is_forced_only_at_the_cap(pieces, forced, text):
    st, feeds = run_wrapped(5, 3, pieces)
    assert (st.result.text, st.result.forced_tokens, st.result.thinking_capped) == (text, len(forced), False)
    assert not any(set(WRAP) & set(f) for f in feeds)


def test_with_a_zero_cap_there_is_nothing_to_close_or_wrap_up():
    st, feeds = run_wrapped(0, 2, [(1, "x"), (EOG, "")])
    assert (st.result.text, st.result.forced_tokens) == ("x", 0)
