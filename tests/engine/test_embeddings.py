"""The second view read by the engine's owner thread (engine/llama.py `view`, engine/view.py, risk/embed.py EngineEmbedder).

The vectors must be LlamaEmbedder's (the shipped classifier was trained on
them), a view between decode steps must not change what the samples
generate, a generation after its view writes what it would have written
without it, the same prompt viewed again decodes nothing, and a caller that
goes away while its view waits must leave nothing queued.
"""

import asyncio
import concurrent.futures
import threading
import time

import numpy as np
import pytest

from conftest import make_settings
from ponderd.answers import extract_answer
from ponderd.engine import GenerationJob
from ponderd.errors import Unavailable
from ponderd.risk import corpus, embed
from ponderd.serve.app import build

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def engine_embedder(engine):
    return embed.EngineEmbedder(engine, embed.default_model_path())


def test_the_engine_gives_llama_embedders_vectors(engine_embedder):
    texts = [e.text for e in corpus.load(corpus.heldout_files())][:6]
    texts += ["", "ok", "word " * 400]  # empty, one token, cut at MAX_TOKENS and read back
    reference = embed.LlamaEmbedder()
    assert engine_embedder.name == reference.name  # so an artifact trained on one loads with the other
    got, want = engine_embedder.embed(texts), reference.embed(texts)
    assert got.shape == want.shape and got.dtype == np.float32
    # The same code (engine/view.py) on the same tokens and weights; the engine's view context
    # may run more threads, which may only round differently, far below what moves a verdict
    # (test_a_daemon_quote_assesses_through_the_engines_embedder compares the scores).
    assert float(np.max(np.abs(got - want))) < 1e-3
    # RMS-normalised rows of distinct queries.
    assert np.sqrt(np.mean(got.astype(np.float64) ** 2, axis=1)) == pytest.approx(1.0, abs=1e-3)
    assert not np.allclose(got[0], got[1], atol=1e-2)


def test_the_view_is_the_early_layers_reading_not_the_last_layers():
    import llama_cpp as L

    from ponderd.engine import view as view_module

    reference = embed.LlamaEmbedder()
    layer_view, prompt = reference._load()
    tokens, first, end = prompt("Is it safe to double a child's fever medicine dose?")
    at_layer = layer_view.decode(tokens, first, end)
    # The same model read at its last layer (the whole pass) is another vector: the view is the early layer's.
    model = L.llama_get_model(layer_view._ctx)
    whole = view_module.LayerView(L, model, layer_view.opening, 1, layer=L.llama_model_n_layer(model))
    try:
        last = whole.decode(tokens, first, end)
    finally:
        whole.close()
    assert layer_view.layer == view_module.VIEW_LAYER < whole.layer
    assert at_layer.shape == last.shape and not np.allclose(at_layer, last, atol=1e-2)
    # And reading it again from the kept opening gives the same vector (the opening's cells stay whole).
    assert np.array_equal(layer_view.decode(tokens, first, end), at_layer)


def test_a_generation_after_its_view_writes_the_same_text_and_a_repeated_view_decodes_nothing(engine, engine_embedder):
    text = "Name three colours."
    tokens, first, end = engine_embedder.prompt(text)
    assert tuple(engine.prepare("", text).tokens) == tokens  # the served system prompt is the view's
    alone = asyncio.run(engine.generate(_job(engine, prompt=text)))
    decoded = engine.views_decoded
    vector = engine_embedder.embed([text])
    assert engine.views_decoded == decoded + 1
    after_view = asyncio.run(engine.generate(_job(engine, prompt=text)))
    # The view's context is its own: the served context's cells and outputs are as they were.
    assert [s.text for s in after_view.samples] == [s.text for s in alone.samples]
    # The same prompt again (a quote, then its ask): the kept vector, nothing decoded.
    assert np.array_equal(engine_embedder.embed([text]), vector) and engine.views_decoded == decoded + 1
    assert [s.answer_tokens for s in after_view.samples] == [s.answer_tokens for s in alone.samples]


def _job(engine, on_text=None, seed=7, prompt="Name three colours."):
    job = GenerationJob(engine.prepare("", prompt), 2, 0, 24, seed, extract_answer,
                        lambda answers, remaining: False)
    if on_text is not None:
        job.on_text = on_text
    return job


def test_embedding_between_decode_steps_leaves_the_samples_text_unchanged(engine, engine_embedder):
    alone = asyncio.run(engine.generate(_job(engine)))
    futures: list[concurrent.futures.Future] = []
    view = engine_embedder.prompt("How much paracetamol for a 14 kg toddler?")

    def sink(sample, kind, text):
        if len(futures) < 3:  # on the owner thread, mid-generation: queued for its next turn
            futures.append(engine.view(*view))

    before = engine.embedded
    mixed = asyncio.run(engine.generate(_job(engine, sink)))
    assert len(futures) == 3 and all(f.result(timeout=60).shape == futures[0].result().shape for f in futures)
    # They ran while the job did: the job's own steps went on between them.
    assert engine.embedded - before == 3
    assert [s.text for s in mixed.samples] == [s.text for s in alone.samples]
    assert [s.answer_tokens for s in mixed.samples] == [s.answer_tokens for s in alone.samples]


def test_an_embedding_cancelled_while_it_waits_is_withdrawn_and_never_runs(engine, engine_embedder):
    hold, held = threading.Event(), threading.Event()
    view = engine_embedder.prompt("Can I mix bleach and ammonia?")

    def sink(sample, kind, text):
        # Hold the owner thread inside a step, so a new embedding must wait.
        if not held.is_set():
            held.set()
            hold.wait(60)

    async def main():
        task = asyncio.ensure_future(engine.generate(_job(engine, sink)))
        await asyncio.to_thread(held.wait, 60)
        before = engine.embedded
        waiting = asyncio.ensure_future(engine_embedder.aembed("Can I mix bleach and ammonia?"))
        while engine.embeds_waiting() == 0:  # observable: queued behind the held step
            await asyncio.sleep(0.005)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert engine.embeds_waiting() == 0
        hold.set()
        result = await task
        # A later embedding runs: the withdrawn one did not.
        await asyncio.wrap_future(engine.view(*view))
        return before, result

    before, result = asyncio.run(main())
    assert not result.error and engine.embedded == before + 1


def test_a_daemon_quote_assesses_through_the_engines_embedder(daemon):
    holder = daemon.daemon.classifier
    model = holder.current()
    engine = daemon.daemon.engine.get(daemon.settings.model.name)
    assert isinstance(holder.embedder, embed.EngineEmbedder) and model.embedder is holder.embedder
    assert holder.embedder.engine is engine
    routed = next(t for t in (e.text for e in corpus.load(corpus.heldout_files())) if model.routed(t))
    before = engine.embedded
    with daemon.client() as c:
        quoted = c.quote(routed).assessment
    assert engine.embedded == before + 1
    # An ask of the same query: its view is kept, so nothing is decoded for it.
    decoded = engine.views_decoded
    with daemon.client() as c:
        c.ask(routed, level="direct")
    assert engine.embedded == before + 2 and engine.views_decoded == decoded
    # What the cascade's second stage decides with LlamaEmbedder's vectors, not the n-gram stage's verdict.
    model.second._embedder = embed.LlamaEmbedder()
    try:
        want = model.score(routed)
    finally:
        model.second._embedder = holder.embedder
    ngrams = model.first.score(routed)
    assert dict(quoted.severity_probs) == pytest.approx(want.severity_probs, abs=1e-3)
    assert want.severity_probs != pytest.approx(ngrams.severity_probs, abs=1e-3)


def test_embedding_is_refused_once_the_engine_closes(tmp_path):
    d = build(make_settings(tmp_path / "state"))
    engine = d.engine.get(d.settings.model.name)
    engine.start()
    engine.close()
    with pytest.raises(Unavailable, match="shutting down"):
        engine.view([1, 2, 3], 1, 3)


def test_an_embedding_is_not_held_behind_a_long_prompts_chunked_prefill():
    from ponderd.engine.llama import LlamaEngine
    from ponderd.settings import ModelSettings

    e = LlamaEngine(ModelSettings(n_ctx=2048, n_seq_max=2, prefill_chunk=32), max_queue=4)
    e.start()
    try:
        events: list[str] = []
        lock = threading.Lock()
        long_prompt = "Summarise this: " + "the tide comes in and the tide goes out. " * 90

        def sink(sample, kind, text):
            with lock:
                if "text" not in events:
                    events.append("text")

        job = GenerationJob(e.prepare("", long_prompt), 1, 0, 2, 1, extract_answer, lambda a, r: False, on_text=sink)
        assert len(job.prompt.tokens) > 20 * 32  # twenty chunks or more
        view = embed.EngineEmbedder(e, embed.default_model_path()).prompt("Is 40A fine on 2.5mm2 cable?")

        async def main():
            generating = asyncio.ensure_future(e.generate(job))
            while e.queue_depth() == 0:  # observable: the long job is queued or prefilling
                await asyncio.sleep(0.001)
            await asyncio.wrap_future(e.view(*view))
            with lock:
                events.append("embedded")
            return await generating

        result = asyncio.run(main())
        assert not result.error
        assert events == ["embedded", "text"]
    finally:
        e.close()


def test_an_ask_cancelled_while_its_assessment_waits_for_the_engine_reserves_and_records_nothing(daemon):
    """The request path's await on the embedding: cancelled there, nothing is reserved or
    written, the embedding is withdrawn, and the daemon serves on."""
    import sqlite3
    import time

    from ponder.aio import AsyncPonderClient

    model = daemon.daemon.classifier.current()
    engine = daemon.daemon.engine.get(daemon.settings.model.name)
    routed = next(t for t in (e.text for e in corpus.load(corpus.heldout_files())) if model.routed(t))
    hold, held = threading.Event(), threading.Event()

    def sink(sample, kind, text):
        if not held.is_set():  # hold the owner thread inside a step: the ask's embedding must wait
            held.set()
            hold.wait(60)

    def rows(sql):
        with sqlite3.connect(daemon.settings.database) as conn:
            return conn.execute(sql).fetchall()

    def until(condition, what):
        deadline = time.monotonic() + 30
        while not condition():
            assert time.monotonic() < deadline, what
            time.sleep(0.01)

    async def main():
        blocker = asyncio.ensure_future(engine.generate(_job(engine, sink)))
        await asyncio.to_thread(held.wait, 60)
        before = engine.embedded
        async with AsyncPonderClient(daemon.address, daemon.token()) as c:
            asking = asyncio.ensure_future(c.ask(routed))
            while engine.embeds_waiting() == 0:  # observable: the ask is at its assessment's await
                await asyncio.sleep(0.005)
            asking.cancel()
            with pytest.raises(asyncio.CancelledError):
                await asking
            await asyncio.to_thread(until, lambda: engine.embeds_waiting() == 0, "the embedding was not withdrawn")
            await asyncio.to_thread(until, lambda: not daemon.daemon.pipeline.live, "the request is still live")
        hold.set()
        await blocker
        return before

    before = asyncio.run(main())
    assert engine.embedded == before  # the withdrawn embedding never ran
    assert rows("SELECT * FROM reservations") == [] and rows("SELECT * FROM spend") == []
    with daemon.client() as c:  # and the daemon serves on, through the same view
        assert c.quote(routed).assessment.model_version == model.version
    assert engine.embedded == before + 1


def test_only_a_view_whose_ask_follows_holds_the_next_step(engine, engine_embedder):
    """`linger`: after an ask's view the loop waits (briefly) for its job; after a quote's it does not."""
    from ponderd.engine.llama import LINGER_S

    started = threading.Event()
    # Long enough to outlast both views (about a second); cancelled once they are done.
    job = GenerationJob(engine.prepare("", "Count from 1 to 500, one number per line."), 1, 0, 400, 3, extract_answer,
                        lambda answers, remaining: False, on_text=lambda sample, kind, text: started.set())

    async def main():
        running = asyncio.ensure_future(engine.generate(job))
        await asyncio.to_thread(started.wait, 60)  # observable: a job is generating, so there is a step to hold
        before = engine.lingered
        await asyncio.wrap_future(engine.view(*engine_embedder.prompt("A quote's view."), linger=False))
        after_quote = engine.lingered
        await asyncio.wrap_future(engine.view(*engine_embedder.prompt("An ask's view."), linger=True))
        # The loop holds after resolving the view; nothing follows it, so it holds the whole LINGER_S.
        deadline = time.monotonic() + 30
        while engine.lingered == after_quote and not running.done() and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        still_running = not running.done()
        job.cancel()
        assert not (await running).error
        return before, after_quote, engine.lingered, still_running

    before, after_quote, after_ask, still_running = asyncio.run(main())
    assert still_running, "the job ended before the views ran: nothing to hold"
    assert after_quote == before
    assert after_ask - after_quote >= LINGER_S * 0.9


def test_a_view_whose_layer_llama_cpp_never_computes_fails_with_the_cause_and_leaves_the_view_usable():
    reference = embed.LlamaEmbedder()
    layer_view, prompt = reference._load()
    tokens, first, end = prompt("What is the boiling point of water?")
    want = layer_view.decode(tokens, first, end)
    layer_view._want, kept = b"no-such-tensor", layer_view._want
    try:
        with pytest.raises(RuntimeError, match="computed no no-such-tensor"):
            layer_view.decode(tokens, first, end)
    finally:
        layer_view._want = kept
    # Nothing of the failed view is left in its sequence: the next view is as before.
    assert np.array_equal(layer_view.decode(tokens, first, end), want)
