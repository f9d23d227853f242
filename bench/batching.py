"""Decoding samples together: aggregate tokens/s of k samples in one batch vs one sample,
of 8 concurrent requests (sharing the engine's batch) vs the same 8 run one after another,
and of 8 concurrent requests with 8 different prompts vs one request of 8 samples (interleaved rounds).

    python bench/batching.py [--tokens 96] [--rounds 3] [--different-only] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from common import engine, generated, job, run_jobs, table

PROMPT = "Write a long, detailed story about a lighthouse keeper and a storm."
# Eight different prompts of similar length: each request decodes its own prompt.
PROMPTS = [
    "Write a long, detailed story about a lighthouse keeper and a storm.",
    "Write a long, detailed story about a baker who finds a map in the flour.",
    "Write a long, detailed story about two friends crossing a frozen lake.",
    "Write a long, detailed story about a robot learning to paint at night.",
    "Write a long, detailed story about a train that never reaches its station.",
    "Write a long, detailed story about a gardener and a very old tortoise.",
    "Write a long, detailed story about a city where it rains only on Mondays.",
    "Write a long, detailed story about a violinist who lost her best bow.",
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--tokens", type=int, default=96, help="answer cap per sample")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds of the different-prompts comparison")
    ap.add_argument("--json", type=pathlib.Path, help="also write the figures here")
    ap.add_argument("--different-only", action="store_true", help="only the different-prompts comparison")
    args = ap.parse_args()
    if args.different_only:
        return different_prompts(args)
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
    different_prompts(args)


def different_prompts(args: argparse.Namespace) -> None:
    """8 requests with different prompts at once vs one request of 8 samples, interleaved so drift hits
    both; with the prefix cache (the default) and without it, side by side in the same rounds."""
    engines = {"prefix cache on": engine(), "prefix cache off": engine(prefix_cache=False)}
    rates: dict[str, dict[str, list[float]]] = {name: {"one": [], "many": []} for name in engines}
    for r in range(args.rounds):
        for name, x in engines.items():
            results, wall = run_jobs(x, [job(x, PROMPT, 8, args.tokens, seed=200 + r)])
            rates[name]["one"].append(generated(results) / wall)
            results, wall = run_jobs(x, [job(x, p, 1, args.tokens, seed=300 + r * 8 + i) for i, p in enumerate(PROMPTS)])
            rates[name]["many"].append(generated(results) / wall)
    rows, out = [], {}
    for name in engines:
        one = sum(rates[name]["one"]) / args.rounds
        many = sum(rates[name]["many"]) / args.rounds
        rows += [(f"{name}: 1 request x 8 samples", one, 1.0), (f"{name}: 8 requests, 8 different prompts", many, many / one)]
        out[name] = {"one_request_8_samples_tps": one, "eight_different_prompts_tps": many, "ratio": many / one}
    print(table(rows, ["batch", "tokens/s (mean of rounds)", "ratio"]))
    if args.json:
        args.json.write_text(json.dumps({"different_prompts": out, "rounds": args.rounds, "tokens": args.tokens}, indent=2))
    for x in engines.values():
        x.close()


if __name__ == "__main__":
    main()
