"""`ponder policy simulate`: replanning logged requests under a candidate policy, and the --since parser."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from conftest import SMALL_POLICY
from ponder.dates import parse_when as parse_since
from ponderd.engine import EngineLimits
from ponderd.ledger.types import to_credits
from ponderd.planning.policy_file import load_policy
from ponderd.planning.profile import Profile, wilson
from ponderd.planning.simulate import Record, project_cost, simulate

PONDER = str(Path(sys.executable).parent / "ponder")
NOW = datetime(2026, 11, 29, 17, 30, tzinfo=timezone.utc)
LIMITS = EngineLimits(n_ctx=4096, n_ctx_seq=4096, n_seq_max=64)


@pytest.mark.parametrize(
    "text, when",
    [
        ("7d", NOW - timedelta(days=7)),
        ("24h", NOW - timedelta(hours=24)),
        ("30m", NOW - timedelta(minutes=30)),
        ("2w", NOW - timedelta(weeks=2)),
        ("today", datetime(2026, 11, 29, tzinfo=timezone.utc)),
        ("yesterday", datetime(2026, 11, 28, tzinfo=timezone.utc)),
        ("2026-11-01", datetime(2026, 11, 1, tzinfo=timezone.utc)),
        ("2026-11-01T09:00+01:00", datetime(2026, 11, 1, 8, tzinfo=timezone.utc)),
    ],
)
def test_since_reads_spans_days_and_iso_dates(text, when):
    assert parse_since(text, NOW) == when


def test_since_says_which_forms_work():
    with pytest.raises(ValueError, match="'last week' is not a time: use ISO 8601"):
        parse_since("last week", NOW)


def _profile(**acc: float) -> Profile:
    levels = {}
    for name, (accuracy, thinking, answer, samples) in acc.items():
        n = 20
        correct = round(accuracy * n)
        levels[name] = {"model": "default", "n": n, "correct": correct, "accuracy": correct / n,
                        "ci95": list(wilson(correct, n)), "mean_cost": 0.01, "mean_prompt_tokens": 10.0,
                        "mean_thinking_tokens": thinking * samples, "mean_answer_tokens": answer * samples,
                        "mean_samples": float(samples), "p50_latency_s": 0.1, "p90_latency_s": 0.2, "slices": {}}
    return Profile.from_json({"format": "ponder-accuracy-profile/1", "created_at": "2026-11-29T17:00:00Z",
                              "policy_version": "test-small-1", "dataset": {"path": "d", "sha256": "x", "items": 20},
                              "levels": levels})


def _record(level="direct", cap=0, samples=1, prompt=20, thinking=0, answer=10, cost=0.04, severity="low", nr=False):
    return Record("local", severity, nr, level, cap, samples, prompt, thinking, answer, 0, cost, "ok")


def test_projected_cost_is_exact_for_the_same_plan_and_estimated_otherwise():
    policy = load_policy(SMALL_POLICY)  # prices 1 / 2 / 2 per 1,000 tokens; low/direct routes to direct
    same = _record()
    assert project_cost(same, _plan(policy, same), policy, None) == (pytest.approx(0.04), "exact")
    # Routed to careful (3 samples, thinking 24, answer 16): the profile's per-sample tokens, within the caps.
    moved = _record(severity="medium", nr=True)
    plan = _plan(policy, moved)
    assert (plan.level, plan.samples) == ("careful", 3)
    cost, how = project_cost(moved, plan, policy, _profile(careful=(0.5, 10.0, 30.0, 3)))
    assert how == "profile"
    # thinking 3 x 10, answer 3 x min(30, 16) at 2 each; prompt and forced at 1.
    assert cost == pytest.approx(to_credits(policy.prices.micros(20 + plan.forced_tokens, 30, 48)))
    # No profile entry for the level: the plan's worst case.
    assert project_cost(moved, plan, policy, None) == (to_credits(plan.worst_case_micros), "worst_case")


def _plan(policy, record):
    from ponderd.planning.simulate import plan_for

    return plan_for(record, policy, LIMITS)


def test_simulate_groups_by_tenant_and_severity_with_accuracy_and_refusals():
    policy = load_policy(SMALL_POLICY)
    records = [_record(), _record(), _record(level="careful", cap=24, samples=3, severity="medium", nr=True,
                                             thinking=60, answer=40, cost=0.2),
               _record(prompt=5000)]  # longer than the context: the candidate cannot plan it
    groups = simulate(records, policy, LIMITS, _profile(direct=(0.4, 0, 10, 1), careful=(0.8, 20, 12, 3)))
    low, medium = groups
    assert (low.tenant, low.severity, low.requests, medium.severity, medium.requests) == ("local", "low", 3, "medium", 1)
    assert low.actual == pytest.approx(0.12) and low.projected == pytest.approx(0.08) and low.estimated == 0
    assert sum(low.refused.values()) == 1 and "shorten the prompt" in next(iter(low.refused))
    assert low.to_json()["accuracy_now"] == pytest.approx(0.4)
    assert medium.levels == {"careful": 1} and medium.to_json()["accuracy_projected"] == pytest.approx(0.8)


# --- against the real daemon -------------------------------------------------------------------

EVERYTHING_THOROUGH = SMALL_POLICY.read_text().replace('version = "test-small-1"', 'version = "all-thorough"')
EVERYTHING_THOROUGH = EVERYTHING_THOROUGH.split("[routing]")[0] + """[routing]
low = { direct = "thorough", reasoning = "thorough", floor = "direct" }
medium = { direct = "thorough", reasoning = "thorough", floor = "direct" }
high = { direct = "thorough", reasoning = "thorough", floor = "brief" }
""" + "[defaults]" + EVERYTHING_THOROUGH.split("[defaults]")[1]


def _simulate(daemon, env, *args):
    return subprocess.run([PONDER, "policy", "simulate", *args, "--address", daemon.address, "--token", daemon.token("admin")],
                          env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.model
def test_simulate_projects_more_spend_when_everything_goes_to_a_dearer_level(daemon, tmp_path, cli_env):
    with daemon.client() as c:
        asked = [c.ask(q, level="direct", seed=1) for q in ("What is 2 + 3?", "Name a colour.")]
    with daemon.admin() as admin:
        token = admin.create_tenant("acme", 100).token
    with daemon.client(token) as c:
        asked.append(c.ask("Say hello.", seed=2))
    candidate = tmp_path / "candidate.toml"
    candidate.write_text(EVERYTHING_THOROUGH)
    profile = tmp_path / "profile.json"
    _profile(direct=(0.3, 0, 8, 1), thorough=(0.8, 30, 12, 5)).save(profile)

    run = _simulate(daemon, cli_env, str(candidate), "--since", "1h", "--json", "--profile", str(profile))
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    groups = report["groups"]
    assert {g["tenant"] for g in groups} == {"local", "acme"}
    assert sum(g["requests"] for g in groups) == 3
    assert sum(g["actual_spend"] for g in groups) == pytest.approx(sum(r.cost for r in asked), abs=1e-5)
    for g in groups:
        assert g["projected_levels"] == {"thorough": g["requests"]}
        assert g["projected_spend"] > g["actual_spend"]
        assert g["projected_from_profile"] == g["requests"]
        assert g["accuracy_projected"] == pytest.approx(0.8)
    assert any(g["accuracy_now"] == pytest.approx(0.3) for g in groups if g["tenant"] == "local")

    text = _simulate(daemon, cli_env, str(candidate), "--since", "1h")
    assert text.returncode == 0, text.stderr
    for g in groups:
        assert any([cell.strip() for cell in line.split("│")[1:3]] == [g["tenant"], g["severity"]]
                   for line in text.stdout.splitlines() if "│" in line), text.stdout
    assert "~ estimated: 0 request(s) from the profile" in " ".join(text.stdout.split())
    assert "pass --profile" in text.stdout

    bad = tmp_path / "bad.toml"
    bad.write_text(EVERYTHING_THOROUGH.replace('direct = "thorough", reasoning', 'direct = "thorogh", reasoning', 1)
                   .replace("answer_tokens = 16", "answer_tokns = 16", 1))
    refused = _simulate(daemon, cli_env, str(bad))
    assert refused.returncode == 1 and refused.stdout == ""
    problems = refused.stderr.strip().splitlines()
    assert any("unknown field 'answer_tokns' (did you mean 'answer_tokens'?)" in p for p in problems)
    assert any("routing.low.direct: 'thorogh' is not one of" in p for p in problems)
    assert all(p.startswith(f"{bad}: ") for p in problems)

    since = _simulate(daemon, cli_env, str(candidate), "--since", "last tuesday")
    assert since.returncode == 1 and since.stderr.startswith("ponder: --since: 'last tuesday' is not a time")
