"""Answer formats through the real daemon: the extractor each plan names is the one its samples vote by."""

import grpc
import pytest

from conftest import SMALL_POLICY, DaemonThread, make_settings
from ponder.client import PonderError
from ponderd.answers import extractor
from ponderd.request.voting import weighted_tally

pytestmark = pytest.mark.model

QUESTION = "Question: Which animal barks?\nA) cat\nB) dog\nC) fish\nAnswer with A, B or C."


def voted(r):
    """The answers of the finished samples that said something extractable."""
    return [s.answer for s in r.samples if s.finish_reason in ("stop", "length") and s.answer]


def test_choice_votes_letters_only_and_samples_without_one_do_not_vote(shared_daemon):
    with shared_daemon.client() as c:
        r = c.ask(QUESTION, samples=5, thinking_tokens=0, seed=3, answer_format="choice")
    assert r.plan.answer_format == "choice"
    assert "client asked for answer_format choice" in r.plan.reasons
    assert voted(r), [s.text for s in r.samples]
    assert all(a in "ABCDEFGHIJ" and len(a) == 1 for a in voted(r))
    assert sum(v.count for v in r.votes) == len(voted(r))
    if r.votes:
        assert r.answer == r.votes[0].answer


def test_the_same_samples_vote_differently_by_format(shared_daemon):
    # Same seed, same text: only the extraction differs, so the formats can be compared sample by sample.
    with shared_daemon.client() as c:
        auto = c.ask(QUESTION, samples=3, thinking_tokens=0, seed=3)
        number = c.ask(QUESTION, samples=3, thinking_tokens=0, seed=3, answer_format="number")
    assert auto.plan.answer_format == "auto" and number.plan.answer_format == "number"
    for a, n in zip(auto.samples, number.samples):
        if a.finish_reason in ("stop", "length") and n.finish_reason in ("stop", "length"):
            assert a.text == n.text
            assert (a.answer, n.answer) == (extractor("auto")(a.text), extractor("number")(n.text))


def test_free_text_runs_one_sample_and_nothing_is_voted(shared_daemon):
    with shared_daemon.client() as c:
        r = c.ask("Write two lines about 3 cats.", level="careful", seed=5, answer_format="free")
    assert (r.plan.samples, r.plan.answer_format) == (1, "free")
    assert "answer_format free: free text is not voted, so one sample" in r.plan.reasons
    assert len(r.samples) == 1 and r.samples[0].answer == "" and not r.votes
    assert r.text and r.answer == ""
    assert r.text == r.samples[0].text


def test_an_unknown_format_is_refused_with_a_hint(shared_daemon):
    with shared_daemon.client() as c, pytest.raises(PonderError) as err:
        c.ask("What is 2 + 2?", answer_format="numbers")
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "did you mean 'number'?" in err.value.message


def test_a_weighted_level_votes_by_confidence(tmp_path):
    policy = tmp_path / "weighted.toml"
    policy.write_text(SMALL_POLICY.read_text().replace("[levels.careful]\n", '[levels.careful]\nvote = "weighted"\n'))
    d = DaemonThread(make_settings(tmp_path / "state", policy=policy)).start()
    try:
        with d.client() as c:
            r = c.ask("What is 2 + 3? Reply with just the number.", level="careful", seed=11)
    finally:
        d.stop()
    assert r.plan.vote == "weighted" and r.usage.samples_stopped == 0  # a weighted vote stops nothing early
    done = [s for s in r.samples if s.finish_reason in ("stop", "length")]
    expected = weighted_tally([s.answer for s in done], [s.confidence for s in done])
    assert [(v.answer, v.weight) for v in r.votes] == [(a, pytest.approx(w)) for a, w in expected]
    assert all(v.count == sum(1 for s in done if s.answer == v.answer) for v in r.votes)
    if r.votes:
        assert r.answer == r.votes[0].answer
