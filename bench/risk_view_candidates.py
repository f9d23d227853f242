"""The second view's compute floor on this CPU: what one embedding costs, against what the served prefill costs anyway.

    python bench/risk_view_candidates.py [--repeats 10] [--out bench/results/risk_view_candidates.txt]

One process, the embedded model loaded once (engine/llama.py), quiet host. Per
query length (tokens, BOS included), interleaved, the median of --repeats:
- `embedding context`: the second view as shipped (engine/native.py
  Embeddings: mean pooling, every token an output, so llama.cpp runs the
  output layer for each) with 1 and with 2 threads;
- `served prefill`: the same tokens decoded by the serving context with only
  the last token's logits, which a request's prompt pays anyway; the first
  candidate of issue #24 (reading the pooled hidden state from that pass)
  would add nothing beyond it for an ask, and all of it for a quote.
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

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import report, table  # noqa: E402
from ponderd.engine import native  # noqa: E402
from ponderd.engine.llama import LlamaEngine  # noqa: E402
from ponderd.risk import artifact, corpus  # noqa: E402
from ponderd.settings import ModelSettings  # noqa: E402

LENGTHS = (8, 16, 33, 68, 128)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--out", type=pathlib.Path, default=HERE / "results" / "risk_view_candidates.txt")
    args = ap.parse_args()
    load = os.getloadavg()[0]
    eng = LlamaEngine(ModelSettings(n_ctx=1024, n_seq_max=2, prefix_cache=False, n_threads=2), max_queue=4)
    eng.start()
    L = eng._L
    one, two = native.Embeddings(L, eng._model, 512, 1), native.Embeddings(L, eng._model, 512, 2)
    mem = L.llama_get_memory(eng._ctx)

    def prefill(tokens: list[int]) -> None:
        L.llama_memory_seq_rm(mem, 0, -1, -1)
        eng._decode_prompt(tokens, [0])

    ways = {"embedding context, 1 thread": one.embed, "embedding context, 2 threads": two.embed,
            "served prefill, 2 threads": prefill}
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
        lengths = sorted(len(eng.tokenize(t, special=False, add_special=True)) for t in texts if model.routed(t))
    finally:
        one.close()
        two.close()
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
