"""The risk classifier's second view: a prompt's hidden state at an early layer of the served model.

The view is layer VIEW_LAYER's output at the view prompt's last token,
RMS-normalised (as the model's final norm would, without its per-dimension
weight: the classifier standardises each dimension). It is read in a llama.cpp
context of its own on the served model's weights (no second copy of them):
the context's eval callback takes that layer's output ("l_out-{K-1}") when
llama.cpp has computed it and then ends the graph, so the later layers and the
output head are never computed. On SmolLM2-135M (30 layers) the view costs
about 0.27 of the prompt's forward pass; layer 8 is the cheapest layer that
held the issue's macro-F1 floor and the 0.95 high-recall bar on the grouped
splits (docs/risk.md, "which layer"; bench/results/risk_view_layers.txt).

The context's KV cells are only ever read by this reading: the layers past
VIEW_LAYER hold nothing, so no generation may decode from them, and none
does (the served context is another).

LayerView is shared by the engine (engine/llama.py, decoded by its owner
thread between steps) and risk/embed.py's LlamaEmbedder (a model of its
own), so both give the same vectors.
"""

from __future__ import annotations

import ctypes
import pathlib
from typing import Any, Sequence

import numpy as np

from ponderd.engine import native
from ponderd.settings import ModelSettings

# The layer whose output is the view (1-based: layer K's output is llama.cpp's "l_out-{K-1}").
VIEW_LAYER = 8
# The system prompt of the view's prompt: the shipped default, whatever a daemon's
# model.system_prompt says, so a vector depends on the query alone.
VIEW_SYSTEM = ModelSettings().system_prompt
# The model's RMS norm epsilon (SmolLM2's; any epsilon this small changes nothing the classifier reads).
NORM_EPS = 1e-5


def _ggml(L: Any) -> Any:
    """libggml-base, shipped beside libllama by llama-cpp-python: a tensor's name, size and data."""
    lib = ctypes.CDLL(str(pathlib.Path(L.__file__).parent / "lib" / "libggml-base.so"))
    lib.ggml_get_name.restype = ctypes.c_char_p
    lib.ggml_get_name.argtypes = [ctypes.c_void_p]
    lib.ggml_nbytes.restype = ctypes.c_size_t
    lib.ggml_nbytes.argtypes = [ctypes.c_void_p]
    lib.ggml_backend_tensor_get.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t]
    lib.ggml_backend_tensor_get.restype = None
    return lib


class LayerView:
    """A llama.cpp context on `model` that reads one layer's output and computes no further.

    `opening`: the tokens every view prompt starts with (the chat template's
    opening), decoded once into sequence 1 and copied for each view, as the
    engine's prefix cache does. Not thread-safe: one caller at a time.
    """

    def __init__(self, L: Any, model: Any, opening: Sequence[int], threads: int,
                 n_batch: int = ModelSettings().n_batch, layer: int = VIEW_LAYER) -> None:
        n_layer = L.llama_model_n_layer(model)
        # A model with fewer layers is read at its last.
        self.layer = min(layer, n_layer)
        self._L, self._lib = L, _ggml(L)
        self._n_embd = L.llama_model_n_embd(model)
        self._want = f"l_out-{self.layer - 1}".encode()
        self._rows: np.ndarray | None = None
        self._error: BaseException | None = None
        # Kept for the context's life: llama.cpp calls it on every graph compute.
        self._callback = L.ggml_backend_sched_eval_callback(self._observe)
        self.opening = list(opening)
        self.n_batch = n_batch
        cp = L.llama_context_default_params()
        cp.n_ctx, cp.n_batch, cp.n_ubatch = len(self.opening) + native.VIEW_CONTEXT, n_batch, n_batch
        cp.n_threads = cp.n_threads_batch = threads
        cp.n_seq_max, cp.kv_unified, cp.pooling_type = 2, True, L.LLAMA_POOLING_TYPE_NONE
        cp.cb_eval = self._callback
        self._ctx = L.llama_init_from_model(model, cp)
        if not self._ctx:
            raise RuntimeError("llama.cpp could not create a context for the risk classifier's view")
        self._mem = L.llama_get_memory(self._ctx)
        self._batch = L.llama_batch_init(n_batch, 0, 2)
        if self.opening:
            native.prefill(L, self._ctx, self._batch, n_batch, self.opening, 1, 0, len(self.opening))

    def _observe(self, tensor: int, ask: bool, _user: Any) -> bool:
        # Asked: only the view's layer output is wanted (llama.cpp computes up to it in one go).
        # Computed: keep its rows, and false ends the graph there.
        try:
            if ask:
                return bool(self._lib.ggml_get_name(tensor) == self._want)
            size = self._lib.ggml_nbytes(tensor)
            rows = np.empty(size // 4, dtype=np.float32)
            self._lib.ggml_backend_tensor_get(tensor, rows.ctypes.data, 0, size)
            self._rows = rows.reshape(-1, self._n_embd)
        except BaseException as exc:  # an exception cannot cross llama.cpp: keep it for decode()
            self._error = exc
        return False

    def decode(self, tokens: Sequence[int], first: int, end: int) -> np.ndarray:
        """The view of the prompt `tokens`: the mean over tokens[first:end] of the layer's
        RMS-normalised output (ViewPrompt's span: the last token), float32."""
        L = self._L
        if not 0 <= first < end <= len(tokens):
            raise ValueError(f"a view's span [{first}, {end}) is not within its {len(tokens)} tokens")
        L.llama_memory_seq_rm(self._mem, 0, -1, -1)
        # What the opening holds of these tokens (a text's first token can merge with the
        # opening's last, e.g. a leading space): the tokens both share, none of the span.
        cached = min(native.common_prefix(self.opening, tokens), first)
        if len(tokens) - cached > native.VIEW_CONTEXT:
            raise ValueError(f"a view decodes at most {native.VIEW_CONTEXT} tokens past the prefix cache")
        if cached:
            L.llama_memory_seq_cp(self._mem, 1, 0, 0, cached)
        picked: list[np.ndarray] = []
        try:
            for start in range(cached, len(tokens), self.n_batch):
                stop = min(start + self.n_batch, len(tokens))
                self._rows, self._error = None, None
                native.decode_tokens(L, self._ctx, self._batch, tokens, 0, start, stop, first, end)
                rows = self._rows
                if self._error is not None:
                    raise RuntimeError(f"reading the view's layer failed: {self._error!r}")
                span = [k for k in range(start, stop) if first <= k < end]
                if rows is None:
                    raise RuntimeError(f"llama.cpp computed no {self._want.decode()}: the model's graph names its layers otherwise")
                if len(rows) == stop - start:  # every token's row (an early layer)
                    picked.extend(rows[k - start] for k in span)
                elif len(rows) == len(span):  # the last layer keeps the output tokens' rows only
                    picked.extend(rows)
                else:
                    raise RuntimeError(f"{self._want.decode()} has {len(rows)} rows for {stop - start} tokens")
        finally:
            L.llama_memory_seq_rm(self._mem, 0, -1, -1)
        x = np.vstack(picked).astype(np.float64)
        x /= np.sqrt(np.mean(x * x, axis=1, keepdims=True) + NORM_EPS)
        return x.mean(axis=0).astype(np.float32)

    def close(self) -> None:
        if self._ctx:
            self._L.llama_batch_free(self._batch)
            self._L.llama_free(self._ctx)
            self._ctx = None
