"""Expected-loss planning and model routing, pure: the planner with hand-made profiles and served models."""

from __future__ import annotations

import json
import pathlib

import pytest

from conftest import REPO
from ponderd.engine import EngineLimits
from ponderd.errors import PolicyError, Unavailable
from ponderd.planning.accuracy import Learned
from ponderd.planning.assessment import Assessment
from ponderd.planning.expected_loss import choose, slice_weights
from ponderd.planning.planner import Hints, Served, plan_candidates
from ponderd.planning.policy_file import load_policy
from ponderd.planning.profile import Profile
from ponderd.risk.score import RiskScore

MODELS = REPO / "tests" / "policies" / "models"
NAMES = ["default", "second"]
ROUTED = load_policy(MODELS / "two_models.toml", NAMES)
EL = load_policy(MODELS / "expected_loss.toml", NAMES)
LIMITS = EngineLimits(n_ctx=4096, n_ctx_seq=4096, n_seq_max=8, forced_open=4, forced_close=5, forced_skip=0)
UP = {"second": Served(LIMITS, 22)}
DOWN = {"second": Served(LIMITS, 0, "model 'second' failed to load: no such file")}


def assess(severity: str, p: float = 0.9, reasoning: bool = False, adjusted: str | None = None) -> Assessment:
    rest = (1 - p) / 2
    probs = {s: (p if s == severity else rest) for s in ("low", "medium", "high")}
    score = RiskScore(severity, reasoning, probs, 0.9 if reasoning else 0.1, "test")
    return Assessment(adjusted or severity, reasoning, score)


def plan(a: Assessment, policy=EL, others=UP, hints: Hints = Hints(), accuracy=None):
    rules = policy.rules_for("local")
    return plan_candidates(a, policy, rules, hints, 20, LIMITS, primary="default", others=others, accuracy=accuracy)


def test_a_large_loss_buys_the_heavier_level_and_a_small_one_the_cheapest():
    high = plan(assess("high"))
    low = plan(assess("low", p=0.99))
    assert high[0].level == "deep" and high[0].model == "second"
    assert low[0].level == "direct" and low[0].model == "default"
    # The reasons show the chosen level's expected total and the next best.
    assert any(r.startswith("expected loss: deep") for r in high[0].reasons)
    assert any(r.startswith("next best expected loss:") for r in high[0].reasons)
    assert high[0].expected_loss is not None and high[0].expected_loss < 10.0


def test_expected_totals_are_cost_plus_p_wrong_times_loss():
    a = assess("high", p=1.0)
    plans = plan_candidates(a, EL, EL.rules_for("local"), Hints(level="deep"), 20, LIMITS, primary="default", others=UP)
    [deep] = choose(a, EL, EL.profile, plans)
    assert deep.p_wrong == pytest.approx(0.1)
    assert deep.risk == pytest.approx(0.1 * 10.0)
    assert deep.total == pytest.approx(deep.cost + 1.0)
    # The profile's mean cost, corrected for this prompt: 2 tokens longer at the second model's prompt price.
    assert deep.cost == pytest.approx(0.25 + 2 * 2.0 / 1000)


def test_a_budget_that_cannot_cover_the_choice_degrades_by_expected_total():
    plans = plan(assess("high"))
    assert [p.level for p in plans] == ["deep", "vote", "direct"]
    assert all(p.worst_case_micros < plans[0].worst_case_micros for p in plans[1:])
    assert "budget: degraded from deep to vote, the next lowest expected total" in plans[1].reasons


def test_an_adjusted_severity_moves_the_probability_below_it_onto_it():
    a = assess("low", p=0.9, adjusted="medium")
    w = slice_weights(a)
    assert sum(w.values()) == pytest.approx(1.0)
    assert w[("low", False)] + w[("low", True)] == 0.0
    assert w[("medium", False)] + w[("medium", True)] == pytest.approx(0.95)
    assert w[("high", False)] + w[("high", True)] == pytest.approx(0.05)
    a = assess("low", p=0.9, adjusted="high")
    assert plan(a)[0].level == "deep"


def test_without_a_profile_or_with_unmeasured_levels_the_routing_table_decides():
    raw = json.loads((MODELS / "profile.json").read_text())
    raw["levels"] = {"elsewhere": raw["levels"]["direct"]}
    no_profile = Profile.from_json(raw)
    plans = plan(assess("high"), accuracy=no_profile)
    assert plans[0].level == "deep"  # routing: high -> deep
    assert any("no allowed level is in the accuracy profile" in r for r in plans[0].reasons)
    assert any(r.startswith("routing:") for r in plans[0].reasons)


def test_a_level_hint_is_still_exact_in_expected_loss_mode():
    [only] = plan(assess("high"), hints=Hints(level="direct"))
    assert only.level == "direct" and only.expected_loss is None


def test_learned_outcomes_move_the_estimate_with_the_profile_worth_prior_weight():
    bad_news = Learned(EL.profile, {("deep", "high/direct"): (60, 0)}, prior_weight=20)
    est = bad_news.estimate("deep", "high", False)
    # Profile slice estimate 0.9 (no slice data), worth 20 outcomes, against 60 wrong answers.
    assert est.accuracy == pytest.approx((20 * 0.9 + 0) / 80)
    # A handful cannot swing it.
    few = Learned(EL.profile, {("deep", "high/direct"): (2, 0)}, prior_weight=20).estimate("deep", "high", False)
    assert few.accuracy == pytest.approx(18 / 22)
    # With deep now mostly wrong, the planner stops paying for it.
    assert plan(assess("high"), accuracy=bad_news)[0].level != "deep"


def test_each_plan_says_which_model_runs_it_and_prices_it_at_that_models_prices():
    plans = plan_candidates(assess("high"), ROUTED, ROUTED.rules_for("local"), Hints(), 20, LIMITS,
                            primary="default", others=UP)
    deep = plans[0]
    assert deep.level == "deep" and deep.model == "second"
    assert "level deep runs on model second" in deep.reasons
    # second: prompt 2.0, thinking 4.0, answer 4.0 per 1,000; prompt 22 tokens + 4 open + 3 x 5 close forced.
    assert deep.worst_case_micros == (22 + 4 + 15) * 2000 + 3 * 16 * 4000 + 3 * 8 * 4000


def test_a_model_that_is_down_takes_only_its_levels_out_and_the_plan_says_so():
    plans = plan_candidates(assess("high"), ROUTED, ROUTED.rules_for("local"), Hints(), 20, LIMITS,
                            primary="default", others=DOWN)
    assert [p.level for p in plans] == ["vote", "direct"]
    assert any("level deep skipped: model 'second' failed to load" in r for r in plans[0].reasons)


def test_asking_for_a_level_whose_model_is_down_is_unavailable():
    with pytest.raises(Unavailable, match="level deep cannot run now: model 'second' failed to load"):
        plan_candidates(assess("low"), ROUTED, ROUTED.rules_for("local"), Hints(level="deep"), 20, LIMITS,
                        primary="default", others=DOWN)


def test_with_everything_at_or_below_the_route_down_it_steps_up_or_refuses(tmp_path: pathlib.Path):
    # Route low questions to deep with floor deep: nothing below it may run.
    text = (MODELS / "two_models.toml").read_text().replace(
        'low = { direct = "direct", reasoning = "vote", floor = "direct" }',
        'low = { direct = "deep", reasoning = "deep", floor = "deep" }',
    )
    (tmp_path / "p.toml").write_text(text)
    policy = load_policy(tmp_path / "p.toml", NAMES)
    with pytest.raises(Unavailable, match="no level this request may use can run now"):
        plan_candidates(assess("low"), policy, policy.rules_for("local"), Hints(), 20, LIMITS, primary="default", others=DOWN)


@pytest.mark.parametrize(
    "change, problem",
    [
        ('model = "second"', 'levels.deep.model: no served model \'secnd\' (did you mean \'second\'?); the daemon serves default, second'),
        ("[model_prices.second]", "model_prices.default: 'default' is the primary model, whose prices are [prices]"),
        ('mode = "expected_loss"', "planning.mode: 'expected_los' is not one of routing, expected_loss"),
        ('profile = "profile.json"', "planning.profile: "),
    ],
)
def test_bad_model_and_planning_settings_are_named(tmp_path: pathlib.Path, change: str, problem: str):
    broken = {
        'model = "second"': 'model = "secnd"',
        "[model_prices.second]": "[model_prices.default]",
        'mode = "expected_loss"': 'mode = "expected_los"',
        'profile = "profile.json"': 'profile = "missing.json"',
    }[change]
    (tmp_path / "p.toml").write_text((MODELS / "expected_loss.toml").read_text().replace(change, broken))
    (tmp_path / "profile.json").write_text((MODELS / "profile.json").read_text())
    with pytest.raises(PolicyError) as err:
        load_policy(tmp_path / "p.toml", NAMES)
    assert any(p.startswith(problem) for p in err.value.problems), err.value.problems


def test_expected_loss_mode_needs_losses_and_a_profile(tmp_path: pathlib.Path):
    (tmp_path / "p.toml").write_text(
        (MODELS / "two_models.toml").read_text().replace("[routing]", '[planning]\nmode = "expected_loss"\n\n[routing]')
    )
    with pytest.raises(PolicyError) as err:
        load_policy(tmp_path / "p.toml", NAMES)
    assert "planning.loss: missing field 'high'" in err.value.problems
    assert "planning: mode 'expected_loss' needs profile = \"PATH\" (write one with `ponder calibrate`)" in err.value.problems
