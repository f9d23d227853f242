"""Samples and tokens saved by adaptive stopping, escalation and confidence pruning, against a fixed N.

    python bench/adaptive.py [--problems 40] [--samples 8] [--json bench/adaptive.json]

The embedded model draws N samples per problem once (two-number addition, where
it is right 20-80% of the time); the stop rules and escalation are then replayed
over those recorded samples in index order (stopping.py's own functions), so
every rule sees the same samples and "agreement" compares with the full-N vote
on exactly those. Pruning needs the token-level confidences as they arrive, so
it runs for real, with the same seeds, beside the fixed run.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import random
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from common import engine, job, run_jobs
from ponderd.request.stopping import agreed, beta_decided, prune_threshold
from ponderd.request.voting import vote_decided, winner

SYSTEM = "You add numbers. Reply with the sum only."


def replay(answers: list[str], tokens: list[int], rule, first: int = 0) -> tuple[int, int, str]:
    """Samples drawn, tokens spent and the voted answer when `rule` (and escalation from `first`) decides."""
    n = len(answers)
    for k in range(1, n + 1):
        said = answers[:k]
        if first and k == first and agreed(said):
            return k, sum(tokens[:k]), winner(said)[0]
        if k < n and rule(said, n - k):
            return k, sum(tokens[:k]), winner(said)[0]
    return n, sum(tokens), winner(answers)[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--problems", type=int, default=40)
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=48)
    ap.add_argument("--temperature", type=float, default=0.3)
    ap.add_argument("--json", type=pathlib.Path, default=None)
    args = ap.parse_args()
    rng = random.Random(2026)
    problems = [(rng.randrange(10, 100), rng.randrange(10, 100)) for _ in range(args.problems)]
    e = engine(temperature=args.temperature)

    def batch(prune: int = 0):
        jobs = []
        for i, (a, b) in enumerate(problems):
            j = job(e, f"What is {a} plus {b}?", args.samples, args.tokens, seed=1000 + i, system=SYSTEM)
            if prune:
                j.prune_below = lambda c, p=prune: prune_threshold(c, p)
            jobs.append(j)
        return run_jobs(e, jobs)[0]

    full = batch()
    never = lambda answers, remaining: False
    rules = {
        f"fixed N={args.samples}": (never, 0),
        "decided (count)": (vote_decided, 0),
        "beta 0.95": (beta_decided(0.95), 0),
        "beta 0.90": (beta_decided(0.90), 0),
        "escalate 2 + decided": (vote_decided, 2),
        "escalate 3 + beta 0.95": (beta_decided(0.95), 3),
    }
    rows = {}
    total_samples = len(problems) * args.samples
    total_tokens = sum(r.answer_tokens for r in full)
    for name, (rule, first) in rules.items():
        drawn = spent = right = agree = 0
        for (a, b), r in zip(problems, full):
            answers = [s.answer for s in r.samples]
            tokens = [s.answer_tokens for s in r.samples]
            k, t, voted = replay(answers, tokens, rule, first)
            drawn, spent = drawn + k, spent + t
            right += voted == str(a + b)
            agree += voted == winner(answers)[0]
        rows[name] = {"samples": drawn, "tokens": spent, "accuracy": right / len(problems), "agreement": agree / len(problems)}
    for pct in (10, 50):
        pruned = batch(pct)
        right = agree = 0
        for (a, b), r, f in zip(problems, pruned, full):
            said = [s.answer for s in r.samples if s.finish_reason in ("stop", "length")]
            right += winner(said)[0] == str(a + b)
            agree += winner(said)[0] == winner([s.answer for s in f.samples])[0]
        rows[f"prune p{pct} (real run)"] = {
            "samples": sum(len(r.samples) - r.samples_pruned for r in pruned),
            "tokens": sum(r.answer_tokens for r in pruned), "accuracy": right / len(problems),
            "agreement": agree / len(problems),
        }
    single = sum(sum(s.answer == str(a + b) for s in r.samples) / len(r.samples) for (a, b), r in zip(problems, full))
    print(f"two-number addition, {len(problems)} problems, N={args.samples}, temperature {args.temperature}; "
          f"one sample right {single / len(problems):.0%} on average")
    print(f"{'rule':26} {'samples':>8} {'saved':>6} {'tokens':>7} {'saved':>6} {'accuracy':>9} {'agree':>6}")
    for name, r in rows.items():
        print(f"{name:26} {r['samples']:8} {1 - r['samples'] / total_samples:6.0%} {r['tokens']:7} "
              f"{1 - r['tokens'] / total_tokens:6.0%} {r['accuracy']:9.0%} {r['agreement']:6.0%}")
    if args.json:
        args.json.write_text(json.dumps({"problems": len(problems), "samples": args.samples, "rows": rows}, indent=2))
    e.close()


if __name__ == "__main__":
    main()
