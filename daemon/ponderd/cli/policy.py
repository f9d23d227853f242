"""`ponder policy check` (a local file), `ponder policy simulate` and `ponder calibrate` (they talk to a running daemon;
their logic lives in planning/simulate.py and planning/calibrate.py, imported when run)."""


from __future__ import annotations

import argparse
import os
import pathlib
import sys
from typing import Any, Callable

from ponder.cli_format import dump_json


def policy_check(args: argparse.Namespace) -> int:
    from ponderd.errors import PolicyError
    from ponderd.planning.planner import fit_warnings
    from ponderd.planning.policy_file import load_policy
    from ponderd.settings import Settings, SettingsError, load_settings

    models = None
    settings = Settings()  # without a config: the daemon's defaults (n_ctx, n_seq_max), for the fit warnings
    if args.config or os.environ.get("PONDER_CONFIG"):
        # The daemon's config names the served models: check the levels' `model` against them.
        try:
            settings = load_settings(pathlib.Path(args.config) if args.config else None)
        except SettingsError as exc:
            print(exc, file=sys.stderr)
            return 1
        models = list(settings.served_models)
    unknown: list[str] = []

    def identity() -> Any:
        found, why = _model_identity(settings)
        unknown.append(why)
        return found

    try:
        policy = load_policy(pathlib.Path(args.file), models, identity)
    except PolicyError as exc:
        if args.json:
            dump_json({"file": args.file, "ok": False, "version": None, "levels": [], "problems": exc.problems,
                       "warnings": []})
        for problem in exc.problems:
            print(f"{exc.path}: {problem}", file=sys.stderr)
        return 1
    # A level the model's context cannot hold as configured still runs, fitted: a warning naming what runs.
    warnings = fit_warnings(policy, lambda name: _limits(settings, name))
    if policy.profile_note:
        # Expected-loss mode with a profile of another model (or of none): the daemon would plan by the routing table.
        warnings.insert(0, policy.profile_note)
    elif unknown and unknown[0]:
        warnings.insert(0, f"cannot check that the profile was measured on the served model: {unknown[0]}")
    if args.json:
        dump_json({
            "file": args.file, "ok": True, "version": policy.version, "levels": [lvl.name for lvl in policy.levels],
            "problems": [], "warnings": warnings,
        })
        return 0
    levels = ", ".join(lvl.name for lvl in policy.levels)
    print(f"{args.file}: ok (version {policy.version}; levels {levels}; {len(policy.tenants)} tenant table(s); "
          f"{len(policy.overrides)} override(s))")
    for warning in warnings:
        print(f"{args.file}: warning: {warning}", file=sys.stderr)
    return 0


def _model_identity(settings: Any) -> tuple[Any, str]:
    """The primary model file's name and digest as the daemon would load it, or why it cannot be read."""
    from ponderd.engine.model_file import model_identity
    from ponderd.errors import FailedPrecondition

    try:
        return model_identity(settings.model.path), ""
    except FailedPrecondition as exc:
        return None, str(exc)
    except OSError as exc:
        return None, f"cannot read the model file ({exc.strerror})"


def _limits(settings: Any, name: str) -> Any:
    """A served model's limits as its settings give them (before it loads: no forced tokens); None: not served."""
    from ponderd.engine import EngineLimits

    model = settings.served_models.get(name or settings.model.name)
    return None if model is None else EngineLimits(model.n_ctx, model.n_ctx, model.n_seq_max)


def calibrate(args: argparse.Namespace) -> int:
    from ponderd.planning.calibrate import main

    return main(args)


def policy_simulate(args: argparse.Namespace) -> int:
    from ponderd.planning.simulate import main

    return main(args)


def add_commands(sub: Any, connection: Callable[[argparse.ArgumentParser], None]) -> None:
    policy = sub.add_parser("policy", help="check a policy file; replay logged requests under a candidate",
                            description="Policy files.")
    pol = policy.add_subparsers(dest="action", metavar="ACTION", required=True)
    p = pol.add_parser("check", help="validate a policy file without a daemon", description="Validate a policy file; print every problem.")
    p.add_argument("file")
    p.add_argument("--config", help="the daemon's config file, to check the levels' models against it (default: $PONDER_CONFIG)")
    p.add_argument("--json", action="store_true", help="print one JSON object (problems too)")
    p.set_defaults(handler=policy_check)

    p = pol.add_parser(
        "simulate", help="replay logged requests under a candidate policy: projected spend and accuracy",
        description="Plan every logged request in a window again under a candidate policy, and compare its spend "
        "(and, with a profile, its accuracy) with what happened. Figures marked ~ are estimates. Needs an admin key.",
    )
    p.add_argument("candidate", metavar="CANDIDATE.toml", help="the policy file to try")
    p.add_argument("--since", default="7d", help="the window's start: 7d, 24h, yesterday or an ISO date (default 7d)")
    p.add_argument("--profile", help="accuracy profile from `ponder calibrate` (accuracy columns and token estimates)")
    p.add_argument("--tenant", help="only this tenant's requests (default: all)")
    p.add_argument("--limit", type=int, default=100000, help="replay at most this many records, newest first (default 100000)")
    p.add_argument("--config", help="the daemon's config file: its model's n_ctx and n_seq_max and its timezone "
                   "(default: $PONDER_CONFIG, else the daemon's defaults)")
    p.add_argument("--n-ctx", type=int, default=None, help="model context to plan against (default: the config's model.n_ctx)")
    p.add_argument("--no-budgets", action="store_true",
                   help="do not replay the tenants' budgets: every request gets the candidate's first plan")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--timeout", type=float, default=None, help="seconds to wait for the daemon")
    connection(p)
    p.set_defaults(handler=policy_simulate)

    p = sub.add_parser(
        "calibrate", help="measure each level's accuracy and cost on a verifiable dataset: the accuracy profile",
        description="Ask a running daemon every item of DATA.jsonl at every level (the level hint), check each "
        "voted answer here against the item's checker, and write the accuracy profile (OUT), the results "
        "(OUT.results.jsonl, resumable), a table and an accuracy-vs-cost plot. DATA lines: "
        '{"id": "q1", "text": "...", "check": {"number": 42}, "severity": "high", "needs_reasoning": true}; '
        'checks: {"number": N}, {"regex": "..."}, {"choice": "B"}, {"any_of": ["..."]}.',
    )
    p.add_argument("data", metavar="DATA.jsonl", help="the verifiable dataset")
    p.add_argument("--out", default="profile.json", help="the profile to write (default profile.json)")
    p.add_argument("--levels", help="levels to measure, comma-separated (default: every level the token's tenant may use, "
                   "read from --policy)")
    p.add_argument("--policy", help="the daemon's policy file, for the default levels (default: the file the daemon "
                   "on this host reads: PONDER_POLICY_FILE or its config); its version must match the daemon's")
    p.add_argument("--model", metavar="FILE.gguf", help="the GGUF file the daemon serves, named with its SHA-256 in the "
                   "profile (default: the model of the daemon's config on this host, else the embedded model)")
    p.add_argument("--seed", type=int, default=0, help="base of the per-item seeds (default 0)")
    p.add_argument("--concurrency", type=int, default=1, help="requests in flight at once (default 1)")
    p.add_argument("--restart", action="store_true", help="discard earlier results in OUT.results.jsonl")
    p.add_argument("--no-answer-format", dest="format_hint", action="store_false",
                   help="vote by each level's answer format, not the checker's (number, choice, phrase)")
    p.add_argument("--slices", action="store_true", help="show accuracy by severity and reasoning under each level")
    p.add_argument("--plot", help="the accuracy-vs-cost PNG to write (default OUT with .png)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--timeout", type=float, default=None, help="seconds to wait for each request")
    connection(p)
    p.set_defaults(handler=calibrate)
