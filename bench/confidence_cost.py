"""What per-token confidence costs the step loop: tokens/s with it on and off, interleaved in one process.

"Off" replaces the log-probability read (ctypes logits view + log-softmax over
the vocabulary) with a constant, so the difference is exactly its cost. On a
loaded machine tokens/s swing more than that cost, so the time spent in the
read itself is also timed, as a share of the run's wall time.

    python bench/confidence_cost.py [--tokens 64] [--rounds 3]
"""

from __future__ import annotations

import argparse
import pathlib
import statistics
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from common import engine, generated, job, run_jobs, table
from ponderd.engine import llama

PROMPT = "Write a long, detailed story about a lighthouse keeper and a storm."


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--tokens", type=int, default=64, help="answer cap per sample")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    e = engine()
    real_logprob, real_logits = llama.token_logprob, llama.native.logits
    spent = [0.0, 0]

    def timed_logprob(x, t):
        start = time.perf_counter()
        try:
            return real_logprob(x, t)
        finally:
            spent[0] += time.perf_counter() - start
            spent[1] += 1

    shares: dict[int, list[float]] = {}
    rates: dict[tuple[int, str], list[float]] = {}
    for r in range(args.rounds):
        for k in (1, 8):
            for mode in (("on", "off") if r % 2 == 0 else ("off", "on")):
                if mode == "off":
                    llama.token_logprob, llama.native.logits = (lambda x, t: 0.0), (lambda *a: None)
                else:
                    llama.token_logprob, llama.native.logits = timed_logprob, real_logits
                spent[0] = 0.0
                results, wall = run_jobs(e, [job(e, PROMPT, k, args.tokens, seed=r + 1)])
                rates.setdefault((k, mode), []).append(generated(results) / wall)
                if mode == "on":
                    shares.setdefault(k, []).append(spent[0] / wall)
    llama.token_logprob, llama.native.logits = real_logprob, real_logits
    rows = []
    for k in (1, 8):
        on, off = statistics.median(rates[(k, "on")]), statistics.median(rates[(k, "off")])
        rows.append((f"{k} sample(s)", off, on, on / off, f"{100 * statistics.median(shares[k]):.2f}%"))
    print(f"model {e.model_name}, answer cap {args.tokens}, {args.rounds} rounds, medians")
    print(table(rows, ["batch", "tokens/s off", "tokens/s on", "on / off", "wall time in the read"]))
    print(f"{1e6 * spent[0] / max(spent[1], 1):.0f} us per token in the last run; {spent[1]} tokens read in all")
    e.close()


if __name__ == "__main__":
    main()
