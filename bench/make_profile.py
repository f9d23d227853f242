"""Measure the shipped accuracy profile of the embedded model: `make profile`.

    .venv/bin/python bench/make_profile.py [--levels direct,brief,vote3,vote5] [--concurrency 4] [--work DIR]

policies/default.toml plans by expected loss with the profile in
daemon/ponderd/planning/data/ (`profile = "package:NAME"`). This rewrites that file: a daemon on
the embedded SmolLM2-135M under the default policy (its levels, prices and version; planning by the
routing table while measuring, so an old or missing profile does not matter) answers the
calibration half of bench/data/framed.jsonl (the groups bench/framed.py calibrates on: odd numbers)
at each level, with `ponder calibrate`'s code (run_pairs, build_profile). The profile names the model
file's SHA-256, the policy version and the date; tests/planning/test_shipped_profile.py checks that
it matches the embedded model and the default policy.

The levels measured by default are those a shared CPU answers in minutes; a level left out is never
chosen by expected loss (docs/policy.md), only by a level hint or the budget ladder.
"""

from __future__ import annotations

import argparse
import pathlib
import re
import sys
import tempfile

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO / "tests"))

from conftest import DaemonThread, make_settings  # noqa: E402
from ponderd.engine.model_file import model_identity  # noqa: E402
from ponderd.planning.calibrate import build_profile, load_dataset, read_results, run_pairs  # noqa: E402
from ponderd.planning.policy_file import load_policy, profile_file  # noqa: E402

POLICY = REPO / "policies" / "default.toml"
DATA = HERE / "data" / "framed.jsonl"
LEVELS = "direct,brief,vote3,vote5"


def calibration_half(path: pathlib.Path) -> list:
    """The items of the odd-numbered groups (KIND-NN), as bench/framed.py splits them."""
    import json

    items, _ = load_dataset(path)
    group = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            group[str(row["id"])] = str(row.get("group", row["id"]))
    return [i for i in items if int(group[i.id].rsplit("-", 1)[-1]) % 2 == 1]


def routing_copy(text: str) -> str:
    """The default policy planning by its routing table: same version, levels and prices."""
    text = re.sub(r'(?m)^mode = "expected_loss"$', 'mode = "routing"', text, count=1)
    return re.sub(r"(?m)^profile = .*\n", "", text, count=1)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--levels", default=LEVELS, help=f"levels to measure, comma-separated (default {LEVELS})")
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", help="folder for the answers (results.jsonl); a rerun asks only what is not there yet")
    ap.add_argument("--out", help="where to write the profile (default: the file policies/default.toml names)")
    args = ap.parse_args()
    levels = [x for x in args.levels.split(",") if x]
    work = pathlib.Path(args.work) if args.work else pathlib.Path(tempfile.mkdtemp(prefix="ponder-profile-"))
    work.mkdir(parents=True, exist_ok=True)
    policy_path = work / "policy.toml"
    policy_path.write_text(routing_copy(POLICY.read_text(encoding="utf-8")), encoding="utf-8")
    measured_policy = load_policy(policy_path)
    named = re.search(r'(?m)^profile = "([^"]+)"$', POLICY.read_text(encoding="utf-8"))
    if args.out:
        out = pathlib.Path(args.out)
    elif named:
        out = profile_file(POLICY, named.group(1))
    else:
        print(f"{POLICY} names no [planning] profile; pass --out", file=sys.stderr)
        return 1
    _, sha = load_dataset(DATA)
    items = calibration_half(DATA)
    settings = make_settings(work / "state", policy_path, model={"name": "default", "n_ctx": 4096, "n_seq_max": 8},
                             accuracy={"update_schedule": ""}, risk={"retrain_schedule": ""})
    results = work / "results.jsonl"
    d = DaemonThread(settings).start()
    try:
        with d.client() as c:
            done = {(r["id"], r["level"]) for r in read_results(results)}
            pairs = [(i, lvl) for i in items for lvl in levels if (i.id, lvl) not in done]
            print(f"measuring {len(items)} items x {len(levels)} levels ({len(pairs)} to ask) under "
                  f"{measured_policy.version} ...", flush=True)
            run_pairs(c, pairs, seed=args.seed, sha=sha, out=results, concurrency=args.concurrency)
    finally:
        d.stop()
    ids = {i.id for i in items}
    rows = [r for r in read_results(results) if r["id"] in ids and r["level"] in levels]
    profile = build_profile(rows, levels, measured_policy.version,
                            {"path": "bench/data/framed.jsonl (calibration half: odd groups)", "sha256": sha,
                             "items": len(items)}, model_identity(None))
    profile.save(out)
    out.chmod(0o644)
    for name, lvl in profile.levels.items():
        print(f"{name:>10}  {lvl.correct}/{lvl.n}  accuracy {lvl.accuracy:.3f}  [{lvl.ci95[0]:.2f}, {lvl.ci95[1]:.2f}]  "
              f"mean cost {lvl.mean_cost:.4f}")
    print(f"wrote {out} ({profile.policy_version}, model {profile.model_file} {profile.model_sha256[:12]}…, "
          f"{profile.created_at})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
