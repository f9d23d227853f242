"""The second feature view: the served model's hidden state over the query at an early layer (docs/risk.md, "A second view").

The n-gram view cannot know that a field it has no words for is high-stakes;
an embedding from a language model carries some meaning beyond surface words.
This module turns a query into layer VIEW_LAYER's output (RMS-normalised) of a
GGUF model loaded through llama-cpp-python (by default the embedded
SmolLM2-135M the engine serves, found the way engine/model_file.py finds it)
at the last token of the view prompt: the model's chat template around the
shipped system prompt (VIEW_SYSTEM) and the query. llama.cpp stops the
forward pass at that layer (engine/view.py), so a view costs about
VIEW_LAYER / 30 of the prompt's prefill on SmolLM2. The vectors are kept in a
cache keyed by the model file, the layer and the text, so cross-validation
embeds each corpus line once.

A view costs tens of ms on this project's CPU hosts (bench/risk_view_layers.py
`cost`), against under 1 ms for the n-gram path, so a served model asks for it
only where the n-grams are unsure (risk/cascade.py). Static word embeddings
(WordLlama, under 0.1 ms a query) were measured in its place and lost to the
n-grams alone (docs/risk.md).

Two embedders give the same vectors (the same model file, prompt, tokens and
reading, engine/view.py `LayerView`; tests/engine/test_embeddings.py checks
it): LlamaEmbedder decodes with a model of its own (training,
cross-validation, a daemon whose engine serves another model), and
EngineEmbedder asks the serving engine, whose owner thread decodes the view
between generation steps.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import hashlib
import os
import pathlib
import threading
from typing import Any, Callable, Protocol, Sequence

import numpy as np

from ponderd.engine import native
from ponderd.engine.model_file import file_sha256
from ponderd.engine.view import VIEW_LAYER, VIEW_SYSTEM, LayerView

# One thread: on a shared two-core host a second thread bought nothing (measured).
THREADS = 1
# Enough for every corpus query; longer texts are cut to this many tokens.
MAX_TOKENS = 256


# True while a request that will generate from the assessed prompt (an ask) is assessed:
# the engine then holds its next step briefly for that generation (engine/llama.py `view`).
GENERATES: contextvars.ContextVar[bool] = contextvars.ContextVar("ponder_view_generates", default=False)


class Embedder(Protocol):
    name: str

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """One row per text (float32)."""


def default_model_path() -> pathlib.Path:
    from ponderd.engine.model_file import resolve_model_path

    return resolve_model_path(None)


def embedder_name(path: pathlib.Path) -> str:
    """What a model's embeddings are called (the artifact's `embedding_model`): file name, digest, view."""
    # The engine's digest of the same file (kept per size and mtime): the model is hashed once.
    system = hashlib.sha256(VIEW_SYSTEM.encode()).hexdigest()[:8]
    return f"{path.name}:{file_sha256(path)[:16]}:prompt-last-{system}:layer-{VIEW_LAYER}"


def cut(text: str, tokenize: Callable[[str], Sequence[int]], detokenize: Callable[[Sequence[int]], str]) -> str:
    """The query text the view reads: at most MAX_TOKENS tokens; a longer text is cut there and read back."""
    tokens = list(tokenize(text or " "))
    return (detokenize(tokens[:MAX_TOKENS]) or " ") if len(tokens) > MAX_TOKENS else (text or " ")


class ViewPrompt:
    """A query's view prompt: the rendered chat prompt's tokens and the span pooled, its last token.

    The last token (the template's "assistant" turn opening) is where the model
    has read the whole prompt: its hidden state beat the mean over the query's
    tokens on the grouped splits (docs/risk.md, "A second view"), and it is
    the one token a prefill outputs anyway.
    """

    def __init__(self, render: Callable[[str], Sequence[int]], tokenize: Callable[[str], Sequence[int]],
                 detokenize: Callable[[Sequence[int]], str]) -> None:
        self._render, self._tokenize, self._detokenize = render, tokenize, detokenize
        a, b = tuple(render("1")), tuple(render("A"))
        # The template's opening every view prompt shares (the engine's prefix cache holds the same).
        self.opening = a[: native.common_prefix(a, b)]

    def __call__(self, text: str) -> tuple[tuple[int, ...], int, int]:
        tokens = tuple(self._render(cut(text, self._tokenize, self._detokenize)))
        return tokens, len(tokens) - 1, len(tokens)


class LlamaEmbedder:
    """The view from a llama.cpp context of its own, one query at a time.

    The file is identified (hashed) at once, so a model trained on another
    file's embeddings is refused on load; the context is made on the first
    query that needs it, so a cascade that rarely asks, or a daemon that
    never does, does not pay for it at start. Like the engine, it decodes the
    prompt's shared opening once and the rest of each query's prompt after it.
    """

    def __init__(self, path: pathlib.Path | None = None, threads: int = THREADS) -> None:
        self.path = path or default_model_path()
        self.name = embedder_name(self.path)
        self.threads = threads
        self._state: tuple[LayerView, ViewPrompt] | None = None
        self._lock = threading.Lock()

    def _load(self) -> tuple[LayerView, ViewPrompt]:
        if self._state is None:
            os.environ.setdefault("OMP_WAIT_POLICY", "passive")
            import llama_cpp as L

            L.llama_backend_init()
            native.route_llama_logs(L)
            model = L.llama_model_load_from_file(str(self.path).encode(), L.llama_model_default_params())
            if not model:
                raise RuntimeError(f"llama.cpp could not load {self.path}")
            vocab = L.llama_model_get_vocab(model)
            template = L.llama_model_chat_template(model, None)

            def render(text: str) -> tuple[int, ...]:
                return native.tokenize(L, vocab, native.render_chat(L, template, VIEW_SYSTEM, text), True)

            prompt = ViewPrompt(render, lambda t: native.tokenize(L, vocab, t, False), lambda ts: native.detokenize(L, vocab, ts))
            try:
                view = LayerView(L, model, prompt.opening, self.threads)
            except BaseException:
                L.llama_model_free(model)
                raise
            self._state = (view, prompt)
        return self._state

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        rows = []
        for t in texts:
            # One text per hold of the lock: a retrain embedding the corpus
            # must not hold a served query's embedding for minutes.
            with self._lock:
                view, prompt = self._load()
                rows.append(view.decode(*prompt(t)))
        return np.vstack(rows) if rows else np.empty((0, 0), dtype=np.float32)


class EmbeddingEngine(Protocol):
    """What EngineEmbedder needs of the engine (engine/llama.py's LlamaEngine)."""

    def tokenize(self, text: str, special: bool = True, add_special: bool = False) -> tuple[int, ...]: ...

    def detokenize(self, tokens: Sequence[int]) -> str: ...

    def prepare(self, system: str, prompt: str) -> Any: ...

    def view(self, tokens: Sequence[int], first: int, end: int, linger: bool = False) -> concurrent.futures.Future: ...


class EngineEmbedder:
    """LlamaEmbedder's vectors, read by the serving engine (its owner thread, between steps).

    `aembed` is the request path's: awaiting it waits for the engine's next
    turn (views go ahead of new prompts' prefill), and cancelling it
    withdraws a job that has not started. `embed` blocks (any other thread).
    """

    def __init__(self, engine: EmbeddingEngine, path: pathlib.Path) -> None:
        self.engine = engine
        self.path = path
        self.name = embedder_name(path)
        self._offline: LlamaEmbedder | None = None
        self._prompt: ViewPrompt | None = None

    def prompt(self, text: str) -> tuple[tuple[int, ...], int, int]:
        """The view's prompt tokens for `text` and the query's span in them."""
        if self._prompt is None:
            e = self.engine
            self._prompt = ViewPrompt(lambda t: e.prepare(VIEW_SYSTEM, t).tokens,
                                      lambda t: e.tokenize(t, special=False), e.detokenize)
        return self._prompt(text)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        rows = [self.engine.view(*self.prompt(t)).result() for t in texts]
        return np.vstack(rows) if rows else np.empty((0, 0), dtype=np.float32)

    def offline(self) -> LlamaEmbedder:
        """The same vectors from a context of its own, for bulk work (a retrain embedding the
        corpus): thousands of texts through the engine would hold generation for minutes."""
        if self._offline is None:
            self._offline = LlamaEmbedder(self.path)
        return self._offline

    async def aembed(self, text: str) -> np.ndarray:
        future = self.engine.view(*self.prompt(text), linger=GENERATES.get())
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
