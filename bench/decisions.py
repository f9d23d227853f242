"""What each way of deciding buys: cheapest, most expensive, the routing table, expected loss (with and without a second model).

    .venv/bin/python bench/decisions.py [--items 120] [--concurrency 2] [--out bench/results/decisions.json]

One run, real parts: a daemon serving two models (the embedded SmolLM2-135M as
"default", and the same GGUF as "terse", told to give the bare answer and
priced 1.5x), the verifiable set bench/data/verifiable.jsonl split in two by
position. The first half calibrates the accuracy profile (`ponder calibrate`'s
code). The second half is answered once at every level with a fixed seed per
item; then, for each strategy, the real daemon plans every held-out item
(Quote: its classifier, its planner, under that strategy's policy, reloaded)
and the item is scored by the answer its chosen level gave. An Ask with the
same seed at that level gives the same answer, so this is the strategy's
outcome without paying for each strategy's run again.

Losses (credits a wrong answer costs), the issue's example: low 0.05, medium 1, high 40 — a wrong
high-severity answer costs about a thousand cheap answers. "Total loss" is the
realized cost plus the losses of the wrong answers.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import tempfile
from typing import Any

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from common import table  # noqa: E402
from conftest import DaemonThread, make_settings  # noqa: E402
from ponderd.engine.model_file import model_identity  # noqa: E402
from ponderd.planning.calibrate import build_profile, load_dataset, read_results, run_pairs  # noqa: E402
from ponderd.planning.profile import wilson  # noqa: E402

POLICY = HERE / "policies" / "decisions.toml"
DATA = HERE / "data" / "verifiable.jsonl"
LOSS = {"low": 0.05, "medium": 1.0, "high": 40.0}
TERSE_SYSTEM = "Answer with the final answer only: a number, a word or a letter, nothing else."
TERSE_LEVELS = ("terse1", "terse3", "terse6")


def variant(base: str, mode: str, second: bool, profile: pathlib.Path | None) -> str:
    text = base.replace('version = "bench-decisions-1"', f'version = "bench-decisions-{mode}{"" if second else "-one-model"}"')
    if not second:
        blocks = text.split("\n\n")
        text = "\n\n".join(b for b in blocks if not any(f"[levels.{t}]" in b for t in TERSE_LEVELS))
    if mode == "expected_loss":
        loss = ", ".join(f"{k} = {v}" for k, v in LOSS.items())
        text = text.replace("# The hand-written table", f'[planning]\nmode = "expected_loss"\nprofile = "{profile}"\nloss = {{ {loss} }}\n\n# The hand-written table', 1)
    return text


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=120, help="use the first N items of the set")
    ap.add_argument("--concurrency", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(HERE / "results" / "decisions.json"))
    args = ap.parse_args()

    items, sha = load_dataset(DATA)
    items = items[: args.items]
    calib, held = items[0::2], items[1::2]
    work = pathlib.Path(tempfile.mkdtemp(prefix="ponder-bench-decisions-"))
    policy_file = work / "policy.toml"
    base = POLICY.read_text()
    policy_file.write_text(base)
    settings = make_settings(
        work / "state", policy_file,
        model={"name": "default", "n_ctx": 4096, "n_seq_max": 8},
        models={"terse": {"n_ctx": 4096, "n_seq_max": 8, "system_prompt": TERSE_SYSTEM}},
        accuracy={"update_schedule": ""}, risk={"retrain_schedule": ""},
    )
    d = DaemonThread(settings).start()
    try:
        with d.client() as c, d.admin() as admin:
            levels = [lvl.name for lvl in d.daemon.policies.current().levels]
            print(f"calibrating {len(calib)} items x {len(levels)} levels ...", flush=True)
            run_pairs(c, [(i, lvl) for i in calib for lvl in levels], seed=args.seed, sha=sha,
                      out=work / "calib.jsonl", concurrency=args.concurrency)
            # The profile names the model it measured: the daemon uses it only on that file.
            profile = build_profile(read_results(work / "calib.jsonl"), levels, "bench-decisions-1",
                                    {"path": str(DATA), "sha256": sha, "items": len(calib)}, model_identity(None))
            profile.save(work / "profile.json")
            print(f"answering {len(held)} held-out items x {len(levels)} levels ...", flush=True)
            run_pairs(c, [(i, lvl) for i in held for lvl in levels], seed=args.seed, sha=sha,
                      out=work / "held.jsonl", concurrency=args.concurrency)
            outcome = {(r["id"], r["level"]): r for r in read_results(work / "held.jsonl")}

            def decide(text: str) -> dict[str, str]:
                policy_file.write_text(text)
                admin.reload_policy()
                return {i.id: c.quote(i.text).plan.level for i in held}

            strategies = {
                "always cheapest (direct)": {i.id: "direct" for i in held},
                "always most expensive (terse6)": {i.id: "terse6" for i in held},
                "routing table": decide(variant(base, "routing", True, None)),
                "expected loss, one model": decide(variant(base, "expected_loss", False, work / "profile.json")),
                "expected loss, two models": decide(variant(base, "expected_loss", True, work / "profile.json")),
            }
    finally:
        d.stop()

    severity = {i.id: i.severity or "low" for i in held}
    report: dict[str, Any] = {"items": {"calibration": len(calib), "held_out": len(held)}, "loss": LOSS,
                              "profile": profile.to_json(), "strategies": {}}
    rows = []
    for name, choice in strategies.items():
        picked = [outcome[(iid, lvl)] for iid, lvl in choice.items()]
        high = [r for r in picked if severity[r["id"]] == "high"]
        right_high = sum(r["correct"] for r in high)
        cost = sum(r["cost"] for r in picked)
        loss = cost + sum(LOSS[severity[r["id"]]] for r in picked if not r["correct"])
        lo, hi = wilson(right_high, len(high))
        levels_used: dict[str, int] = {}
        for lvl in choice.values():
            levels_used[lvl] = levels_used.get(lvl, 0) + 1
        entry = {
            "high_accuracy": right_high / len(high), "high_ci95": [lo, hi], "high_items": len(high),
            "accuracy": sum(r["correct"] for r in picked) / len(picked), "cost": cost, "total_loss": loss,
            "levels": levels_used,
        }
        report["strategies"][name] = entry
        rows.append([name, f"{entry['high_accuracy']:.2f} [{lo:.2f}, {hi:.2f}]", round(entry["accuracy"], 3),
                     round(cost, 4), round(loss, 3), " ".join(f"{k}:{v}" for k, v in sorted(levels_used.items()))])
    print(table(rows, ["strategy", "high-severity accuracy [95% CI]", "accuracy", "cost", "total loss", "levels"]))
    top = report["strategies"]["always most expensive (terse6)"]
    for name in ("expected loss, one model", "expected loss, two models"):
        e = report["strategies"][name]
        print(f"{name}: cost {e['cost'] / top['cost']:.2f}x always-most-expensive; high-severity accuracy "
              f"{e['high_accuracy']:.2f} vs {top['high_accuracy']:.2f} (CI {top['high_ci95'][0]:.2f}-{top['high_ci95'][1]:.2f})")
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
