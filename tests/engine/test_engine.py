"""The llama.cpp engine itself, with the real embedded model: batching, admission, caps, cancellation."""

import asyncio
from dataclasses import replace

import pytest

from conftest import SMALL_POLICY
from ponderd.answers import extract_answer
from ponderd.engine import GenerationJob
from ponderd.engine.llama import CLOSE_TAG, OPEN_TAG, LlamaEngine
from ponderd.errors import Unavailable
from ponderd.planning.assessment import Assessment
from ponderd.planning.planner import Hints, plan_candidates
from ponderd.planning.policy import TenantRules
from ponderd.planning.policy_file import load_policy
from ponderd.request.voting import vote_decided
from ponderd.risk.score import RiskScore
from ponderd.settings import ModelSettings

pytestmark = pytest.mark.model

POLICY = load_policy(SMALL_POLICY)
ASSESS = Assessment("low", False, RiskScore("low", False, {"low": 1.0, "medium": 0.0, "high": 0.0}, 0.0, "test"))


def make_job(e, prompt="Tell me about the sea.", samples=2, thinking=8, answer=8, seed=1, decided=None, system=""):
    return GenerationJob(e.prepare(system, prompt), samples, thinking, answer, seed, extract_answer,
                         decided or (lambda answers, remaining: False))


def gather(e, jobs):
    async def main():
        return await asyncio.gather(*(e.generate(j) for j in jobs), return_exceptions=True)

    return asyncio.run(main())


def test_limits_come_from_the_context(engine):
    limits = engine.limits
    assert (limits.n_ctx, limits.n_seq_max) == (1024, 8)
    wrap_up = engine.tokenize(engine.settings.wrap_up, special=False)
    assert limits.forced_open == len(engine.tokenize(OPEN_TAG))
    assert limits.forced_close == len(engine.tokenize(CLOSE_TAG)) + len(wrap_up) and wrap_up
    assert limits.forced_skip == 0  # SmolLM2 is not a native reasoning model: no think block to skip


def test_jobs_larger_than_the_free_cells_wait_their_turn_and_all_finish(engine):
    # Each job needs over half of the 1024 cells: they must run one after another, not fail.
    jobs = [make_job(engine, samples=8, thinking=30, answer=30, seed=i) for i in range(3)]
    results = gather(engine, jobs)
    for r in results:
        assert not isinstance(r, Exception), r
        assert len(r.samples) == 8 and not r.error
        assert all(s.thinking_tokens <= 30 and s.answer_tokens <= 30 for s in r.samples)
    assert engine.queue_depth() == 0


def test_same_seed_same_samples(engine):
    a, b = gather(engine, [make_job(engine, seed=42), make_job(engine, seed=42)])
    assert [s.text for s in a.samples] == [s.text for s in b.samples]
    assert [s.thinking for s in a.samples] == [s.thinking for s in b.samples]
    assert [s.confidence for s in a.samples] == pytest.approx([s.confidence for s in b.samples])


def test_temperature_zero_is_greedy_and_each_job_keeps_its_own_sampler(engine):
    greedy = []
    for seed in (1, 2):
        job = make_job(engine, samples=2, seed=seed)
        job.temperature = 0.0
        greedy.append(job)
    hot = make_job(engine, samples=2, seed=3)
    hot.temperature, hot.top_p = 1.5, 0.9
    results = gather(engine, [*greedy, hot])
    texts = {(s.thinking, s.text) for r in results[:2] for s in r.samples}
    # Greedy ignores the seed: every sample of both greedy jobs is the same.
    assert len(texts) == 1
    assert all(s.thinking_tokens + s.answer_tokens > 0 for s in results[2].samples)


def test_confidence_is_read_from_the_logits_of_the_tokens_sampled(engine):
    # A question the model knows scores above an open-ended invention, every sample of it
    # (seen: 0.59-0.78 against 0.14-0.29).
    echo = make_job(engine, prompt="What is the capital of France?", samples=3, thinking=0, answer=16, seed=2)
    story = make_job(engine, prompt="Invent a strange word and define it.", samples=3, thinking=0, answer=16, seed=2)
    sure, unsure = gather(engine, [echo, story])
    for s in sure.samples + unsure.samples:
        assert 0.0 < s.confidence <= 1.0, s
    assert min(s.confidence for s in sure.samples) > max(s.confidence for s in unsure.samples)


def test_a_decided_vote_stops_the_other_samples(engine):
    # Every sample answers the same short thing, so the vote settles early.
    (r,) = gather(engine, [make_job(engine, prompt="Say OK.", samples=7, thinking=0, answer=2, decided=vote_decided)])
    reasons = [s.finish_reason for s in r.samples]
    assert r.samples_stopped == reasons.count("vote_decided")
    finished = [s.answer for s in r.samples if s.finish_reason in ("stop", "length")]
    if r.samples_stopped:
        assert vote_decided(finished, r.samples_stopped)


def test_once_the_vote_is_called_the_running_samples_stop_where_they_are(engine):
    # A rule that calls the vote at the first finished sample: whatever still runs then must stop in
    # that same step (the finisher's end-of-text token is not an answer token, hence the +1),
    # and what the stopped samples decoded is counted in the usage.
    (r,) = gather(engine, [make_job(engine, prompt="Name a colour and say why you like it.", samples=6, thinking=0,
                                    answer=24, seed=3, decided=lambda answers, remaining: True)])
    stopped = [s for s in r.samples if s.finish_reason == "vote_decided"]
    finished = [s for s in r.samples if s.finish_reason in ("stop", "length")]
    assert stopped and finished and r.samples_stopped == len(stopped)
    assert max(s.answer_tokens for s in stopped) <= min(s.answer_tokens for s in finished) + 1
    assert r.answer_tokens == sum(s.answer_tokens for s in r.samples)


def test_a_cancelled_job_stops_and_reports_what_it_used(engine):
    async def main():
        job = make_job(engine, samples=2, thinking=200, answer=200)
        task = asyncio.ensure_future(engine.generate(job))
        await asyncio.sleep(0.3)
        job.cancel()
        return await task

    r = asyncio.run(main())
    assert {s.finish_reason for s in r.samples} == {"cancelled"}
    assert 0 < r.thinking_tokens + r.answer_tokens < 2 * 400


def test_a_full_queue_is_refused(engine):
    async def main():
        jobs = [make_job(engine, samples=8, thinking=40, answer=20, seed=i) for i in range(8)]
        tasks = [asyncio.ensure_future(engine.generate(j)) for j in jobs]
        await asyncio.sleep(0.05)  # every job has been submitted (or refused)
        for j in jobs:
            j.cancel()
        return await asyncio.gather(*tasks, return_exceptions=True)

    results = asyncio.run(main())
    refused = [r for r in results if isinstance(r, Unavailable)]
    assert len(refused) >= 8 - 4 - 1  # 4 may wait, 1 may already run
    assert "already waiting for the model" in refused[0].message
    assert engine.queue_depth() == 0


def test_a_capped_sample_answers_after_the_wrap_up_and_the_reservation_is_exact(engine):
    # Thinking and answer caps both reached: every token the plan reserved was used, no more.
    hints = Hints(samples=3, thinking_tokens=6)
    job = make_job(engine, prompt="What is 12 + 30?", samples=3, thinking=6, answer=3, seed=4)
    rules = TenantRules("direct", "direct", frozenset(), 8, 64)
    level = replace(POLICY.levels[0], answer_tokens=3)
    (plan,) = plan_candidates(ASSESS, replace(POLICY, levels=(level,)), rules, hints, len(job.prompt.tokens), engine.limits)
    (r,) = gather(engine, [job])
    wrap = engine.settings.wrap_up
    for s in r.samples:
        assert s.thinking_capped and s.thinking_tokens == 6
        assert s.text.startswith(wrap) and len(s.text) > len(wrap)  # the model's own answer follows it
        assert s.answer_tokens == 3 and s.finish_reason == "length"
    assert r.forced_tokens == plan.forced_tokens
    assert (r.thinking_tokens, r.answer_tokens) == (plan.samples * plan.thinking_tokens, plan.samples * plan.answer_tokens)


def test_an_empty_wrap_up_only_closes_the_block():
    e = LlamaEngine(ModelSettings(n_ctx=512, n_seq_max=2, wrap_up=""), max_queue=2)
    e.start()
    try:
        assert e.limits.forced_close == len(e.tokenize(CLOSE_TAG))
        (r,) = gather(e, [make_job(e, samples=1, thinking=3, answer=3, seed=4)])
        assert r.samples[0].thinking_capped and r.forced_tokens == len(e.tokenize(OPEN_TAG)) + len(e.tokenize(CLOSE_TAG))
    finally:
        e.close()


def test_native_mode_opens_and_skips_the_think_block_itself():
    e = LlamaEngine(ModelSettings(n_ctx=512, n_seq_max=2, thinking="native"), max_queue=2)
    e.start()
    try:
        p = e.prepare("", "hi")
        assert p.open_thinking == e.tokenize(OPEN_TAG)
        assert p.skip_thinking == e.tokenize(OPEN_TAG + CLOSE_TAG)
        (r,) = gather(e, [make_job(e, samples=2, thinking=5, answer=4)])
        assert all(s.thinking_tokens <= 5 for s in r.samples)
        (r,) = gather(e, [make_job(e, samples=1, thinking=0, answer=4)])
        assert r.shared_forced_tokens == len(p.skip_thinking) and r.thinking_tokens == 0
    finally:
        e.close()
