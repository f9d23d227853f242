"""Escalation and pruning in the real engine: samples started late, samples stopped for low confidence."""

import asyncio

import pytest

from ponderd.answers import extract_answer
from ponderd.engine import GenerationJob
from ponderd.engine.confidence import WINDOW

pytestmark = pytest.mark.model


def job(e, prompt="Name a colour and say why you like it.", samples=4, thinking=0, answer=24, seed=3, **kw):
    return GenerationJob(e.prepare("", prompt), samples, thinking, answer, seed, extract_answer,
                         lambda answers, remaining: False, **kw)


def run(e, *jobs):
    async def main():
        return await asyncio.gather(*(e.generate(j) for j in jobs))

    return asyncio.run(main())


def test_when_the_first_samples_agree_the_rest_never_start(engine):
    (r,) = run(engine, job(engine, samples=5, first_samples=2, agreed=lambda answers: True))
    assert r.agreed_early and len(r.samples) == 2 and r.samples_run == 2
    assert [s.index for s in r.samples] == [0, 1]
    assert all(s.finish_reason in ("stop", "length") for s in r.samples)
    assert engine.queue_depth() == 0


def test_when_they_disagree_the_rest_are_drawn_and_start_from_the_prompt(engine):
    seen = []

    def disagree(answers):
        seen.append(list(answers))
        return False

    (late,) = run(engine, job(engine, samples=5, first_samples=2, agreed=disagree))
    assert not late.agreed_early and len(late.samples) == 5 and late.samples_run == 5
    assert [len(a) for a in seen] == [2]  # asked once, when the first two had finished
    assert all(s.finish_reason in ("stop", "length") and s.answer_tokens for s in late.samples)
    # The same seeds all at once: a late sample reads the same prompt and draws from the
    # same distribution (batch arithmetic may differ in the last bits, so no exact text check).
    (now,) = run(engine, job(engine, samples=5))
    assert [s.text for s in late.samples[:2]] == [s.text for s in now.samples[:2]]
    assert late.prompt_tokens == now.prompt_tokens


def test_a_bar_above_every_confidence_prunes_each_sample_at_its_first_full_window(engine):
    (r,) = run(engine, job(engine, prompt="Tell me a long story about the sea.", samples=3, answer=40,
                           prune_below=lambda confidences: 1.01))
    assert r.samples_pruned >= 1
    for s in r.samples:
        # Pruned at its 16th token, or done before it had a full window to judge.
        pruned = s.finish_reason == "pruned" and s.answer == "" and s.answer_tokens == WINDOW
        assert pruned or (s.finish_reason == "stop" and s.answer_tokens < WINDOW), s


def test_a_bar_below_every_confidence_prunes_nothing(engine):
    r0, r1 = run(engine, job(engine, samples=3, answer=40), job(engine, samples=3, answer=40, prune_below=lambda c: 0.0))
    assert r1.samples_pruned == 0
    assert [s.text for s in r0.samples] == [s.text for s in r1.samples]


def test_pruning_waits_for_finished_samples_and_they_set_the_bar(engine):
    bars = []

    def below(confidences):
        bars.append(list(confidences))
        return max(confidences) + 1 if confidences else None

    (r,) = run(engine, job(engine, prompt="Tell me a long story about the sea.", samples=4, answer=48, seed=5, prune_below=below))
    assert bars[0] == []  # asked at the start, with nothing finished: no bar yet
    finished = [s for s in r.samples if s.finish_reason in ("stop", "length")]
    assert [len(b) for b in bars[1:]] == list(range(1, len(finished) + 1))
    # Once one finished, every sample still running with a full window was pruned.
    assert r.samples_pruned + len(finished) == 4
