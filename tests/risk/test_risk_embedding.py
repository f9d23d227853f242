"""The second view (risk/embed.py): embeddings beside the n-grams, scored the same way training fitted them."""

import hashlib

import numpy as np
import pytest
from scipy import sparse

from ponderd.errors import ArtifactError
from ponderd.risk import artifact, corpus, embed
from ponderd.risk.train import Hyper, train


class HashEmbedder:
    """A deterministic stand-in at the Embedder seam: 16 dimensions from the text's character trigrams."""

    name = "hash-16"

    def __init__(self):
        self.calls = 0

    def embed(self, texts):
        self.calls += len(texts)
        rows = np.zeros((len(texts), 16), dtype=np.float32)
        for r, t in enumerate(texts):
            for i in range(len(t) - 2):
                rows[r, hashlib.blake2b(t[i : i + 3].encode(), digest_size=1).digest()[0] % 16] += 1
        return rows


@pytest.fixture(scope="module")
def small():
    examples = corpus.load(corpus.training_files())
    # Every 20th line: all three severities, a few hundred queries, seconds to train.
    return examples[::20]


@pytest.fixture(scope="module")
def embedded(small):
    return train(small, small[:50], 0.95, Hyper(embedding=1.0, folds=3), embedder=HashEmbedder()).model


def test_the_embedding_view_is_scored_as_it_was_fitted(embedded, small):
    p = embedded.parts
    texts = [e.text for e in small[:40]]
    view = p["embedding"]
    dense = (HashEmbedder().embed(texts).astype(np.float64) - view["mean"]) * view["scale"]
    x = sparse.hstack([p["word"].transform([embedded.word_input(t) for t in texts]),
                       p["char"].transform([embedded.char_input(t) for t in texts]), sparse.csr_matrix(dense)]).tocsr()
    z = embedded.manifest["temperatures"]["severity"] * p["severity"].decision_function(x)
    expected = np.exp(z - z.max(axis=1, keepdims=True))
    expected /= expected.sum(axis=1, keepdims=True)
    for text, row in zip(texts, expected):
        np.testing.assert_allclose(embedded.probabilities(text)[0], row, atol=1e-9)
    assert embedded.manifest["hyper"]["embedding"] == 1.0 and embedded.manifest["embedding_model"] == "hash-16"


def test_a_recipe_with_the_view_needs_an_embedder(small):
    with pytest.raises(ValueError, match="needs an embedder"):
        train(small, [], 0.95, Hyper(embedding=1.0, folds=3))


def test_an_embedding_model_round_trips_and_refuses_another_embedding_model(embedded, tmp_path):
    artifact.save(embedded, tmp_path / "m")
    back = artifact.load(tmp_path / "m", HashEmbedder())
    np.testing.assert_allclose(back.probabilities("is 40A ok on 2.5mm2")[0], embedded.probabilities("is 40A ok on 2.5mm2")[0])

    class Other(HashEmbedder):
        name = "other-16"

    with pytest.raises(ArtifactError, match="trained on embeddings of hash-16"):
        artifact.load(tmp_path / "m", Other())


def test_the_cache_embeds_each_text_once_and_keeps_vectors_without_pickle(tmp_path):
    inner = HashEmbedder()
    cache = embed.CachedEmbedder(inner, tmp_path / "e.npz")
    first = cache.embed(["a b c", "d e f", "a b c"])
    assert inner.calls == 2
    cache.save()
    again = embed.CachedEmbedder(inner, tmp_path / "e.npz")
    np.testing.assert_array_equal(again.embed(["d e f", "a b c"]), first[[1, 0]])
    assert inner.calls == 2
    with np.load(tmp_path / "e.npz", allow_pickle=False) as z:
        assert str(z["model"]) == "hash-16"


@pytest.mark.model
def test_the_served_model_gives_one_mean_pooled_vector_per_query():
    e = embed.LlamaEmbedder()
    v = e.embed(["Go ahead?", "my 3 year old weighs 14kg, how much paracetamol?", "Go ahead?"])
    assert v.shape[0] == 3 and v.shape[1] >= 64
    np.testing.assert_allclose(v[0], v[2], atol=1e-5)
    assert not np.allclose(v[0], v[1])


@pytest.fixture(scope="module")
def cascade(small):
    return train(small, small[:60], 0.95, Hyper(embedding=1.0, cascade=0.8, folds=3), embedder=HashEmbedder())


def test_the_cascade_embeds_only_unsure_verdicts_below_high(cascade, small):
    model = cascade.model
    texts = [e.text for e in corpus.load(corpus.heldout_files())[::10]]
    model.second._embedder = counter = HashEmbedder()
    routed = 0
    for text in texts:
        first = model.first.score(text)
        p_high, top = first.severity_probs["high"], max(first.severity_probs.values())
        asks = p_high < 0.9 and (p_high >= model.first.thresholds.high / 3 or top < 0.8)
        before = counter.calls
        got = model.score(text, explain=True)
        assert counter.calls - before == int(asks), text
        want = model.second.score(text) if asks else first
        assert (got.severity, got.severity_probs, got.needs_reasoning) == (want.severity, want.severity_probs, want.needs_reasoning)
        assert got.model_version == model.version and model.routed(text) == asks
        routed += asks
    # Both outcomes happen on this sample, so both branches above were checked.
    assert 0 < routed < len(texts)


def test_the_cascade_reports_what_it_scores_and_round_trips(cascade, small, tmp_path):
    from ponderd.risk.cascade import CascadeModel
    from ponderd.risk.train import evaluate

    model = cascade.model
    assert model.manifest["metrics"] == evaluate(model, small[:60])["summary"] == cascade.heldout["summary"]
    share = model.manifest["second_view"]["heldout_share"]
    assert share == sum(model.routed(e.text) for e in small[:60]) / 60
    # The two models share the vectorizers: one set is stored.
    assert model.second._vecs is model.first._vecs
    artifact.save(model, tmp_path / "c")
    back = artifact.load(tmp_path / "c", HashEmbedder())
    assert isinstance(back, CascadeModel) and back.confidence == 0.8
    for e in small[:40]:
        assert back.score(e.text) == model.score(e.text)


def test_a_cascade_without_its_embedding_model_serves_its_ngram_stage(cascade, tmp_path, monkeypatch, caplog):
    from ponderd.risk.model import RiskModel

    artifact.save(cascade.model, tmp_path / "c")

    def missing(*a, **k):
        raise RuntimeError("the embedded default model is not installed")

    monkeypatch.setattr(embed, "LlamaEmbedder", missing)
    served = artifact.load(tmp_path / "c")
    assert type(served) is RiskModel and "serving its n-gram stage alone" in caplog.text
    text = "is 40A ok on 2.5mm2"
    assert served.score(text) == cascade.model.first.score(text)


def test_with_the_second_view_off_a_cascade_serves_its_ngram_stage_and_an_every_query_model_is_refused(
        cascade, embedded, tmp_path):
    from ponderd.risk import ClassifierHolder
    from ponderd.risk.model import RiskModel

    artifact.save(cascade.model, tmp_path / "c")
    served = artifact.load(tmp_path / "c", HashEmbedder(), second_view=False)
    assert type(served) is RiskModel and served.embedder is None
    for e in corpus.load(corpus.heldout_files())[::50]:
        assert served.score(e.text) == cascade.model.first.score(e.text)
    # The daemon's holder passes risk.second_view through, on start and on reload.
    holder = ClassifierHolder(tmp_path / "state", tmp_path / "c", second_view=False)
    assert type(holder.current()) is RiskModel and type(holder.reload()) is RiskModel
    artifact.save(embedded, tmp_path / "e")
    with pytest.raises(ArtifactError, match="reads an embedding of every query, and risk.second_view is off"):
        artifact.load(tmp_path / "e", HashEmbedder(), second_view=False)


def test_when_embedding_fails_the_cascade_keeps_the_ngram_verdict_and_says_so(cascade, caplog):
    model = cascade.model

    class Broken(HashEmbedder):
        def embed(self, texts):
            raise RuntimeError("llama_decode returned -1")

    texts = [e.text for e in corpus.load(corpus.heldout_files())[::10]]
    routed = [t for t in texts if model.routed(t)]
    assert len(routed) >= 10
    model.second._embedder = Broken()
    try:
        for text in routed[:10]:
            assert model.score(text) == model.first.score(text)
    finally:
        model.second._embedder = HashEmbedder()
    assert model.embedding_failures == 10
    warnings = [r.getMessage() for r in caplog.records if "embedding a query failed" in r.getMessage()]
    # The first failure and the tenth are logged, not every one.
    assert len(warnings) == 2 and "RuntimeError: llama_decode returned -1" in warnings[0]
    assert "10 time(s) so far" in warnings[1]


def test_a_long_query_is_cut_to_max_tokens_and_read_back():
    words = lambda t: t.split()  # noqa: E731  (a whitespace tokenizer)
    back = " ".join
    assert embed.cut("a b c", words, back) == "a b c"
    assert embed.cut("", words, back) == " "
    assert embed.cut("w " * (embed.MAX_TOKENS + 5), words, back) == " ".join(["w"] * embed.MAX_TOKENS)


def test_a_query_the_ngram_stage_decides_is_scored_without_suspending_and_a_routed_one_awaits_its_view(cascade):
    """The request path's scoring (request/pipeline.py `_score`, through the daemon's timing
    wrapper): a query the cascade does not embed completes at its first step, so under
    streaming load it never waits behind the event loop's other callbacks; a routed one
    suspends on its view and ends with the score `score` gives."""
    import asyncio

    from ponderd.request.inflight import Stop
    from ponderd.request.pipeline import _score
    from ponderd.serve.telemetry import _TimedClassifier

    class Timings:
        def __init__(self):
            self.times = []

        def classified(self, seconds):
            self.times.append(seconds)

    class Awaited(HashEmbedder):
        """Its view waits on a gate the test opens, as the engine's future waits for its turn."""

        async def aembed(self, text):
            self.waiting.set()
            await self.gate.wait()
            return self.embed([text])[0]

    model = cascade.model
    model.second._embedder = embedder = Awaited()
    telemetry = Timings()
    timed = _TimedClassifier(model, telemetry)
    texts = [e.text for e in corpus.load(corpus.heldout_files())[::10]]
    decided = [t for t in texts if not model.routed(t)][:5]
    routed = [t for t in texts if model.routed(t)][:5]
    assert len(decided) == len(routed) == 5
    try:
        for text in decided:
            step = _score(timed, text, False, Stop())
            with pytest.raises(StopIteration) as done:
                step.send(None)  # no await reached: the score is the coroutine's return value
            assert done.value.value == model.score(text)

        async def main():
            for text in routed:
                embedder.waiting, embedder.gate = asyncio.Event(), asyncio.Event()
                task = asyncio.ensure_future(_score(timed, text, False, Stop()))
                await asyncio.wait_for(embedder.waiting.wait(), 10)
                assert not task.done()  # suspended on its view
                embedder.gate.set()
                assert await asyncio.wait_for(task, 10) == model.score(text)

        asyncio.run(main())
    finally:
        model.second._embedder = HashEmbedder()
    # Every score was timed once, awaited or not.
    assert len(telemetry.times) == 10
