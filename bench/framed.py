"""Where stakes do not change difficulty: every fixed level, the routing table and expected loss on framed questions.

    .venv/bin/python bench/framed.py [--items 36] [--levels a,b] [--concurrency 2] [--out bench/results/framed.json]

bench/data/framed.jsonl asks each underlying question (`group`) three times: as a game (low
stakes), an invoice (medium) and a child's dose (high), with the same numbers and answer. So
a plan that spends more on the high framing than on the low one is spending on stakes, not on
difficulty. One run, real parts: a daemon (the embedded SmolLM2-135M) under
bench/policies/framed.toml (the default policy's levels and routing table, thinking caps cut
for a CPU).

1. Every item is quoted under the routing table: the classifier's severity per framing, a
   table (the set is only worth running if the framings move the severity).
2. The groups are split in two (odd and even numbers of each kind): the calibration half is asked
   at every level (`ponder calibrate`'s code) and measures the profile, named with the model
   file's digest.
3. The evaluation half is answered once at every level with a fixed seed per item. Each plan
   is then replayed: the fixed levels, the routing table and expected loss (the policy reloaded
   with [planning] mode = "expected_loss" and the profile) are asked for a Quote of every
   evaluation item, and the item is scored by the answer its chosen level gave (an Ask with the
   same seed at that level gives the same answer), as bench/decisions.py does.

Per plan: accuracy per severity (the framing's) with Wilson 95% intervals, mean cost (overall
and per severity), and total loss: cost plus the policy's loss for each wrong answer.
--items N uses N groups, taken round the kinds (2 x 4 kinds: one question of each kind per half).

    .venv/bin/python bench/framed.py --standin [--replicates 20] [--seed 0]

--standin: the STAND-IN ENGINE. The same daemon, classifier, policy, plans, splits, scoring and
table, but no answer is asked of the model: each (item, level) is quoted with the level as its
hint, and its outcome and cost come from the declared accuracy model in bench/framed_standin.py
(each question's difficulty drawn once per group, a skill per level, P(right) =
logistic(skill - difficulty); cost a declared fraction of the quoted worst case). The
calibration half is drawn once (as `ponder calibrate` asks once); the evaluation half is drawn
--replicates times, and the table pools the replicates (total loss: mean and spread per
replicate). Every output line says STAND-IN; results go to bench/results/framed_standin.{json,txt}.
"""

from __future__ import annotations

import argparse
import collections
import json
import pathlib
import shlex
import statistics
import sys
import tempfile
import tomllib
from typing import Any

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

import framed_standin as standin  # noqa: E402

from common import table  # noqa: E402
from conftest import DaemonThread, make_settings  # noqa: E402
from ponderd.engine.model_file import model_identity  # noqa: E402
from ponderd.planning.calibrate import Item, build_profile, load_dataset, read_results, run_pairs  # noqa: E402
from ponderd.planning.profile import wilson  # noqa: E402

POLICY = HERE / "policies" / "framed.toml"
DATA = HERE / "data" / "framed.jsonl"
SEVERITIES = ("low", "medium", "high")
NAMES = {1: "low", 2: "medium", 3: "high"}


def groups_of(path: pathlib.Path) -> dict[str, str]:
    """item id -> group (load_dataset keeps only what calibrate uses)."""
    out = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            out[str(row["id"])] = str(row.get("group", row["id"]))
    return out


def expected_loss_variant(base: str, profile: pathlib.Path) -> str:
    return base.replace('mode = "routing"', f'mode = "expected_loss"\nprofile = "{profile}"', 1).replace(
        'version = "bench-framed-1"', 'version = "bench-framed-el-1"', 1)


def score(name: str, choice: dict[str, str], outcome: dict[tuple[str, str], dict], severity: dict[str, str],
          loss: dict[str, float]) -> dict[str, Any]:
    picked = [outcome[(iid, lvl)] for iid, lvl in choice.items()]
    entry: dict[str, Any] = {"items": len(picked), "cost": sum(r["cost"] for r in picked)}
    entry["mean_cost"] = entry["cost"] / len(picked)
    entry["accuracy"] = sum(r["correct"] for r in picked) / len(picked)
    entry["total_loss"] = entry["cost"] + sum(loss[severity[r["id"]]] for r in picked if not r["correct"])
    entry["by_severity"] = {}
    for sev in SEVERITIES:
        rows = [r for r in picked if severity[r["id"]] == sev]
        if not rows:
            continue
        right = sum(r["correct"] for r in rows)
        levels = collections.Counter(choice[r["id"]] for r in rows)
        entry["by_severity"][sev] = {"n": len(rows), "correct": right, "accuracy": right / len(rows),
                                     "ci95": list(wilson(right, len(rows))),
                                     "mean_cost": sum(r["cost"] for r in rows) / len(rows),
                                     "levels": dict(sorted(levels.items()))}
    return entry


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=0, help="use the first N groups (default: all)")
    ap.add_argument("--levels", help="levels to measure, comma-separated (default: every level of the policy)")
    ap.add_argument("--concurrency", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--severity-only", action="store_true", help="only quote the framings and print the severity table")
    ap.add_argument("--out", help="report file (default: bench/results/framed.json; framed_standin.json with --standin)")
    ap.add_argument("--standin", action="store_true",
                    help="the stand-in engine: outcomes from bench/framed_standin.py's declared accuracy model, not the model")
    ap.add_argument("--replicates", type=int, default=20,
                    help="with --standin: independent outcome draws of the evaluation half (default 20)")
    ap.add_argument("--calib-replicates", type=int, default=1,
                    help="with --standin: outcome draws of the calibration half (default 1, as `ponder calibrate` asks "
                    "once; more is a diagnostic: the profile the planner would have with more outcomes)")
    ap.add_argument("--work", help="folder for the answers (calib.jsonl, held.jsonl); a rerun with the same folder "
                    "asks only the pairs not yet there (default: a new temporary folder)")
    args = ap.parse_args()
    command = "python bench/framed.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    real_out = HERE / "results" / "framed.json"
    if args.out is None:
        args.out = str(HERE / "results" / "framed_standin.json") if args.standin else str(real_out)
    if args.standin and pathlib.Path(args.out).resolve() == real_out.resolve():
        ap.error(f"--standin would write over the real run's {real_out}; pass another --out")
    if args.replicates < 1 or args.calib_replicates < 1:
        ap.error("--replicates and --calib-replicates must be at least 1")
    if args.calib_replicates > 1 and not args.standin:
        ap.error("--calib-replicates is for --standin only")
    replicates = args.replicates if args.standin else 1

    items, sha = load_dataset(DATA)
    group = groups_of(DATA)
    # Groups are KIND-NN: take them round the kinds (sum-01, difference-01, ..., sum-02, ...), so that
    # --items N keeps every kind; odd NN calibrate, even NN evaluate: each half has every kind.
    names = sorted(dict.fromkeys(group[i.id] for i in items), key=lambda g: (g.rsplit("-", 1)[-1], g))
    if args.items:
        names = names[: args.items]
    keep = set(names)
    items = [i for i in items if group[i.id] in keep]
    calib_groups = {g for g in names if int(g.rsplit("-", 1)[-1]) % 2 == 1}
    calib = [i for i in items if group[i.id] in calib_groups]
    held = [i for i in items if group[i.id] not in calib_groups]
    severity = {i.id: i.severity or "low" for i in items}
    base = POLICY.read_text()
    loss = {k: float(v) for k, v in tomllib.loads(base)["planning"]["loss"].items()}

    work = pathlib.Path(args.work) if args.work else pathlib.Path(tempfile.mkdtemp(prefix="ponder-bench-framed-"))
    work.mkdir(parents=True, exist_ok=True)
    if args.standin:
        for name in ("calib.jsonl", "held.jsonl"):
            rows = read_results(work / name)
            if rows and rows[0].get("engine") != "stand-in":
                ap.error(f"{work / name} holds the embedded model's answers; give --standin another --work folder")
    policy_file = work / "policy.toml"
    policy_file.write_text(base)
    settings = make_settings(work / "state", policy_file, model={"name": "default", "n_ctx": 4096, "n_seq_max": 8},
                             accuracy={"update_schedule": ""}, risk={"retrain_schedule": ""})
    model = model_identity(None)
    d = DaemonThread(settings).start()
    lines = [f"{'STAND-IN | ' if args.standin else ''}$ {command}", ""]

    def say(text: str = "") -> None:
        if args.standin:  # every line of a stand-in run says so
            text = "\n".join(f"STAND-IN | {line}" for line in text.split("\n"))
        print(text, flush=True)
        lines.append(text)

    if args.standin:
        say(standin.ENGINE)
        say("declared model (bench/framed_standin.py): skill " + ", ".join(f"{k} {v:g}" for k, v in standin.SKILL.items())
            + f"; difficulty per question ~ Normal({standin.DIFFICULTY_MEAN:g}, {standin.DIFFICULTY_SD:g}); "
            f"P(right) = logistic(skill - difficulty); cost {standin.SPEND_FRACTION:g} x the quoted worst case; "
            f"seed {args.seed}; calibration drawn {args.calib_replicates}x, evaluation {replicates}x")
        say()

    def ask(c: Any, which: list[Item], levels: list[str], out: pathlib.Path, draws: int = 1) -> None:
        if args.standin:
            standin_rows(c, which, levels, out, draws)
            return
        done = {(r["id"], r["level"]) for r in read_results(out)}
        pairs = [(i, lvl) for i in which for lvl in levels if (i.id, lvl) not in done]
        run_pairs(c, pairs, seed=args.seed, sha=sha, out=out, concurrency=args.concurrency)

    def standin_rows(c: Any, which: list[Item], levels: list[str], out: pathlib.Path, draws: int) -> None:
        """calibrate's result rows, from the declared model: one Quote per (item, level) for the cost, `draws` outcomes."""
        rows = []
        f = standin.SPEND_FRACTION
        for i in which:
            for lvl in levels:
                q = c.quote(i.text, level=lvl, answer_format=i.check.answer_format)
                p = q.plan
                if p.level != lvl:
                    raise SystemExit(f"stand-in: the daemon planned {p.level} for {i.id} with the hint level={lvl}")
                for r in range(draws):
                    rows.append({
                        "id": i.id, "level": lvl, "model": "",
                        "correct": standin.correct(args.seed, group[i.id], i.id, lvl, r),
                        "cost": standin.spend(p.worst_case_cost),
                        "tokens": {"prompt": q.prompt_tokens, "thinking": round(f * p.samples * p.thinking_tokens),
                                   "answer": round(f * p.samples * p.answer_tokens), "forced": 0},
                        "samples": p.samples, "latency_s": 0.0, "answer": "",
                        "severity": i.severity or NAMES.get(q.assessment.severity, "low"),
                        "needs_reasoning": (i.needs_reasoning if i.needs_reasoning is not None
                                            else bool(q.assessment.needs_reasoning)),
                        "request_id": "", "policy_version": p.policy_version, "dataset_sha256": sha,
                        "engine": "stand-in", "replicate": r,
                    })
        out.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")

    try:
        with d.client() as c, d.admin() as admin:
            levels = ([x for x in args.levels.split(",") if x] if args.levels
                      else [lvl.name for lvl in d.daemon.policies.current().levels])

            def quote_all(which: list[Item]) -> dict[str, Any]:
                return {i.id: c.quote(i.text) for i in which}

            # 1. Does the framing move the classifier's severity?
            quotes = quote_all(items)
            grid = collections.Counter((severity[iid], NAMES.get(q.assessment.severity, "?")) for iid, q in quotes.items())
            say(f"classifier severity by framing ({len(items)} items, {len(names)} groups):")
            routed = collections.defaultdict(collections.Counter)
            for iid, q in quotes.items():
                routed[severity[iid]][q.plan.level] += 1
            say(table([[sev, *(grid[(sev, a)] for a in SEVERITIES),
                        " ".join(f"{k}:{v}" for k, v in sorted(routed[sev].items()))] for sev in SEVERITIES],
                      ["framing", "assessed low", "medium", "high", "routing plans"]))
            severity_table = {sev: {a: grid[(sev, a)] for a in SEVERITIES} for sev in SEVERITIES}
            if args.severity_only:
                return _write(args.out, lines, {"command": command, "severity_by_framing": severity_table})

            # 2. Calibrate on one half of the groups.
            say(f"\ncalibrating {len(calib)} items x {len(levels)} levels ..."
                + ((" (stand-in outcomes, drawn once)" if args.calib_replicates == 1 else
                    f" (stand-in outcomes, drawn {args.calib_replicates} times: a diagnostic, not a real calibration)")
                   if args.standin else ""))
            ask(c, calib, levels, work / "calib.jsonl", args.calib_replicates)
            calib_ids = {i.id for i in calib}
            measured = [r for r in read_results(work / "calib.jsonl") if r["id"] in calib_ids and r["level"] in levels]
            profile = build_profile(measured, levels, "bench-framed-1",
                                    {"path": str(DATA), "sha256": sha, "items": len(calib)}, model)
            profile.save(work / "profile.json")
            # 3. Answer the other half at every level, then replay each plan by Quote.
            say(f"answering {len(held)} evaluation items x {len(levels)} levels ..."
                + (f" (stand-in outcomes, {replicates} replicates)" if args.standin else ""))
            ask(c, held, levels, work / "held.jsonl", replicates)
            # Replicate r of item X is scored as item "X#r" (the real run has one, replicate 0).
            outcome = {(f"{r['id']}#{r.get('replicate', 0)}", r["level"]): {**r, "id": f"{r['id']}#{r.get('replicate', 0)}"}
                       for r in read_results(work / "held.jsonl") if r["level"] in levels}
            allowed = set(levels)

            planned: dict[str, Any] = {}

            def decide(text: str) -> dict[str, str]:
                policy_file.write_text(text)
                admin.reload_policy()
                planned.clear()
                planned.update({i.id: c.quote(i.text).plan for i in held})
                return {iid: plan.level for iid, plan in planned.items()}

            strategies: dict[str, dict[str, str]] = {f"always {lvl}": {i.id: lvl for i in held} for lvl in levels}
            strategies["routing table"] = decide(base)
            strategies["expected loss"] = decide(expected_loss_variant(base, work / "profile.json"))
            # Why: the planner's expected totals (cost + P(wrong) x loss) for the first item of each framing.
            why = {}
            for sev in SEVERITIES:
                iid = next((i.id for i in held if severity[i.id] == sev), None)
                if iid is not None:
                    why[sev] = {"item": iid, "choices": [
                        {"level": ch.level, "expected_cost": ch.expected_cost, "p_wrong": ch.p_wrong,
                         "expected_total": ch.expected_total} for ch in planned[iid].choices]}
            for name, choice in strategies.items():
                missing = set(choice.values()) - allowed
                if missing:
                    say(f"note: {name} chose levels not measured ({', '.join(sorted(missing))}); not scored")
            strategies = {n: ch for n, ch in strategies.items() if set(ch.values()) <= allowed}
    finally:
        d.stop()

    report: dict[str, Any] = {
        "command": command, "model": {"file": model.file, "sha256": model.sha256}, "loss": loss,
        "groups": {"calibration": sorted(calib_groups), "evaluation": sorted(keep - calib_groups)},
        "items": {"calibration": len(calib), "evaluation": len(held)}, "severity_by_framing": severity_table,
        "profile": profile.to_json(), "strategies": {},
    }
    report["expected_loss_choices"] = why
    if args.standin:
        report["engine"] = standin.ENGINE
        report["standin"] = {**standin.declared(), "seed": args.seed, "replicates": replicates,
                             "calibration": f"{args.calib_replicates} draw(s) per (item, level)",
                             "evaluation": f"{replicates} independent draws per (item, level), pooled"}
    # Each plan's choice holds for every replicate of its item: replicate r of item X is item "X#r".
    sev_of = {f"{iid}#{r}": sev for iid, sev in severity.items() for r in range(replicates)}
    rows = []
    for name, choice in strategies.items():
        e = score(name, {f"{iid}#{r}": lvl for iid, lvl in choice.items() for r in range(replicates)},
                  outcome, sev_of, loss)
        for sev, s in e["by_severity"].items():
            s["levels"] = dict(sorted(collections.Counter(lvl for iid, lvl in choice.items() if severity[iid] == sev).items()))
        if args.standin:
            totals = [score(name, {f"{iid}#{r}": lvl for iid, lvl in choice.items()}, outcome, sev_of, loss)["total_loss"]
                      for r in range(replicates)]
            e["total_loss_per_replicate"] = {"mean": statistics.fmean(totals),
                                             "sd": statistics.stdev(totals) if len(totals) > 1 else 0.0,
                                             "min": min(totals), "max": max(totals), "values": totals}
        report["strategies"][name] = e
        cells = []
        for sev in SEVERITIES:
            s = e["by_severity"].get(sev)
            cells.append(f"{s['correct']}/{s['n']} [{s['ci95'][0]:.2f}, {s['ci95'][1]:.2f}]" if s else "-")
        per = e["by_severity"]
        spend = " / ".join(f"{per[s]['mean_cost']:.4f}" if s in per else "-" for s in SEVERITIES)
        t = e.get("total_loss_per_replicate")
        rows.append([name, *cells, round(e["mean_cost"], 5), spend,
                     f"{t['mean']:.1f} ± {t['sd']:.1f}" if t else round(e["total_loss"], 3)])
    say(f"\nevaluation half: {len(held)} items ({len(keep - calib_groups)} groups x 3 framings); loss of a wrong answer "
        + ", ".join(f"{k} {v:g}" for k, v in loss.items()))
    if args.standin:
        say(f"{replicates} replicates pooled: each cell counts {replicates} draws per item (the intervals are over "
            f"the draws, for these {len(keep - calib_groups)} questions); total loss per replicate, mean ± sd")
    say(table(rows, ["plan", "low right [95% CI]", "medium", "high", "mean cost", "mean cost low/med/high",
                     "total loss (per replicate)" if args.standin else "total loss"]))
    el = report["strategies"].get("expected loss")
    if el:
        say("\nexpected loss's levels by framing: " + "; ".join(
            f"{sev} {' '.join(f'{k}:{v}' for k, v in s['levels'].items())}" for sev, s in el["by_severity"].items()))
        for sev, w in why.items():
            say(f"  the planner on {w['item']} ({sev}): " + ", ".join(
                f"{ch['level']} {ch['expected_cost']:.3f} + P(wrong) {ch['p_wrong']:.2f} -> {ch['expected_total']:.3f}"
                for ch in w["choices"][:3]))
        fixed = {n: e for n, e in report["strategies"].items() if n.startswith("always ")}
        best = max(fixed, key=lambda n: (fixed[n]["by_severity"].get("high", {}).get("accuracy", 0), -fixed[n]["mean_cost"]))
        b, h = fixed[best], el["by_severity"].get("high")
        lowest = min(report["strategies"], key=lambda n: report["strategies"][n]["total_loss"])
        if h and "high" in b["by_severity"]:
            bh = b["by_severity"]["high"]
            say(f"best fixed plan on high stakes: {best} ({bh['correct']}/{bh['n']}, CI {bh['ci95'][0]:.2f}-"
                f"{bh['ci95'][1]:.2f}, mean cost {b['mean_cost']:.4f}); expected loss: {h['correct']}/{h['n']} at mean "
                f"cost {el['mean_cost']:.4f} ({el['mean_cost'] / b['mean_cost']:.2f}x); lowest total loss: {lowest}")
        if "low" in el["by_severity"] and h:
            say(f"expected loss spends {h['mean_cost']:.4f} per high-stakes item vs {el['by_severity']['low']['mean_cost']:.4f} "
                "per low-stakes item of the same questions")
        if h and "high" in b["by_severity"] and "low" in el["by_severity"]:
            bh = b["by_severity"]["high"]
            aims = {"high-stakes accuracy within the best fixed plan's 95% interval": h["accuracy"] >= bh["ci95"][0],
                    "at <= 50% of that plan's mean cost": el["mean_cost"] <= 0.5 * b["mean_cost"],
                    "lowest total loss of all plans": lowest == "expected loss",
                    "spends more per high-stakes item than per low-stakes item":
                        h["mean_cost"] > el["by_severity"]["low"]["mean_cost"]}
            report["aims"] = aims
            say("aims: " + "; ".join(f"{k}: {'met' if v else 'NOT met'}" for k, v in aims.items()))
    if args.standin:
        say(standin.ENGINE)
    return _write(args.out, lines, report)


def _write(out_arg: str, lines: list[str], report: dict[str, Any]) -> int:
    out = pathlib.Path(out_arg)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    out.with_suffix(".txt").write_text("\n".join(lines) + "\n")
    print(f"wrote {out} and {out.with_suffix('.txt')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
