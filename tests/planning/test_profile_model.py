"""Profiles name their model: a profile measured on another model file (or naming none) is set aside, said once.

Unit tests load the policy with a model identity passed in; the last test runs the real
`ponder policy check` against the embedded model's file.
"""

from __future__ import annotations

import json
import logging
import pathlib
import shutil
import subprocess
import sys

from conftest import REPO
from ponderd.engine import EngineLimits
from ponderd.engine.model_file import ModelIdentity, file_sha256, model_identity
from ponderd.planning.assessment import Assessment
from ponderd.planning.planner import Hints, Served, plan_candidates
from ponderd.planning.policy_file import PolicyHolder, load_policy
from ponderd.planning.profile import Profile
from ponderd.risk.score import RiskScore

MODELS = REPO / "tests" / "policies" / "models"
NAMES = ["default", "second"]
LIMITS = EngineLimits(n_ctx=4096, n_ctx_seq=4096, n_seq_max=8, forced_open=4, forced_close=5, forced_skip=0)
SERVED = ModelIdentity("served.gguf", "a" * 64)
OTHER = ModelIdentity("other.gguf", "b" * 64)


def policy_dir(tmp_path: pathlib.Path, model: ModelIdentity | None) -> pathlib.Path:
    shutil.copy(MODELS / "expected_loss.toml", tmp_path / "expected_loss.toml")
    raw = json.loads((MODELS / "profile.json").read_text())
    raw.pop("model", None)
    if model is not None:
        raw["model"] = {"file": model.file, "sha256": model.sha256}
    (tmp_path / "profile.json").write_text(json.dumps(raw))
    return tmp_path / "expected_loss.toml"


def high_plan(policy):
    score = RiskScore("high", False, {"low": 0.05, "medium": 0.05, "high": 0.9}, 0.1, "test")
    return plan_candidates(Assessment("high", False, score), policy, policy.rules_for("local"), Hints(), 20, LIMITS,
                           primary="default", others={"second": Served(LIMITS, 22)})[0]


def test_a_profile_of_the_served_model_plans_by_expected_loss(tmp_path: pathlib.Path):
    policy = load_policy(policy_dir(tmp_path, SERVED), NAMES, SERVED)
    assert policy.profile is not None and policy.profile_note == ""
    assert policy.profile.model_file == "served.gguf" and policy.profile.model_sha256 == "a" * 64
    chosen = high_plan(policy)
    assert chosen.expected_loss is not None and chosen.reasons[0].startswith("expected loss: ")


def test_a_profile_of_another_model_falls_back_to_the_routing_table_and_says_so(tmp_path: pathlib.Path):
    policy = load_policy(policy_dir(tmp_path, OTHER), NAMES, SERVED)
    assert policy.profile is None
    assert policy.profile_note.startswith("no profile for model served.gguf: the profile was measured on other.gguf")
    assert policy.profile_note.endswith("run `ponder calibrate`; planning by the routing table")
    chosen = high_plan(policy)
    assert chosen.expected_loss is None and chosen.level == "deep"  # the routing table's high/direct
    assert policy.profile_note in chosen.reasons


def test_an_old_profile_without_a_model_is_set_aside_with_its_own_wording(tmp_path: pathlib.Path):
    policy = load_policy(policy_dir(tmp_path, None), NAMES, SERVED)
    assert policy.profile is None
    assert policy.profile_note == ("no profile for model served.gguf: the profile names no model (written before "
                                   "profiles did); run `ponder calibrate`; planning by the routing table")


def test_without_a_model_to_check_against_the_profile_is_used(tmp_path: pathlib.Path):
    # A test daemon with an engine passed in serves no file: nothing to compare.
    policy = load_policy(policy_dir(tmp_path, None), NAMES)
    assert policy.profile is not None and policy.profile_note == ""


def test_the_daemon_logs_one_line_at_start_and_on_reload(tmp_path: pathlib.Path, caplog):
    path = policy_dir(tmp_path, OTHER)
    with caplog.at_level(logging.WARNING, logger="ponder.policy"):
        holder = PolicyHolder(path, NAMES, lambda: SERVED)
    lines = [r.getMessage() for r in caplog.records if "no profile for model" in r.getMessage()]
    assert lines == [f"{path}: {holder.current().profile_note}"]
    policy_dir(tmp_path, SERVED)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="ponder.policy"):
        assert holder.reload().profile is not None
    assert not [r for r in caplog.records if "no profile for model" in r.getMessage()]


def test_a_profile_round_trips_its_model_and_refuses_a_malformed_digest(tmp_path: pathlib.Path):
    raw = json.loads((MODELS / "profile.json").read_text())
    raw["model"] = {"file": "x.gguf", "sha256": "c" * 64}
    p = Profile.from_json(raw)
    assert Profile.from_json(p.to_json()) == p and p.to_json()["model"] == raw["model"]
    raw["model"]["sha256"] = "not-hex"
    try:
        Profile.from_json(raw, where="p.json")
    except ValueError as exc:
        assert "p.json: model.sha256: must be the model file's SHA-256 in 64 lowercase hex digits" in str(exc)
    else:
        raise AssertionError("a malformed digest loaded")


def test_file_digest_is_the_sha256_of_the_bytes(tmp_path: pathlib.Path):
    f = tmp_path / "m.gguf"
    f.write_bytes(b"GGUF" * 1000)
    import hashlib

    assert file_sha256(f) == hashlib.sha256(b"GGUF" * 1000).hexdigest()
    assert model_identity(f) == ModelIdentity("m.gguf", file_sha256(f))


def test_policy_check_names_the_model_it_has_no_profile_for(tmp_path: pathlib.Path, cli_env):
    """The real CLI against the embedded model's file: another model's profile, then one of its own."""
    ponder = str(pathlib.Path(sys.executable).parent / "ponder")
    path = policy_dir(tmp_path, OTHER)
    served = model_identity(None)
    r = subprocess.run([ponder, "policy", "check", str(path)], env=cli_env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    [line] = [x for x in r.stderr.splitlines() if "no profile for model" in x]
    assert line.startswith(f"{path}: warning: no profile for model {served.file}: the profile was measured on other.gguf")
    assert line.endswith("run `ponder calibrate`; planning by the routing table")
    policy_dir(tmp_path, served)
    r = subprocess.run([ponder, "policy", "check", "--json", str(path)], env=cli_env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0 and json.loads(r.stdout)["warnings"] == []


def test_the_default_policys_vote_levels_are_what_expected_loss_buys_on_the_embedded_models_numbers(tmp_path):
    """policies/default.toml in expected_loss mode, on hand-made numbers in the shape measured on the embedded model
    (votes without thinking beat a direct answer, thinking levels do worse; bench/results/decisions.json: vote6 0.48,
    direct 0.27): high stakes buy vote5, low stakes direct."""
    # The default policy plans by expected loss already: here with a profile of the test's own numbers.
    text = (REPO / "policies" / "default.toml").read_text().replace(
        'profile = "package:smollm2-135m-instruct.json"', 'profile = "profile.json"', 1)
    assert 'profile = "profile.json"' in text
    (tmp_path / "policy.toml").write_text(text)

    def lvl(accuracy: float, cost: float, samples: int) -> dict:
        return {"model": "default", "n": 100, "correct": round(accuracy * 100), "accuracy": accuracy, "ci95": [0, 1],
                "mean_cost": cost, "mean_prompt_tokens": 20.0, "mean_thinking_tokens": 0.0,
                "mean_answer_tokens": 10.0 * samples, "mean_samples": float(samples), "p50_latency_s": 0.1,
                "p90_latency_s": 0.2, "slices": {}}

    levels = {"direct": lvl(0.55, 0.02, 1), "brief": lvl(0.40, 0.10, 1), "vote3": lvl(0.66, 0.06, 3),
              "vote5": lvl(0.72, 0.10, 5), "careful": lvl(0.35, 0.50, 3), "thorough": lvl(0.35, 1.5, 5)}
    (tmp_path / "profile.json").write_text(json.dumps({
        "format": "ponder-accuracy-profile/1", "created_at": "2026-12-07T00:00:00Z", "policy_version": "default-3",
        "model": {"file": SERVED.file, "sha256": SERVED.sha256},
        "dataset": {"path": "test", "sha256": "", "items": 100}, "levels": levels}))
    policy = load_policy(tmp_path / "policy.toml", None, SERVED)
    rules = policy.rules_for("local")

    def chosen(severity: str) -> str:
        score = RiskScore(severity, False, {s: 1.0 if s == severity else 0.0 for s in ("low", "medium", "high")},
                          0.1, "test")
        return plan_candidates(Assessment(severity, False, score), policy, rules, Hints(), 20, LIMITS)[0].level

    assert [lvl.name for lvl in policy.levels][:4] == ["direct", "brief", "vote3", "vote5"]
    assert policy.level("vote5").vote == "weighted" and policy.level("vote5").thinking_tokens == 0
    assert (chosen("low"), chosen("high")) == ("direct", "vote5")
