"""Decoding samples together: aggregate tokens/s of k samples in one batch vs one sample,
and of 8 concurrent requests (sharing the engine's batch) vs the same 8 run one after another.

    python bench/batching.py [--tokens 96]
"""

from __future__ import annotations

import argparse
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from common import engine, generated, job, run_jobs, table

PROMPT = "Write a long, detailed story about a lighthouse keeper and a storm."


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--tokens", type=int, default=96, help="answer cap per sample")
    args = ap.parse_args()
    e = engine()
    print(f"model {e.model_name}, {e.settings.n_threads or 'all'} threads, answer cap {args.tokens} tokens/sample")

    rows, base = [], None
    for k in (1, 4, 8, 16):
        results, wall = run_jobs(e, [job(e, PROMPT, k, args.tokens, seed=k)])
        rate = generated(results) / wall
        base = base or rate
        rows.append((f"1 request x {k} samples", generated(results), wall, rate, rate / base))
    print(table(rows, ["batch", "tokens", "seconds", "tokens/s", "vs 1 sample"]))

    sequential = []
    wall_seq = 0.0
    for i in range(8):
        results, wall = run_jobs(e, [job(e, PROMPT, 1, args.tokens, seed=100 + i)])
        sequential += results
        wall_seq += wall
    concurrent, wall_con = run_jobs(e, [job(e, PROMPT, 1, args.tokens, seed=100 + i) for i in range(8)])
    rows = [
        ("8 requests one after another", generated(sequential), wall_seq, generated(sequential) / wall_seq, 1.0),
        ("8 requests at once (one batch)", generated(concurrent), wall_con, generated(concurrent) / wall_con,
         (generated(concurrent) / wall_con) / (generated(sequential) / wall_seq)),
    ]
    print(table(rows, ["requests", "tokens", "seconds", "tokens/s", "ratio"]))
    e.close()


if __name__ == "__main__":
    main()
