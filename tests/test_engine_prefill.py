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
