"""Self-refinement through the real daemon: rounds after the vote, charged, reserved, and kept by the policy's rule."""

import pytest

from conftest import SMALL_POLICY, DaemonThread, make_settings
from ponder.client import PonderClient

pytestmark = pytest.mark.model

SUM = "What is 2 + 3? Reply with just the number."


@pytest.fixture(scope="module")
def refining(tmp_path_factory):
    policy = tmp_path_factory.mktemp("policy") / "refine.toml"
    text = SMALL_POLICY.read_text()
    # careful: keep a revision only when the vote was not decided; thorough: always keep it.
    text = text.replace("[levels.careful]\n", "[levels.careful]\nrefine = 1\nrefine_tokens = 24\n")
    text = text.replace("[levels.thorough]\n", '[levels.thorough]\nrefine = 2\nrefine_tokens = 24\nrefine_keep = "always"\n')
    policy.write_text(text)
    d = DaemonThread(make_settings(tmp_path_factory.mktemp("state"), policy=policy)).start()
    yield d
    d.stop()


def slow_client(d):
    """A slow, shared machine may need minutes for a request and its rounds."""
    return PonderClient(d.address, d.token("local"), timeout=900)


def charged(r):
    """The small policy's prices: 1 per 1000 prompt (and forced) tokens, 2 per 1000 thinking and answer tokens."""
    u = r.usage
    return ((u.prompt_tokens + u.forced_tokens) + 2 * (u.thinking_tokens + u.answer_tokens)) / 1000


def test_a_decided_vote_is_kept_whatever_the_revision_says(refining):
    with slow_client(refining) as c:
        r = c.ask(SUM, level="careful", thinking_tokens=0, seed=7)
    assert r.plan.refine == 1 and r.usage.stop_reason == "decided"  # "5", "5": the third could not change it
    (x,) = r.refinements
    assert x.round == 1 and x.text and x.prompt_tokens > r.usage.prompt_tokens - x.prompt_tokens
    assert r.voted_answer == r.votes[0].answer
    assert r.answer == r.voted_answer  # unless_decided: a decided vote stands
    assert x.kept == (x.answer == r.voted_answer)
    assert r.cost == pytest.approx(charged(r), abs=2e-6) and r.cost <= r.plan.worst_case_cost
    assert r.balance.spent == pytest.approx(r.cost) and r.balance.reserved == 0


def test_always_keeps_each_revision_and_rounds_build_on_the_last(refining):
    with slow_client(refining) as c:
        r = c.ask("Name a prime number between 10 and 20.", level="thorough", samples=2, thinking_tokens=0, seed=3)
    assert r.plan.refine == 2 and 1 <= len(r.refinements) <= 2
    kept = [x for x in r.refinements if x.kept]
    # Rounds stop at the first revision not kept (here: only one with nothing extractable).
    assert all(x.kept for x in r.refinements[:-1])
    assert (r.answer, r.text) == ((kept[-1].answer, kept[-1].text) if kept else (r.voted_answer, r.voted_text))
    assert r.cost == pytest.approx(charged(r), abs=2e-6) and r.cost <= r.plan.worst_case_cost
    assert r.usage.answer_tokens == sum(s.answer_tokens for s in r.samples) + sum(x.answer_tokens for x in r.refinements)


def test_without_refinement_the_voted_answer_is_the_answer(refining):
    with slow_client(refining) as c:
        r = c.ask(SUM, level="brief", thinking_tokens=0, seed=7)
    assert r.plan.refine == 0 and not r.refinements
    assert (r.voted_text, r.voted_answer) == (r.text, r.answer)
