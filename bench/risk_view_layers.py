"""The second view from an earlier layer: what each layer's hidden state buys on the grouped splits.

    python bench/risk_view_layers.py extract [--layers 3 4 6 8 10 12 16 20] [--out ~/.cache/ponder/view-layers]
    XDG_CACHE_HOME=~/.cache/ponder/view-layers/L8 python bench/risk_cascade.py run --recipes emb1 --out L8.npz --models L8
    python bench/risk_cascade.py report --out ~/.cache/ponder/rc10-ngrams.npz L8.npz --confidence 0.7
    python bench/risk_view_layers.py cost [--layers 3 4 6 8 10 12 16 20] [--n 100]

The view was the served model's last hidden state (after the final norm) at
the view prompt's last token; since stop 35 it is layer VIEW_LAYER's output
there, RMS-normalised, read by engine/view.py's LayerView, which ends the
forward pass at that layer. A view read at layer K of N costs about K/N of
the forward pass, so the earliest layer that holds the grouped figures is
the cheapest view. `extract` decodes every corpus query's view prompt once,
as LlamaEmbedder does (the same prompt, opening cache and kernels), and reads
each asked layer's output at the last token through llama.cpp's eval
callback (the tensors "l_out-{K-1}"), RMS-normalised as the final norm does
(its per-dimension weight is left out: the recipe standardises each
dimension); the graph ends after the deepest layer asked. It checks layer
VIEW_LAYER's reading against LlamaEmbedder's vector for a few queries, so
the reading is the shipped one. Each layer's vectors go to an embedding
cache of their own (DIR/L{K}/ponder/risk-embeddings.npz, named as the
shipped embedder's, so bench/risk_cascade.py reads them with
XDG_CACHE_HOME=DIR/L{K}).

`cost` times the view of held-out queries at each layer (LayerView, the
shipped reading) against the whole pass, one thread, queries interleaved
across the ways so drift hits all alike.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import pathlib
import random
import sys
import time
from typing import Any

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from common import percentile, table
from ponderd.engine import native
from ponderd.engine.view import NORM_EPS, VIEW_LAYER, LayerView
from ponderd.risk import corpus, embed
from ponderd.settings import ModelSettings

REPO = pathlib.Path(__file__).resolve().parent.parent


def texts() -> list[str]:
    files = corpus.training_files() + corpus.heldout_files() + sorted((REPO / "bench" / "data").glob("*_writer.jsonl"))
    return list(dict.fromkeys(e.text for e in corpus.load(files)))


def _ggml(L: Any) -> Any:

    ggml = ctypes.CDLL(str(pathlib.Path(L.__file__).parent / "lib" / "libggml-base.so"))
    ggml.ggml_get_name.restype = ctypes.c_char_p
    ggml.ggml_get_name.argtypes = [ctypes.c_void_p]
    ggml.ggml_backend_tensor_get.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t]
    ggml.ggml_nbytes.restype = ctypes.c_size_t
    ggml.ggml_nbytes.argtypes = [ctypes.c_void_p]
    return ggml


def _context(L: Any, model: Any, view: Any, threads: int, cb: Any) -> tuple[Any, Any, Any, list[int], int]:
    """A context as LlamaEmbedder makes it (its shared opening decoded into sequence 1), with `cb` as eval callback."""
    prefix = list(view.opening)
    cp = L.llama_context_default_params()
    n_batch = ModelSettings().n_batch
    cp.n_ctx, cp.n_batch, cp.n_ubatch = len(prefix) + native.VIEW_CONTEXT, n_batch, n_batch
    cp.n_threads = cp.n_threads_batch = threads
    cp.n_seq_max, cp.kv_unified, cp.pooling_type = 2, True, L.LLAMA_POOLING_TYPE_NONE
    if cb is not None:
        cp.cb_eval = cb
    ctx = L.llama_init_from_model(model, cp)
    batch = L.llama_batch_init(n_batch, 0, 2)
    native.prefill(L, ctx, batch, n_batch, prefix, 1, 0, len(prefix))
    return ctx, batch, L.llama_get_memory(ctx), prefix, n_batch


def _load(L: Any) -> tuple[pathlib.Path, Any, Any]:
    path = embed.default_model_path()
    L.llama_backend_init()
    native.route_llama_logs(L)
    model = L.llama_model_load_from_file(str(path).encode(), L.llama_model_default_params())
    vocab = L.llama_model_get_vocab(model)
    template = L.llama_model_chat_template(model, None)

    def render(text: str) -> tuple[int, ...]:
        return native.tokenize(L, vocab, native.render_chat(L, template, embed.VIEW_SYSTEM, text), True)

    view = embed.ViewPrompt(render, lambda t: native.tokenize(L, vocab, t, False), lambda ts: native.detokenize(L, vocab, ts))
    return path, model, view


def _decode(L: Any, ctx: Any, batch: Any, mem: Any, prefix: list[int], n_batch: int, tokens: tuple[int, ...],
            first: int, end: int) -> None:
    """The query's view prompt past the shared opening, in one batch, its last token output."""
    L.llama_memory_seq_rm(mem, 0, -1, -1)
    cached = min(native.common_prefix(prefix, tokens), first, len(tokens) - 1)
    if cached:
        L.llama_memory_seq_cp(mem, 1, 0, 0, cached)
    if len(tokens) - cached > n_batch:
        sys.exit(f"a view prompt of {len(tokens) - cached} tokens does not fit one batch of {n_batch}")
    native.decode_tokens(L, ctx, batch, tokens, 0, cached, len(tokens), end - 1, end)


def extract(args: argparse.Namespace) -> None:
    import llama_cpp as L

    ggml = _ggml(L)
    path, model, view = _load(L)
    n_embd = L.llama_model_n_embd(model)
    n_layer = L.llama_model_n_layer(model)
    wanted = {f"l_out-{k - 1}".encode(): k for k in args.layers if 1 <= k <= n_layer}
    deepest = max(wanted.values())
    got: dict[int, np.ndarray] = {}

    def callback(t: int, ask: bool, _user: int) -> bool:
        name = ggml.ggml_get_name(t)
        if ask:
            return name in wanted
        size = ggml.ggml_nbytes(t)
        row = np.empty(n_embd, dtype=np.float32)
        # The last row: the prompt's last token (the ubatch ends with it).
        ggml.ggml_backend_tensor_get(t, row.ctypes.data, size - 4 * n_embd, 4 * n_embd)
        got[wanted[name]] = row
        return wanted[name] < deepest  # false ends the graph after the deepest layer asked

    cb = L.ggml_backend_sched_eval_callback(callback)
    ctx, batch, mem, prefix, n_batch = _context(L, model, view, args.threads, cb)

    every = texts()
    if args.limit:
        every = every[: args.limit]
    rows: dict[int, list[np.ndarray]] = {k: [] for k in wanted.values()}
    started = time.monotonic()
    for i, text in enumerate(every):
        got.clear()
        _decode(L, ctx, batch, mem, prefix, n_batch, *view(text))
        for k in rows:
            v = got[k]
            rows[k].append((v / np.sqrt(np.mean(v.astype(np.float64) ** 2) + NORM_EPS)).astype(np.float32))
        if i % 500 == 0:
            print(f"{i}/{len(every)} {time.monotonic() - started:.0f} s", flush=True)

    # The reading is the shipped view's: layer VIEW_LAYER against LlamaEmbedder, same texts.
    if VIEW_LAYER in rows:
        check = embed.LlamaEmbedder(path, threads=args.threads).embed(every[:5])
        diff = float(np.max(np.abs(np.vstack(rows[VIEW_LAYER][:5]) - check)))
        print(f"layer {VIEW_LAYER} against LlamaEmbedder on 5 queries: max |diff| {diff:.2e}")
        if diff > 1e-3:
            sys.exit("the callback's reading is not the shipped view's")
    name = embed.embedder_name(path)
    keys = np.array([embed.CachedEmbedder.key(t) for t in every])
    for k, vs in rows.items():
        out = args.out / f"L{k}" / "ponder" / "risk-embeddings.npz"
        out.parent.mkdir(parents=True, exist_ok=True)
        np.savez(out, model=np.array(name), keys=keys, vectors=np.vstack(vs).astype(np.float32))
        print(f"layer {k} of {n_layer}: {len(vs)} vectors in {out}")
    print(f"{len(every)} queries in {time.monotonic() - started:.0f} s")


def cost(args: argparse.Namespace) -> None:
    import llama_cpp as L

    _path, model, view = _load(L)
    n_layer = L.llama_model_n_layer(model)
    opening = list(view.opening)
    # The shipped reading (engine/view.py) at each layer; at the last layer the graph ends
    # before the output norm and head only, which is the whole pass less one token's head.
    ways = {f"layer {k}": LayerView(L, model, opening, args.threads, layer=k) for k in args.layers if 1 <= k < n_layer}
    ways[f"layer {n_layer} (the whole pass)"] = LayerView(L, model, opening, args.threads, layer=n_layer)
    qs = [e.text for e in corpus.load(corpus.heldout_files())]
    random.Random(0).shuffle(qs)
    prompts = [view(t) for t in qs[: args.n]]
    for way in ways.values():  # warm each context
        way.decode(*prompts[0])
    ms: dict[str, list[float]] = {w: [] for w in ways}
    order = list(ways)
    for i, p in enumerate(prompts):
        for w in order[i % len(order):] + order[: i % len(order)]:
            started = time.perf_counter_ns()
            ways[w].decode(*p)
            ms[w].append((time.perf_counter_ns() - started) / 1e6)
    full = percentile(ms[order[-1]], 50)
    rows = [(w, len(xs), percentile(xs, 50), percentile(xs, 90), percentile(xs, 50) / full) for w, xs in ms.items()]
    tokens = sorted(len(t) - min(native.common_prefix(opening, t), f) for t, f, _e in prompts)
    print(f"the view of {len(prompts)} held-out queries (median {tokens[len(tokens) // 2]} tokens past the shared opening), "
          f"{args.threads} thread(s), load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores, ways interleaved")
    print(table(rows, ["way", "n", "p50 ms", "p90 ms", "p50 / whole pass"]))
    print(f"command: python bench/risk_view_layers.py cost --layers {' '.join(map(str, args.layers))} --n {args.n} --threads {args.threads}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("extract")
    p.add_argument("--layers", type=int, nargs="+", default=[3, 4, 6, 8, 10, 12, 16, 20])
    p.add_argument("--out", type=pathlib.Path, default=embed.default_cache_path().parent / "view-layers")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--limit", type=int, default=0)
    p.set_defaults(fn=extract)
    p = sub.add_parser("cost")
    p.add_argument("--layers", type=int, nargs="+", default=[3, 4, 6, 8, 10, 12, 16, 20])
    p.add_argument("--n", type=int, default=100)
    p.add_argument("--threads", type=int, default=embed.THREADS)
    p.set_defaults(fn=cost)
    args = ap.parse_args()
    args.fn(args)


if __name__ == "__main__":
    main()
