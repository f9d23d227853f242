"""Chunked prefill in the real engine: running samples keep stepping while a long prompt is decoded."""

import asyncio
import threading

import pytest

from ponderd.answers import extract_answer
from ponderd.engine import GenerationJob
from ponderd.engine.llama import LlamaEngine
from ponderd.settings import ModelSettings

pytestmark = pytest.mark.model

CHUNK = 64


@pytest.fixture(scope="module")
def engine():
    e = LlamaEngine(ModelSettings(n_ctx=2048, n_seq_max=4, prefill_chunk=CHUNK), max_queue=4)
    e.start()
    yield e
    e.close()


def test_a_long_prompt_is_decoded_in_chunks_between_the_running_samples_steps(engine):
    log: list[str] = []
    lock = threading.Lock()
    a_started = threading.Event()

    def sink(label):
        def on_text(sample, phase, text):
            with lock:
                log.append(label)
            if label == "a":
                a_started.set()
        return on_text

    long_prompt = "Summarise this: " + "the quick brown fox jumps over the lazy dog. " * 60
    a = GenerationJob(engine.prepare("", "Think about the sea."), 1, 300, 300, 1, extract_answer,
                      lambda answers, remaining: False, sink("a"))
    b = GenerationJob(engine.prepare("", long_prompt), 1, 0, 4, 1, extract_answer,
                      lambda answers, remaining: False, sink("b"))
    chunks = -(-len(b.prompt.tokens) // CHUNK)
    assert chunks >= 8

    async def main():
        running = asyncio.ensure_future(engine.generate(a))
        await asyncio.to_thread(a_started.wait, 120)  # a is generating
        with lock:
            before = len(log)
        second = await engine.generate(b)
        first = await running
        return before, second, first

    before, rb, ra = asyncio.run(main())
    assert not rb.error and rb.samples[0].answer_tokens >= 1
    assert not ra.error
    after = log[before:]
    # Between b's arrival and its first text, a stepped once after each of b's chunks but the last.
    a_while_b_prefilled = after.index("b")
    assert a_while_b_prefilled >= chunks - 1, (a_while_b_prefilled, chunks)


def test_a_bad_setting_is_refused():
    from ponderd.settings import SettingsError, load_settings

    with pytest.raises(SettingsError, match="model.prefill_chunk must be >= 0"):
        load_settings(env={}, overrides={"model": {"prefill_chunk": -1}})


def test_the_template_opening_is_decoded_once_and_shared_by_every_prompt_that_begins_with_it(engine):
    plain, other = engine.prepare("", "What is 2 + 2?"), engine.prepare("", "Name a colour.")
    custom = engine.prepare("You add numbers.", "What is 2 + 2?")
    prefix = engine._prefix
    # The cache holds the opening the default system prompt gives every prompt.
    assert len(prefix) > 20 and list(plain.tokens[: len(prefix)]) == prefix == list(other.tokens[: len(prefix)])
    assert list(custom.tokens[: len(prefix)]) != prefix
    decoded: list[tuple[int, int]] = []
    original = engine._decode_prompt

    def spy(tokens, seqs, begin=0, end=None, logits=True):
        decoded.append((begin, len(tokens) if end is None else end))
        return original(tokens, seqs, begin, end, logits)

    engine._decode_prompt = spy
    try:
        jobs = [GenerationJob(p, 2, 0, 6, 9, extract_answer, lambda answers, remaining: False) for p in (plain, custom, plain)]

        async def one(job):
            return await engine.generate(job)

        results = [asyncio.run(one(j)) for j in jobs]
    finally:
        del engine._decode_prompt
    # Each prompt decodes only what follows the part it shares with the cache.
    shared_custom = next(k for k, (x, y) in enumerate(zip(custom.tokens, prefix)) if x != y)
    assert decoded == [(len(prefix), len(plain.tokens)), (shared_custom, len(custom.tokens)), (len(prefix), len(plain.tokens))]
    assert all(not r.error and len(r.samples) == 2 for r in results)
    # The cache is unchanged by the jobs that used it: the same job gives the same samples.
    assert [s.text for s in results[0].samples] == [s.text for s in results[2].samples]
    assert [s.confidence for s in results[0].samples] == [s.confidence for s in results[2].samples]
    # Every cell the jobs took is free again; the cache's own are not the samples' to use.
    assert engine._free_cells == engine.limits.n_ctx == 2048 and engine.queue_depth() == 0


def test_without_the_prefix_cache_every_prompt_is_decoded_whole():
    e = LlamaEngine(ModelSettings(n_ctx=512, n_seq_max=2, prefix_cache=False), max_queue=2)
    e.start()
    try:
        assert e._prefix == [] and e.limits.n_ctx == 512
        job = GenerationJob(e.prepare("", "Hi"), 1, 0, 4, 1, extract_answer, lambda answers, remaining: False)
        assert not asyncio.run(e.generate(job)).error
    finally:
        e.close()
