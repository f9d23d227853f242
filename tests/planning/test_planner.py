"""Planning is a pure function: routing, tenant rules, hints, context fit, cost. Tables, no model."""

import pytest

from conftest import REPO, SMALL_POLICY
from ponderd.engine import EngineLimits
from ponderd.errors import FailedPrecondition, InvalidRequest, PermissionDenied
from ponderd.planning.assessment import Assessment
from ponderd.planning.planner import Hints, check_hints, plan_candidates
from ponderd.planning.policy import TenantRules
from ponderd.planning.policy_file import load_policy
from ponderd.risk.score import RiskScore

POLICY = load_policy(SMALL_POLICY)
DEFAULT = load_policy(REPO / "policies" / "default.toml")
LIMITS = EngineLimits(n_ctx=8192, n_ctx_seq=8192, n_seq_max=16, forced_open=4, forced_close=5, forced_skip=0)


def assess(severity: str, reasoning: bool) -> Assessment:
    score = RiskScore(severity, reasoning, {"low": 0, "medium": 0, "high": 0}, float(reasoning), "test")
    return Assessment(severity, reasoning, score)


@pytest.mark.parametrize(
    "severity, reasoning, ladder",
    [
        ("low", False, ["direct"]),
        ("low", True, ["brief", "direct"]),
        ("medium", False, ["direct"]),
        ("medium", True, ["careful", "brief", "direct"]),
        ("high", False, ["careful", "brief"]),  # floor: brief
        ("high", True, ["thorough", "careful", "brief"]),
    ],
)
def test_routing_and_degradation_ladder(severity, reasoning, ladder):
    plans = plan_candidates(assess(severity, reasoning), POLICY, POLICY.defaults, Hints(), 50, LIMITS)
    assert [p.level for p in plans] == ladder
    costs = [p.worst_case_micros for p in plans]
    assert costs == sorted(costs, reverse=True)


def test_worst_case_cost_counts_every_token_kind():
    (plan, *_) = plan_candidates(assess("medium", True), POLICY, POLICY.defaults, Hints(), 50, LIMITS)
    # careful: 3 samples x (24 thinking + 16 answer); forced: 4 open + 3 x 5 close; prices per 1k: 1, 2, 2.
    prompt, thinking, answer = 50 + 4 + 3 * 5, 3 * 24, 3 * 16
    assert plan.worst_case_micros == (prompt * 1 + thinking * 2 + answer * 2) * 1000
    assert (plan.samples, plan.thinking_tokens, plan.answer_tokens, plan.forced_tokens) == (3, 24, 16, 19)


def test_tenant_rules_cap_and_floor_the_route():
    capped = TenantRules("direct", "brief", frozenset(), 8, 64)
    plans = plan_candidates(assess("high", True), POLICY, capped, Hints(), 50, LIMITS)
    assert [p.level for p in plans] == ["brief"]
    assert "capped at the tenant's max_level brief" in plans[0].reasons
    floored = TenantRules("careful", "thorough", frozenset(), 8, 64)
    plans = plan_candidates(assess("low", False), POLICY, floored, Hints(), 50, LIMITS)
    assert [p.level for p in plans] == ["careful"]
    assert "raised to the tenant's min_level careful" in plans[0].reasons


def test_level_hint_is_exact_and_never_degrades():
    plans = plan_candidates(assess("low", False), DEFAULT, DEFAULT.rules_for("local"), Hints(level="exhaustive"), 50, LIMITS)
    assert [p.level for p in plans] == ["exhaustive"]


def test_exact_hints_make_one_candidate():
    plans = plan_candidates(assess("low", False), POLICY, POLICY.rules_for("local"), Hints(samples=5, thinking_tokens=7), 50, LIMITS)
    assert len(plans) == 1
    assert (plans[0].samples, plans[0].thinking_tokens) == (5, 7)
    assert "client asked for 5 samples" in plans[0].reasons


def test_max_cost_drops_plans_above_it():
    full = plan_candidates(assess("high", True), POLICY, POLICY.defaults, Hints(), 50, LIMITS)
    cap = full[1].worst_case_micros / 1e6
    plans = plan_candidates(assess("high", True), POLICY, POLICY.defaults, Hints(max_cost=cap), 50, LIMITS)
    assert [p.level for p in plans] == ["careful", "brief"]


def test_max_cost_below_the_cheapest_plan_fails_precondition():
    with pytest.raises(FailedPrecondition, match="no allowed plan fits max_cost 0.0001"):
        plan_candidates(assess("low", False), POLICY, POLICY.defaults, Hints(max_cost=0.0001), 50, LIMITS)


def test_context_shrinks_samples_then_refuses_a_prompt_that_cannot_fit():
    tight = EngineLimits(n_ctx=200, n_ctx_seq=200, n_seq_max=16, forced_open=4, forced_close=5, forced_skip=0)
    (plan,) = plan_candidates(assess("low", False), POLICY, POLICY.rules_for("local"), Hints(samples=8), 100, tight)
    assert plan.samples == 6  # (200 - 100) // 16
    assert any("samples fit" in r for r in plan.reasons)
    with pytest.raises(InvalidRequest, match="the prompt is 250 tokens and the model's context holds 200"):
        plan_candidates(assess("low", False), POLICY, POLICY.defaults, Hints(), 250, tight)


@pytest.mark.parametrize(
    "hints, error, message",
    [
        (Hints(samples=3), PermissionDenied, "may not send the samples hint"),
        (Hints(level="careful"), PermissionDenied, "may not send the level hint"),
        (Hints(max_cost=-1), InvalidRequest, "max_cost must be >= 0"),
        (Hints(severity_floor="extreme"), InvalidRequest, "severity_floor must be one of"),
        (Hints(answer_format="number"), PermissionDenied, "may not send the answer_format hint"),
    ],
)
def test_hints_a_default_tenant_may_not_send(hints, error, message):
    with pytest.raises(error, match=message):
        check_hints(hints, POLICY.defaults, POLICY, "acme", LIMITS)


@pytest.mark.parametrize(
    "hints, error, message",
    [
        (Hints(samples=9), InvalidRequest, "samples must be from 1 to 8"),
        (Hints(thinking_tokens=65), InvalidRequest, "thinking_tokens must be at most 64"),
        (Hints(level="nope"), InvalidRequest, "no level 'nope'"),
        (Hints(answer_format="numbr"), InvalidRequest, "answer_format must be one of .* not 'numbr' \\(did you mean 'number'\\?\\)"),
        (Hints(answer_format="free", samples=3), InvalidRequest, "answer_format 'free' is not voted"),
    ],
)
def test_hint_values_outside_the_tenant_limits(hints, error, message):
    with pytest.raises(error, match=message):
        check_hints(hints, POLICY.rules_for("local"), POLICY, "local", LIMITS)


def test_allowed_hints_pass():
    check_hints(Hints(samples=8, thinking_tokens=64, level="thorough", severity_floor="high", max_cost=1.0,
                      answer_format="choice"), POLICY.rules_for("local"), POLICY, "local", LIMITS)


def unsure(severity: str, reasoning: bool, cues: tuple[str, ...]) -> Assessment:
    score = RiskScore(severity, reasoning, {"low": 0.45, "medium": 0.5, "high": 0.05}, float(reasoning), "test")
    return Assessment(severity, reasoning, score, (), cues)


def test_unsure_floor_raises_the_plan_and_says_why():
    rules = TenantRules("direct", "thorough", frozenset(), 8, 64, unsure_floor="careful")
    plans = plan_candidates(unsure("low", False, ("dose",)), POLICY, rules, Hints(), 50, LIMITS)
    assert [p.level for p in plans] == ["careful"]  # and the budget may not push it lower
    assert "unsure: classifier confidence 0.50 < 0.6 and the query carries dose -> no lower than careful (raised to careful)" in plans[0].reasons


def test_unsure_floor_raises_the_degradation_floor_of_a_higher_route():
    rules = TenantRules("direct", "thorough", frozenset(), 8, 64, unsure_floor="brief")
    plans = plan_candidates(unsure("medium", True, ("money",)), POLICY, rules, Hints(), 50, LIMITS)
    assert [p.level for p in plans] == ["careful", "brief"]
    assert any(r.startswith("unsure:") and r.endswith("no lower than brief") for r in plans[0].reasons)


def test_unsure_floor_respects_the_tenant_cap_and_can_be_off():
    capped = TenantRules("direct", "brief", frozenset(), 8, 64, unsure_floor="careful")
    assert [p.level for p in plan_candidates(unsure("low", False, ("dose",)), POLICY, capped, Hints(), 50, LIMITS)] == ["brief"]
    off = TenantRules("direct", "thorough", frozenset(), 8, 64, unsure_floor="")
    plans = plan_candidates(unsure("low", False, ("dose",)), POLICY, off, Hints(), 50, LIMITS)
    assert [p.level for p in plans] == ["direct"]
    assert not any(r.startswith("unsure:") for r in plans[0].reasons)


def test_no_cues_no_floor():
    rules = TenantRules("direct", "thorough", frozenset(), 8, 64, unsure_floor="careful")
    plans = plan_candidates(unsure("low", False, ()), POLICY, rules, Hints(), 50, LIMITS)
    assert [p.level for p in plans] == ["direct"]


def test_plans_carry_the_levels_answer_format_unless_the_client_names_one():
    plans = plan_candidates(assess("high", True), POLICY, POLICY.rules_for("local"), Hints(), 50, LIMITS)
    assert {p.answer_format for p in plans} == {"auto"}
    plans = plan_candidates(assess("high", True), POLICY, POLICY.rules_for("local"), Hints(answer_format="choice"), 50, LIMITS)
    assert {p.answer_format for p in plans} == {"choice"}
    assert all("client asked for answer_format choice" in p.reasons for p in plans)
    assert plans[0].to_json()["answer_format"] == "choice"


def test_free_text_is_not_voted_so_it_plans_one_sample_and_reserves_for_one():
    voted = plan_candidates(assess("high", True), POLICY, POLICY.rules_for("local"), Hints(), 50, LIMITS)
    free = plan_candidates(assess("high", True), POLICY, POLICY.rules_for("local"), Hints(answer_format="free"), 50, LIMITS)
    assert [p.level for p in free] == [p.level for p in voted] == ["thorough", "careful", "brief"]
    assert [p.samples for p in voted] == [5, 3, 1] and [p.samples for p in free] == [1, 1, 1]
    assert free[0].worst_case_micros < voted[0].worst_case_micros
    assert "answer_format free: free text is not voted, so one sample" in free[0].reasons


def test_plans_carry_the_levels_vote():
    from dataclasses import replace

    weighted = replace(POLICY, levels=tuple(replace(lvl, vote="weighted") for lvl in POLICY.levels))
    plans = plan_candidates(assess("high", True), weighted, POLICY.rules_for("local"), Hints(), 50, LIMITS)
    assert {p.vote for p in plans} == {"weighted"} and plans[0].to_json()["vote"] == "weighted"
    assert {p.vote for p in plan_candidates(assess("high", True), POLICY, POLICY.defaults, Hints(), 50, LIMITS)} == {"majority"}


def test_the_answer_tokens_hint_only_lowers_the_cap_and_every_tenant_may_send_it():
    check_hints(Hints(answer_tokens=4), POLICY.defaults, POLICY, "acme", LIMITS)  # not in the defaults' hints: allowed
    full = plan_candidates(assess("low", False), POLICY, POLICY.defaults, Hints(), 50, LIMITS)
    capped = plan_candidates(assess("low", False), POLICY, POLICY.defaults, Hints(answer_tokens=4), 50, LIMITS)
    assert [p.answer_tokens for p in capped] == [min(4, p.answer_tokens) for p in full]
    assert capped[0].worst_case_micros < full[0].worst_case_micros
    assert "client capped the answer at 4 tokens" in capped[0].reasons
    higher = plan_candidates(assess("low", False), POLICY, POLICY.defaults, Hints(answer_tokens=10_000), 50, LIMITS)
    assert [p.answer_tokens for p in higher] == [p.answer_tokens for p in full]
