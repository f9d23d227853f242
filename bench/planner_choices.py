"""The expected-loss planner's choices on a given accuracy profile, per slice, and what they cost against always-the-top.

    .venv/bin/python bench/planner_choices.py [--profile bench/data/illustrative_gpu_profile.json]

Pure arithmetic with the daemon's own planner code (expected_loss.choose): for
each (severity, needs_reasoning) slice it shows the level chosen, its expected
total and the next best, for a sure classifier. Then it takes a workload mix
(the share of each slice) and compares expected-loss planning with always the
cheapest and always the most expensive level: accuracy on high severity,
overall accuracy, cost and total loss, all from the profile (estimates, not a run).
The default profile is ILLUSTRATIVE (docs/benchmarks.md says what it stands for).
"""

from __future__ import annotations

import argparse
import pathlib
import sys

HERE = pathlib.Path(__file__).resolve().parent
from common import table  # noqa: E402
from ponderd.engine import EngineLimits  # noqa: E402
from ponderd.planning.assessment import Assessment  # noqa: E402
from ponderd.planning.expected_loss import choose  # noqa: E402
from ponderd.planning.planner import Hints, Served, plan_candidates  # noqa: E402
from ponderd.planning.policy_file import load_policy  # noqa: E402
from ponderd.planning.profile import Profile  # noqa: E402
from ponderd.risk.score import RiskScore  # noqa: E402

POLICY = """
version = "illustrative-gpu-1"
[prices]
prompt = 0.25
thinking = 1.0
answer = 1.0
[model_prices.r1]
prompt = 0.5
thinking = 3.0
answer = 3.0
[levels.direct]
thinking_tokens = 0
samples = 1
answer_tokens = 512
[levels.vote]
thinking_tokens = 0
samples = 5
answer_tokens = 512
[levels.reason]
model = "r1"
thinking_tokens = 4096
samples = 3
answer_tokens = 1024
[routing]
low = { direct = "direct", reasoning = "vote", floor = "direct" }
medium = { direct = "direct", reasoning = "vote", floor = "direct" }
high = { direct = "vote", reasoning = "reason", floor = "direct" }
[planning]
mode = "expected_loss"
loss = { low = 0.5, medium = 10, high = 400 }
"""
# Losses: a wrong high-severity answer costs as much as ~15 reasoning-model answers (24 credits each here).
# Share of each slice in the workload: most traffic is low-stakes and direct.
MIX = {("low", False): 0.45, ("low", True): 0.15, ("medium", False): 0.15, ("medium", True): 0.1,
       ("high", False): 0.07, ("high", True): 0.08}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default=str(HERE / "data" / "illustrative_gpu_profile.json"))
    args = ap.parse_args()
    profile = Profile.load(args.profile)
    tmp = pathlib.Path(args.profile).with_name(".planner_choices_policy.toml")
    tmp.write_text(POLICY + f'profile = "{pathlib.Path(args.profile).resolve()}"\n')
    try:
        policy = load_policy(tmp, ["qwen-small", "r1"])
    finally:
        tmp.unlink()
    limits = EngineLimits(32768, 32768, 16, 4, 12, 2)
    loss = policy.planning.loss
    rows, chosen = [], {}
    for (sev, reasoning) in MIX:
        probs = {s: (1.0 if s == sev else 0.0) for s in ("low", "medium", "high")}
        a = Assessment(sev, reasoning, RiskScore(sev, reasoning, probs, float(reasoning), "sure"))
        plans = plan_candidates(a, policy, policy.defaults, Hints(), 200, limits, primary="qwen-small",
                                others={"r1": Served(limits, 200)}, accuracy=profile)
        ranked = choose(a, policy, profile, [plan_candidates(a, policy, policy.defaults, Hints(level=lvl.name), 200, limits,
                                                             primary="qwen-small", others={"r1": Served(limits, 200)})[0]
                                             for lvl in policy.levels])
        chosen[(sev, reasoning)] = plans[0].level
        nxt = ranked[1] if len(ranked) > 1 else None
        rows.append([f"{sev}/{'reasoning' if reasoning else 'direct'}", plans[0].level, round(ranked[0].total, 2),
                     f"{nxt.level} {nxt.total:.2f}" if nxt else "-"])
    print(table(rows, ["slice", "chosen", "expected total", "next best"]))

    def outcome(pick) -> list:
        acc_high = cost = acc = lost = 0.0
        high_share = sum(w for (s, _), w in MIX.items() if s == "high")
        for (sev, reasoning), w in MIX.items():
            level = pick(sev, reasoning)
            p = profile.estimate(level, sev, reasoning).accuracy
            c = profile.levels[level].mean_cost
            acc += w * p
            cost += w * c
            lost += w * (c + (1 - p) * loss[sev])
            if sev == "high":
                acc_high += w * p / high_share
        return [round(acc_high, 3), round(acc, 3), round(cost, 2), round(lost, 2)]

    strategies = {
        "always cheapest": lambda s, r: "direct",
        "always most expensive": lambda s, r: "reason",
        "expected loss": lambda s, r: chosen[(s, r)],
    }
    res = {name: outcome(fn) for name, fn in strategies.items()}
    print()
    print(table([[n, *v] for n, v in res.items()], ["per request, on the mix", "high accuracy", "accuracy", "cost", "total loss"]))
    el, top = res["expected loss"], res["always most expensive"]
    print(f"\nexpected loss: {el[2] / top[2]:.2f}x the cost of always-most-expensive, high-severity accuracy {el[0]:.3f} vs {top[0]:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
