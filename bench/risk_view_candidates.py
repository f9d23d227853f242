"""The second view's compute floor on this CPU: what one embedding costs, against what the served prefill costs anyway.

    python bench/risk_view_candidates.py [--repeats 10] [--out bench/results/risk_view_candidates.txt]

One process, the embedded model loaded once (engine/llama.py), quiet host. Per
query length (tokens), interleaved, the median of --repeats:
- `embedding context`: the earlier view (until #24's last change): a second
  llama.cpp context with mean pooling, every token an output, so llama.cpp
  runs the output layer for each, with 1 and with 2 threads;
- `served prefill`: the same tokens decoded by the serving context with only
  the last token's logits, which a request's prompt pays anyway;
- `layer-K view` (shipped, engine/view.py LayerView): the same tokens decoded
  up to layer VIEW_LAYER in a context of its own on the served weights, the
  graph ended there by the eval callback, 2 threads: what the engine's owner
  thread runs for a view (until stop 35 the view was the served prefill
  itself with hidden states on, which cost the prefill plus one token).
Also the routed share and token lengths of the held-out queries the shipped
cascade embeds, which set where p50 and p90 of the added latency fall.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import statistics
import sys
import time
from typing import Any

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import report, table  # noqa: E402
from ponderd.engine.llama import LlamaEngine  # noqa: E402
from ponderd.engine.view import VIEW_LAYER, LayerView  # noqa: E402
from ponderd.risk import artifact, corpus  # noqa: E402
from ponderd.settings import ModelSettings  # noqa: E402

LENGTHS = (8, 16, 33, 68, 128)


class MeanContext:
    """The earlier view's context: llama-cpp-python's Llama(embedding=True, pooling_type=MEAN) settings."""

    def __init__(self, L: Any, model: Any, n_ctx: int, threads: int) -> None:
        self._L = L
        cp = L.llama_context_default_params()
        cp.n_ctx = cp.n_batch = cp.n_ubatch = n_ctx
        cp.n_threads = cp.n_threads_batch = threads
        cp.embeddings, cp.pooling_type = True, L.LLAMA_POOLING_TYPE_MEAN
        cp.flash_attn_type = L.LLAMA_FLASH_ATTN_TYPE_DISABLED
        cp.n_seq_max, cp.kv_unified = min(n_ctx, L.llama_max_parallel_sequences()), True
        self._ctx = L.llama_init_from_model(model, cp)
        self._mem = L.llama_get_memory(self._ctx)
        self._batch = L.llama_batch_init(n_ctx, 0, 1)

    def embed(self, tokens: list[int]) -> None:
        L, b = self._L, self._batch
        L.llama_memory_clear(self._mem, True)
        b.n_tokens = len(tokens)
        for i, t in enumerate(tokens):
            b.token[i], b.pos[i], b.n_seq_id[i] = t, i, 1
            b.seq_id[i][0] = 0
            b.logits[i] = True
        if L.llama_decode(self._ctx, b) != 0 or not L.llama_get_embeddings_seq(self._ctx, 0):
            raise RuntimeError("the embedding failed")

    def close(self) -> None:
        self._L.llama_batch_free(self._batch)
        self._L.llama_free(self._ctx)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--out", type=pathlib.Path, default=HERE / "results" / "risk_view_candidates.txt")
    args = ap.parse_args()
    load = os.getloadavg()[0]
    eng = LlamaEngine(ModelSettings(n_ctx=1024, n_seq_max=2, prefix_cache=False, n_threads=2), max_queue=4)
    eng.start()
    L = eng._L
    one, two = MeanContext(L, eng._model, 512, 1), MeanContext(L, eng._model, 512, 2)
    mem = L.llama_get_memory(eng._ctx)

    def prefill(tokens: list[int]) -> None:
        L.llama_memory_seq_rm(mem, 0, -1, -1)
        eng._decode_prompt(tokens, [0])

    layer = LayerView(L, eng._model, [], 2, 512)

    def view(tokens: list[int]) -> None:
        layer.decode(tokens, len(tokens) - 1, len(tokens))

    ways = {"embedding context, 1 thread": one.embed, "embedding context, 2 threads": two.embed,
            "served prefill, 2 threads": prefill, f"layer-{VIEW_LAYER} view (shipped), 2 threads": view}
    took: dict[tuple[str, int], list[float]] = {}
    try:
        for n in LENGTHS:
            tokens = list(range(1000, 1000 + n))
            for fn in ways.values():
                fn(tokens)  # warm
            for _ in range(args.repeats):
                for name, fn in ways.items():
                    t = time.perf_counter()
                    fn(tokens)
                    took.setdefault((name, n), []).append(time.perf_counter() - t)
        model = artifact.load(artifact.SHIPPED_DIR)
        texts = [e.text for e in corpus.load(corpus.heldout_files())]
        lengths = sorted(len(eng.tokenize(t, special=False)) for t in texts if model.routed(t))
    finally:
        one.close()
        two.close()
        layer.close()
        eng.close()
    rows = [[name] + [f"{statistics.median(took[(name, n)]) * 1e3:.1f}" for n in LENGTHS] for name in ways]
    lines = [
        f"the second view's compute, median of {args.repeats} (ms), load average {load:.1f}, {os.cpu_count()} cores",
        table(rows, ["tokens"] + [str(n) for n in LENGTHS]),
        f"held-out queries the shipped cascade embeds: {len(lengths)} of {len(texts)} ({len(lengths) / len(texts):.0%}); "
        f"their tokens: p50 {lengths[len(lengths) // 2]}, p90 {lengths[int(len(lengths) * 0.9)]}, max {lengths[-1]}",
        f"command: python bench/risk_view_candidates.py --repeats {args.repeats}",
    ]
    report(lines, args.out)


if __name__ == "__main__":
    main()
