"""The second feature view: an embedding of the query (docs/risk.md, "A second view").

The n-gram view cannot know that a field it has no words for is high-stakes;
an embedding carries some meaning beyond surface words. Two embedders:

- `static` (StaticEmbedder): WordLlama's static token embeddings, averaged
  (the `wordllama` package ships the weights, 256 dimensions): well under a
  millisecond a query, so a model can use it on every query;
- `served` (LlamaEmbedder): the mean-pooled last hidden state of a GGUF model
  loaded through llama-cpp-python (by default the embedded SmolLM2-135M the
  engine serves). On this project's CPU hosts one query costs 50-250 ms
  (7 ms a token on one core), so a model with it asks for it only where the
  n-grams are unsure (risk/cascade.py).

A model's manifest names the embedder it was trained on (`embedding_model`),
and `for_name` makes that embedder again when the model is loaded. Vectors
of the slow one are kept in a cache keyed by the model file and the text, so
cross-validation embeds each corpus line once.
"""

from __future__ import annotations

import functools
import hashlib
import os
import pathlib
import threading
from typing import Any, Protocol, Sequence

import numpy as np

# One thread: on a shared two-core host a second thread bought nothing (measured).
THREADS = 1
CONTEXT = 512
# Enough for every corpus query; longer texts are cut to this many tokens.
MAX_TOKENS = 256


class Embedder(Protocol):
    name: str
    # True where embedding one query is fast enough to run on the event loop.
    inline: bool

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """One row per text (float32)."""


KINDS = ("static", "served")


def make(kind: str) -> "Embedder":
    """A new embedder of one kind (KINDS)."""
    if kind == "static":
        return StaticEmbedder()
    if kind == "served":
        return LlamaEmbedder()
    raise ValueError(f"embedder must be one of {', '.join(KINDS)}, not {kind!r}")


def kind_of(name: str | None) -> str:
    """The kind of embedder a model's manifest names (`embedding_model`); models before the static one name the served model."""
    return "static" if (name or "").startswith(StaticEmbedder.PREFIX) else "served"


def for_name(name: str | None) -> "Embedder":
    """The embedder a model's manifest names."""
    return make(kind_of(name))


def default_model_path() -> pathlib.Path:
    from ..engine.model_file import resolve_model_path

    return resolve_model_path(None)


@functools.lru_cache(maxsize=8)
def _file_digest(path: pathlib.Path, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class LlamaEmbedder:
    """Mean-pooled hidden state of a GGUF model, one query at a time.

    The file is identified (hashed) at once, so a model trained on another
    file's embeddings is refused on load; the llama.cpp context is made on
    the first query that needs it, so a cascade that rarely asks, or a daemon
    that never does, does not pay for it at start.
    """

    inline = False

    def __init__(self, path: pathlib.Path | None = None, threads: int = THREADS) -> None:
        self.path = path or default_model_path()
        st = self.path.stat()
        self.name = f"{self.path.name}:{_file_digest(self.path, st.st_size, st.st_mtime_ns)[:16]}:mean"
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


class StaticEmbedder:
    """WordLlama's averaged static token embeddings, from the weights its package ships (no download).

    Scoring is a tokenizer pass and a mean over ~20 rows of a 32,000 x 256
    table, so it runs inline on every query. The name carries the package
    version and the weights' digest, so a model trained on other weights is
    refused on load.
    """

    PREFIX = "wordllama"
    inline = True
    CONFIG = "l2_supercat"
    DIM = 256

    def __init__(self) -> None:
        from importlib.metadata import version

        import wordllama
        from wordllama import WordLlama

        # The weights and tokenizer come with the package; never reach for a hub.
        # The package looks for its own tokenizer under "tokenizer/", not the
        # "tokenizers/" it ships, so it is named as the cache directory, where
        # both are found.
        package = pathlib.Path(wordllama.__file__).parent
        self._wl = WordLlama.load(self.CONFIG, dim=self.DIM, cache_dir=package, disable_download=True)
        weights = package / "weights" / WordLlama.get_filename(self.CONFIG, self.DIM)
        st = weights.stat()
        self.name = (f"{self.PREFIX}-{version('wordllama')}:{weights.stem}:"
                     f"{_file_digest(weights, st.st_size, st.st_mtime_ns)[:16]}:mean")
        self._lock = threading.Lock()

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.empty((0, 0), dtype=np.float32)
        with self._lock:  # the tokenizer is not documented as thread-safe
            rows = self._wl.embed(list(texts), norm=True)
        return np.asarray(rows, dtype=np.float32)


class CachedEmbedder:
    """An embedder whose vectors are kept in an .npz file (no pickle) keyed by text."""

    def __init__(self, inner: Embedder, path: pathlib.Path) -> None:
        self.inner = inner
        self.name = inner.name
        self.inline = getattr(inner, "inline", False)
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


def default_cache_path() -> pathlib.Path:
    base = pathlib.Path(os.environ.get("XDG_CACHE_HOME", pathlib.Path.home() / ".cache"))
    return base / "ponder" / "risk-embeddings.npz"


def cached(path: pathlib.Path | None = None) -> CachedEmbedder:
    return CachedEmbedder(LlamaEmbedder(), path or default_cache_path())
