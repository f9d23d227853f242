"""The second feature view: the served model's mean-pooled hidden state (docs/risk.md, "A second view").

The n-gram view cannot know that a field it has no words for is high-stakes;
an embedding from a language model carries some meaning beyond surface words.
This module turns a query into the mean-pooled last hidden state of a GGUF
model loaded through llama-cpp-python (by default the embedded SmolLM2-135M
the engine serves, found the way engine/model_file.py finds it), and keeps the
vectors in a cache keyed by the model file and the text, so cross-validation
embeds each corpus line once.

On this project's CPU hosts one query costs 50-250 ms (about 3 ms a token,
and a second thread buys nothing), against under 1 ms for the n-gram path
(bench/risk_embedding.py measures both), so a served model asks for it only
where the n-grams are unsure (risk/cascade.py). Static word embeddings
(WordLlama, under 0.1 ms a query) were measured in its place and lost to the
n-grams alone (docs/risk.md).

Two embedders give the same vectors (the same model file, tokens and
llama.cpp settings; tests/engine/test_embeddings.py checks it): LlamaEmbedder
loads its own context (training, cross-validation, a daemon whose engine
serves another model), and EngineEmbedder asks the serving engine, whose owner
thread runs the embedding between decode steps — on a busy host a second
context's threads fought the engine's for the cores (docs/risk.md, "What it
costs").
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import os
import pathlib
import threading
from typing import Any, Callable, Protocol, Sequence

import numpy as np

from ponderd.engine.model_file import file_sha256

# One thread: on a shared two-core host a second thread bought nothing (measured).
THREADS = 1
CONTEXT = 512
# Enough for every corpus query; longer texts are cut to this many tokens.
MAX_TOKENS = 256


class Embedder(Protocol):
    name: str

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """One row per text (float32)."""


def default_model_path() -> pathlib.Path:
    from ponderd.engine.model_file import resolve_model_path

    return resolve_model_path(None)


def embedder_name(path: pathlib.Path) -> str:
    """What a model's embeddings are called (the artifact's `embedding_model`): file name, digest, pooling."""
    # The engine's digest of the same file (kept per size and mtime): the model is hashed once.
    return f"{path.name}:{file_sha256(path)[:16]}:mean"


def cut(text: str, tokenize: Callable[[str], Sequence[int]], detokenize: Callable[[Sequence[int]], str]) -> list[int]:
    """The tokens embedded for `text` (BOS first): at most MAX_TOKENS; a longer text is cut
    there and read back as text, as LlamaEmbedder does through llama-cpp-python."""
    tokens = list(tokenize(text or " "))[:MAX_TOKENS]
    if len(tokens) == MAX_TOKENS:
        tokens = list(tokenize(detokenize(tokens) or " "))[:CONTEXT]
    return tokens


class LlamaEmbedder:
    """Mean-pooled hidden state of a GGUF model, one query at a time.

    The file is identified (hashed) at once, so a model trained on another
    file's embeddings is refused on load; the llama.cpp context is made on
    the first query that needs it, so a cascade that rarely asks, or a daemon
    that never does, does not pay for it at start.
    """

    def __init__(self, path: pathlib.Path | None = None, threads: int = THREADS) -> None:
        self.path = path or default_model_path()
        self.name = embedder_name(self.path)
        self.threads = threads
        self._llm: Any = None
        self._lock = threading.Lock()

    def _load(self) -> Any:
        if self._llm is None:
            os.environ.setdefault("OMP_WAIT_POLICY", "passive")
            import llama_cpp

            self._llm = llama_cpp.Llama(
                str(self.path), embedding=True, n_ctx=CONTEXT, n_batch=CONTEXT, n_threads=self.threads,
                pooling_type=llama_cpp.LLAMA_POOLING_TYPE_MEAN, verbose=False,
            )
        return self._llm

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        rows = []
        for t in texts:
            # One text per hold of the lock: a retrain embedding the corpus
            # must not hold a served query's embedding for minutes.
            with self._lock:
                llm = self._load()
                tokens = llm.tokenize(t.encode("utf-8"), add_bos=True)[:MAX_TOKENS]
                text = llm.detokenize(tokens).decode("utf-8", "ignore") if len(tokens) == MAX_TOKENS else t
                rows.append(np.asarray(llm.embed(text or " "), dtype=np.float32))
        return np.vstack(rows) if rows else np.empty((0, 0), dtype=np.float32)


class EmbeddingEngine(Protocol):
    """What EngineEmbedder needs of the engine (engine/llama.py's LlamaEngine)."""

    def tokenize(self, text: str, special: bool = True, add_special: bool = False) -> tuple[int, ...]: ...

    def detokenize(self, tokens: Sequence[int]) -> str: ...

    def embed(self, tokens: Sequence[int]) -> concurrent.futures.Future: ...


class EngineEmbedder:
    """LlamaEmbedder's vectors, computed by the serving engine's owner thread (no second model load).

    `aembed` is the request path's: awaiting it waits for the engine's next
    turn (embeddings go ahead of new prompts' prefill), and cancelling it
    withdraws a job that has not started. `embed` blocks (any other thread).
    """

    def __init__(self, engine: EmbeddingEngine, path: pathlib.Path) -> None:
        self.engine = engine
        self.path = path
        self.name = embedder_name(path)
        self._offline: LlamaEmbedder | None = None

    def _tokens(self, text: str) -> list[int]:
        return cut(text, lambda t: self.engine.tokenize(t, special=False, add_special=True), self.engine.detokenize)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        rows = [self.engine.embed(self._tokens(t)).result() for t in texts]
        return np.vstack(rows) if rows else np.empty((0, 0), dtype=np.float32)

    def offline(self) -> LlamaEmbedder:
        """The same vectors from a context of its own, for bulk work (a retrain embedding the
        corpus): thousands of texts through the engine would hold generation for minutes."""
        if self._offline is None:
            self._offline = LlamaEmbedder(self.path)
        return self._offline

    async def aembed(self, text: str) -> np.ndarray:
        future = self.engine.embed(self._tokens(text))
        # wrap_future: cancelling the await cancels the engine's future, which withdraws the job.
        vector: np.ndarray = await asyncio.wrap_future(future)
        return vector


class CachedEmbedder:
    """An embedder whose vectors are kept in an .npz file (no pickle) keyed by text."""

    def __init__(self, inner: Embedder, path: pathlib.Path) -> None:
        self.inner = inner
        self.name = inner.name
        self.path = path
        self._rows: dict[str, np.ndarray] = {}
        if path.is_file():
            with np.load(path, allow_pickle=False) as z:
                if str(z["model"]) == inner.name:
                    self._rows = dict(zip((str(k) for k in z["keys"]), z["vectors"]))

    @staticmethod
    def key(text: str) -> str:
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def missing(self, texts: Sequence[str]) -> list[str]:
        return list(dict.fromkeys(t for t in texts if self.key(t) not in self._rows))

    def put(self, texts: Sequence[str], vectors: np.ndarray) -> None:
        """Keep vectors embedded elsewhere (e.g. by worker processes)."""
        for t, v in zip(texts, vectors):
            self._rows[self.key(t)] = v

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        todo = self.missing(texts)
        if todo:
            for t, v in zip(todo, self.inner.embed(todo)):
                self._rows[self.key(t)] = v
        return np.vstack([self._rows[self.key(t)] for t in texts])

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        keys = list(self._rows)
        tmp = self.path.with_suffix(".tmp.npz")
        np.savez(tmp, model=np.array(self.name), keys=np.array(keys), vectors=np.vstack([self._rows[k] for k in keys]))
        tmp.replace(self.path)


def offline(embedder: Any) -> Any:
    """The embedder to use for bulk work: its offline twin where it has one (EngineEmbedder), else itself."""
    twin = getattr(embedder, "offline", None)
    return twin() if twin is not None else embedder


def default_cache_path() -> pathlib.Path:
    base = pathlib.Path(os.environ.get("XDG_CACHE_HOME", pathlib.Path.home() / ".cache"))
    return base / "ponder" / "risk-embeddings.npz"


def cached(path: pathlib.Path | None = None) -> CachedEmbedder:
    return CachedEmbedder(LlamaEmbedder(), path or default_cache_path())
