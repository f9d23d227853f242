"""Accuracy per cost of each technique on the verifiable set: single sample, majority of N,
confidence-weighted vote, escalation, one refinement round, and refinement after the vote.

    python bench/techniques.py [--data bench/data/verifiable.jsonl] [--samples 8] [--json FILE]

Every item's N samples are drawn once through the real engine (fixed seeds), and the
sampling techniques are replayed over those same samples with the daemon's own
functions (voting.py, stopping.py), so they differ only in how they use them:

- single: the first sample's answer;
- majority of N: the plain vote over all N;
- weighted: the vote weighted by each sample's confidence (the mean of its lowest window);
- escalation: the first `--first` samples, and the rest only when they disagree;
- refine (1 round): the first sample, critiqued and revised once (refine.py's prompt);
- vote + refine: the majority's text, critiqued and revised once (what `refine = 1` does).

The refinement rounds run for real (one sequence each, refine.py's frame, `--refine-tokens`).
Tokens are what each technique reads and writes: the prompt once per request (samples share
it), the samples it drew, and a round's own prompt and answer. Cost is the default policy's
prices (policies/default.toml) on those tokens, in credits per question.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
from dataclasses import dataclass

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from common import engine, run_jobs, table
from ponderd import answers
from ponderd.engine import GenerationJob, framing
from ponderd.planning.calibrate import load_dataset
from ponderd.planning.policy_file import load_policy
from ponderd.planning.profile import wilson
from ponderd.request.stopping import agreed
from ponderd.request.voting import never_decided, weighted_winner, winner

REPO = pathlib.Path(__file__).resolve().parents[1]


@dataclass
class Tally:
    correct: int = 0
    n: int = 0
    prompt: int = 0
    generated: int = 0

    def add(self, right: bool, prompt: int, generated: int) -> None:
        self.correct += right
        self.n += 1
        self.prompt += prompt
        self.generated += generated


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", type=pathlib.Path, default=REPO / "bench" / "data" / "verifiable.jsonl")
    ap.add_argument("--samples", type=int, default=8, help="N for the vote")
    ap.add_argument("--first", type=int, default=3, help="escalation: samples drawn before checking agreement")
    ap.add_argument("--tokens", type=int, default=48, help="answer cap per sample")
    ap.add_argument("--refine-tokens", type=int, default=48, help="answer cap of a refinement round")
    ap.add_argument("--limit", type=int, default=0, help="only the first LIMIT items (0: all)")
    ap.add_argument("--json", type=pathlib.Path, help="also write the figures here")
    args = ap.parse_args()
    items, sha = load_dataset(args.data)
    items = items[: args.limit] if args.limit else items
    prices = load_policy(REPO / "policies" / "default.toml").prices_for("")
    e = engine()
    print(f"model {e.model_name}, {len(items)} items, N={args.samples}, answer cap {args.tokens}, "
          f"refinement cap {args.refine_tokens}")

    # All items' samples at once: the engine batches them as it would concurrent requests.
    jobs = [
        GenerationJob(e.prepare("", it.text), args.samples, 0, args.tokens, 1000 + k,
                      answers.extractor(it.check.answer_format), never_decided)
        for k, it in enumerate(items)
    ]
    drawn, wall = run_jobs(e, jobs)
    print(f"drew {len(items)} x {args.samples} samples in {wall:.0f} s")

    def round_jobs(texts: list[str]) -> list[GenerationJob]:
        return [
            GenerationJob(e.prepare("", framing.frame(it.text, text)), 1, 0, args.refine_tokens, 5000 + k,
                          answers.extractor(it.check.answer_format), never_decided)
            for k, (it, text) in enumerate(zip(items, texts))
        ]

    firsts = [r.samples[0].text for r in drawn]
    voted = []
    for r in drawn:
        said = [s.answer for s in r.samples]
        voted.append(r.samples[winner(said)[1]].text)
    refined_first, _ = run_jobs(e, round_jobs(firsts))
    refined_vote, _ = run_jobs(e, round_jobs(voted))
    e.close()

    names = ["single sample", f"majority of {args.samples}", "confidence-weighted", f"escalation ({args.first} first)",
             "refine 1 round (single)", "vote + refine 1 round"]
    t = {name: Tally() for name in names}
    for it, r, rf, rv in zip(items, drawn, refined_first, refined_vote):
        s, prompt = r.samples, r.prompt_tokens
        said = [x.answer for x in s]
        toks = [x.answer_tokens + x.thinking_tokens for x in s]
        ok = it.check.verify
        t[names[0]].add(ok(said[0]), prompt, toks[0])
        t[names[1]].add(ok(winner(said)[0]), prompt, sum(toks))
        t[names[2]].add(ok(weighted_winner(said, [x.confidence for x in s])[0]), prompt, sum(toks))
        k = args.samples if not agreed(said[: args.first]) else args.first
        t[names[3]].add(ok(winner(said[:k])[0]), prompt, sum(toks[:k]))
        for name, round_, base_answer, base_tokens in (
            (names[4], rf, said[0], toks[0]),
            (names[5], rv, winner(said)[0], sum(toks)),
        ):
            x = round_.samples[0]
            # As refine.py keeps it: a revision with nothing extractable is not kept.
            final = x.answer or base_answer
            t[name].add(ok(final), prompt + round_.prompt_tokens, base_tokens + x.answer_tokens)

    rows, out = [], {}
    for name in names:
        x = t[name]
        acc = x.correct / x.n
        lo, hi = wilson(x.correct, x.n)
        cost = prices.micros(x.prompt, 0, x.generated) / 1e6 / x.n
        base = t[names[0]]
        rel = cost / (prices.micros(base.prompt, 0, base.generated) / 1e6 / base.n)
        rows.append((name, f"{acc:.0%}", f"{lo:.0%}-{hi:.0%}", (x.prompt + x.generated) / x.n, x.generated / x.n,
                     cost, f"{rel:.1f}x"))
        out[name] = {"accuracy": acc, "ci95": [lo, hi], "correct": x.correct, "n": x.n,
                     "tokens_per_question": (x.prompt + x.generated) / x.n, "generated_per_question": x.generated / x.n,
                     "credits_per_question": cost, "cost_vs_single": rel}
    print(table(rows, ["technique", "accuracy", "95% CI", "tokens/q", "generated/q", "credits/q", "cost"]))
    if args.json:
        args.json.write_text(json.dumps({"data": str(args.data.relative_to(REPO)), "sha256": sha, "items": len(items),
                                         "samples": args.samples, "first": args.first, "tokens": args.tokens,
                                         "refine_tokens": args.refine_tokens, "techniques": out}, indent=2))


if __name__ == "__main__":
    main()
