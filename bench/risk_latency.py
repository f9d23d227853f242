"""Risk classifier latency, one query at a time: Ponder's scoring path vs scikit-learn's, side by side.

    python bench/risk_latency.py [--rounds 3] [--model-dir DIR]
Target: p99 under 1 ms per query for Ponder's path on this CPU. With a cascade
(risk/cascade.py) shipped, the n-gram path is its first stage, and the queries
it sends to the embedding view are timed end to end on their own row.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
import time

import numpy as np
from scipy import sparse

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from common import percentile, table
from ponderd.risk import artifact, corpus


def sklearn_score(model, text: str) -> np.ndarray:
    p = model.parts
    x = sparse.hstack([p["word"].transform([model.word_input(text)]), p["char"].transform([model.char_input(text)])]).tocsr()
    d = p["severity"].decision_function(x)[0]
    z = np.exp(model.manifest["temperatures"]["severity"] * d)
    nr = p["reasoning"].decision_function(x)[0]
    return np.append(z / z.sum(), 1 / (1 + np.exp(-2 * model.manifest["temperatures"]["reasoning"] * nr)))


def measure(fn, texts, rounds: int) -> list[float]:
    for t in texts[:50]:
        fn(t)
    out = []
    for _ in range(rounds):
        for t in texts:
            start = time.perf_counter_ns()
            fn(t)
            out.append((time.perf_counter_ns() - start) / 1e3)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--model-dir", type=pathlib.Path, default=artifact.SHIPPED_DIR, help="a model directory (default: the shipped one)")
    args = ap.parse_args()
    shipped = artifact.load(args.model_dir)
    # A cascade's n-gram path is its first stage: every query's score, and the routing decision.
    model = getattr(shipped, "first", shipped)
    texts = [e.text for e in corpus.load(corpus.heldout_files())]
    fast = measure(lambda t: model.score(t), texts, args.rounds)
    slow = measure(lambda t: sklearn_score(model, t), texts, args.rounds)
    rows = [
        (name, len(v), percentile(v, 50), percentile(v, 99), max(v))
        for name, v in (("ponder fast path", fast), ("scikit-learn transform+predict", slow))
    ]
    if shipped is not model:
        # The second view's added cost, separately: only the queries the cascade sends to it, one round.
        routed = [t for t in texts if shipped.routed(t)]
        shipped.score(routed[0])  # load the embedding model
        full = measure(lambda t: shipped.score(t), routed, 1)
        rows.append((f"cascade, embedded queries ({len(routed)}/{len(texts)} = {len(routed) / len(texts):.1%})",
                     len(full), percentile(full, 50), percentile(full, 99), max(full)))
    print(f"risk classifier latency, single query, {len(texts)} held-out texts x {args.rounds} rounds (microseconds), "
          f"load average {os.getloadavg()[0]:.1f}")
    print(table(rows, ["path", "n", "p50 us", "p99 us", "max us"]))
    print(f"speed-up at p50: {percentile(slow, 50) / percentile(fast, 50):.1f}x; "
          f"fast path p99 {percentile(fast, 99) / 1000:.3f} ms (target < 1 ms): "
          f"{'met' if percentile(fast, 99) < 1000 else 'NOT met'}")


if __name__ == "__main__":
    main()
