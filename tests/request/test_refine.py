"""Self-refinement: its reserved worst case, its settings, and its prompt. Pure (no model)."""

import pathlib

import pytest

from conftest import SMALL_POLICY
from ponderd.engine import EngineLimits
from ponderd.engine.framing import SLACK, frame, overhead
from ponderd.errors import PolicyError
from ponderd.planning.assessment import Assessment
from ponderd.planning.planner import Hints, plan_candidates, refinement_prompt_bound
from ponderd.planning.policy_file import load_policy
from ponderd.risk.score import RiskScore

LIMITS = EngineLimits(4096, 4096, 8, forced_open=3, forced_close=12, forced_skip=0, refine_overhead=30)
ASSESS = Assessment("low", False, RiskScore("low", False, {"low": 1.0, "medium": 0.0, "high": 0.0}, 0.0, "test"))


def policy_with(tmp_path: pathlib.Path, extra: str):
    p = tmp_path / "p.toml"
    p.write_text(SMALL_POLICY.read_text().replace("[levels.careful]\n", "[levels.careful]\n" + extra))
    return load_policy(p)


def plan(policy, level="careful", prompt=40):
    return plan_candidates(ASSESS, policy, policy.rules_for("local"), Hints(level=level), prompt, LIMITS)[0]


def test_the_worst_case_includes_every_refinement_round_exactly(tmp_path):
    base = plan(load_policy(SMALL_POLICY))
    refined = plan(policy_with(tmp_path, "refine = 2\nrefine_tokens = 20\n"))
    assert (refined.refine, refined.refine_tokens) == (2, 20)
    # Each round reads the question, the framing and the answer it revises (16 + the 12-token close and wrap-up),
    # at the prompt price (1 per 1000), and writes up to 20 tokens at the answer price (2 per 1000).
    read = refinement_prompt_bound(40, 16, 20, LIMITS)
    assert read == 40 + 30 + 16 + 12
    assert refined.worst_case_micros - base.worst_case_micros == 2 * (read * 1000 + 20 * 2000)


def test_refine_tokens_default_to_the_answer_cap(tmp_path):
    p = plan(policy_with(tmp_path, "refine = 1\n"))
    assert p.refine_tokens == 16
    assert p.refine == 1


@pytest.mark.parametrize(
    "extra, message",
    [
        ("refine = 9\n", "levels.careful.refine: must be an integer from 0 to 4, not 9"),
        ('refine = 1\nrefine_keep = "alway"\n', "levels.careful.refine_keep: 'alway' is not one of always, unless_decided (did you mean 'always'?)"),
        ("refine_tokens = 8\n", "levels.careful: refine_tokens and refine_keep apply only with refine >= 1; set refine or remove them"),
    ],
)
def test_bad_refinement_settings_are_named(tmp_path, extra, message):
    with pytest.raises(PolicyError) as err:
        policy_with(tmp_path, extra)
    assert message in str(err.value)


def test_the_framing_overhead_counts_what_the_frame_adds():
    words = lambda text: len(text.split())  # a stand-in tokenizer: the framing is counted, plus slack
    assert overhead(words) == len(frame("", "").split()) + SLACK
    assert "Q?" in frame("Q?", "42") and frame("Q?", "42").index("Q?") < frame("Q?", "42").index("42")
