"""How often the unsure floor fires, what it catches, what it costs (docs/risk.md, "Conservative when unsure").

    python bench/risk_unsure.py [FILE ...]   (default: the held-out files)

For every labeled query: the classifier's score, the assessment under the
default policy (tenant "acme"), and the first plan with and without the floor,
for a 60-token prompt. Reports the firing rate, the true labels of the queries
it fired on, the high-severity queries it lifted off the cheapest level, and
the worst-case cost it adds (mean over all queries, and over those it fired on).
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import pathlib

from ponderd.engine import EngineLimits
from ponderd.planning.assessment import adjust
from ponderd.planning.planner import Hints, plan_candidates
from ponderd.planning.policy_file import load_policy
from ponderd.risk import artifact, corpus

REPO = pathlib.Path(__file__).resolve().parent.parent
LIMITS = EngineLimits(n_ctx=8192, n_ctx_seq=8192, n_seq_max=8, forced_open=4, forced_close=5, forced_skip=0)
PROMPT_TOKENS = 60


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("files", nargs="*")
    ap.add_argument("--policy", default=str(REPO / "policies" / "default.toml"))
    ap.add_argument("--confidence", type=float, help="unsure_confidence to try instead of the policy's")
    args = ap.parse_args()
    files = [pathlib.Path(f) for f in args.files] or corpus.heldout_files()
    examples = [e for f in files for e in corpus.read_jsonl(f)]
    policy = load_policy(pathlib.Path(args.policy))
    if args.confidence is not None:
        policy = dataclasses.replace(policy, defaults=dataclasses.replace(policy.defaults, unsure_confidence=args.confidence))
    rules = policy.rules_for("acme")
    off = dataclasses.replace(rules, unsure_floor="")
    model = artifact.load(artifact.SHIPPED_DIR)
    fired = collections.Counter()
    cues = collections.Counter()
    lifted_high = 0
    under_served_high = 0
    extra_all, extra_fired = 0, []
    for e in examples:
        a = adjust(model.score(e.text), policy, "acme", e.text, None)
        on_plan = plan_candidates(a, policy, rules, Hints(), PROMPT_TOKENS, LIMITS)[0]
        off_plan = plan_candidates(a, policy, off, Hints(), PROMPT_TOKENS, LIMITS)[0]
        if e.severity == "high" and a.severity != "high":
            under_served_high += 1
        if a.unsure_cues:
            fired[e.severity] += 1
            cues.update(a.unsure_cues)
            extra_fired.append(on_plan.worst_case_micros - off_plan.worst_case_micros)
            if e.severity == "high" and policy.rank(on_plan.level) > policy.rank(off_plan.level):
                lifted_high += 1
        extra_all += on_plan.worst_case_micros - off_plan.worst_case_micros
    n = len(examples)
    total = sum(fired.values())
    print(f"{n} queries from {len(files)} file(s); model {model.version}; policy {policy.version}; "
          f"unsure_floor {rules.unsure_floor!r} below confidence {rules.unsure_confidence:g}")
    print(f"fired on {total} ({total / n:.1%}); true labels of those: "
          + ", ".join(f"{s} {fired[s]}" for s in ("low", "medium", "high")))
    print("cues: " + ", ".join(f"{k} {v}" for k, v in cues.most_common()))
    print(f"high-severity queries the classifier put below high: {under_served_high}; "
          f"the floor raised the plan of {lifted_high} of them")
    mean_fired = sum(extra_fired) / len(extra_fired) if extra_fired else 0
    print(f"added worst-case cost ({PROMPT_TOKENS}-token prompt): {extra_all / n / 1e6:.4f} credits per query on average, "
          f"{mean_fired / 1e6:.4f} per query it fired on")


if __name__ == "__main__":
    main()
