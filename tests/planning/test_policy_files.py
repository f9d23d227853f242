"""Policy files: every shipped one is valid; every bad one fails with its exact message; reloads are atomic."""

import pathlib
import shutil

import pytest

from conftest import REPO, SMALL_POLICY
from ponderd.errors import PolicyError
from ponderd.planning.assessment import adjust
from ponderd.planning.policy_file import PolicyHolder, load_policy
from ponderd.risk.score import RiskScore

BAD = sorted((REPO / "tests" / "policies" / "bad").glob("*.toml"))


def expected_error(path: pathlib.Path) -> str:
    first = path.read_text().splitlines()[0]
    assert first.startswith("# error: "), f"{path.name} must start with '# error: <message>'"
    return first.removeprefix("# error: ")


@pytest.mark.parametrize("path", BAD, ids=[p.stem for p in BAD])
def test_bad_policy_file_is_refused_with_its_exact_error(path):
    with pytest.raises(PolicyError) as err:
        load_policy(path)
    assert expected_error(path) in err.value.problems
    assert str(err.value).startswith(f"{path}: ")


@pytest.mark.parametrize("path", [REPO / "policies" / "default.toml", SMALL_POLICY], ids=["default", "small"])
def test_shipped_policies_are_valid(path):
    policy = load_policy(path)
    assert [lvl.name for lvl in policy.levels][0] == "direct"
    assert set(policy.routing) == {"low", "medium", "high"}


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(PolicyError, match="nope.toml: cannot read"):
        load_policy(tmp_path / "nope.toml")


def test_reload_swaps_a_valid_file_and_keeps_the_old_policy_on_a_bad_one(tmp_path):
    path = tmp_path / "policy.toml"
    shutil.copy(SMALL_POLICY, path)
    holder = PolicyHolder(path)
    snapshot = holder.current()
    path.write_text(SMALL_POLICY.read_text().replace('version = "test-small-1"', 'version = "test-small-2"'))
    assert holder.reload().version == "test-small-2"
    assert snapshot.version == "test-small-1"  # a request's snapshot never changes under it
    shutil.copy(BAD[0], path)
    with pytest.raises(PolicyError):
        holder.reload()
    assert holder.current().version == "test-small-2"
    assert holder.last_error and str(path) in holder.last_error


def score(severity="low", reasoning=False):
    return RiskScore(severity, reasoning, {"low": 1.0, "medium": 0.0, "high": 0.0}, 0.0, "m1")


@pytest.mark.parametrize(
    "tenant, text, floor, expected, note",
    [
        ("acme", "hello", None, "low", None),
        ("clinic-north", "hello", None, "high", "override 1 (clinical tenants are never below high): severity floor high"),
        ("acme", "hello", "medium", "medium", "client severity floor medium"),
        ("clinic-north", "hello", "medium", "high", "override 1 (clinical tenants are never below high): severity floor high"),
    ],
)
def test_overrides_and_client_floor_adjust_the_assessment(tenant, text, floor, expected, note):
    a = adjust(score(), load_policy(SMALL_POLICY), tenant, text, floor)
    assert a.severity == expected
    assert a.score.severity == "low"
    assert (a.adjustments[0] if a.adjustments else None) == note


def test_default_policy_pins_destructive_commands_high():
    policy = load_policy(REPO / "policies" / "default.toml")
    a = adjust(score(), policy, "acme", "quick one: DROP TABLE users; ok?", None)
    assert a.severity == "high"
    assert "destructive commands" in a.adjustments[0]


def unsure_score(top=0.5):
    return RiskScore("medium", False, {"low": 1 - top - 0.1, "medium": top, "high": 0.1}, 0.2, "m1")


@pytest.mark.parametrize(
    "top, text, cues",
    [
        (0.5, "pt 72 kg, heparin 18 units/kg/h, bag 25,000 units in 500 mL. rate?", ("dose", "quantity")),
        (0.5, "appeal window 21 days from 12 Feb, today 2 Mar", ("deadline",)),
        (0.5, "invoice 8,400 € to a German client, reverse charge?", ("money",)),
        (0.5, "tell me about the history of rome", ()),  # unsure, but nothing at stake in the text
        (0.9, "pt 72 kg, heparin 18 units/kg/h, rate?", ()),  # the classifier is sure
    ],
)
def test_unsure_floor_fires_only_when_unsure_and_the_query_carries_stakes(top, text, cues):
    a = adjust(unsure_score(top), load_policy(SMALL_POLICY), "acme", text, None)
    assert a.unsure_cues == cues
    assert a.severity == "medium"  # the floor moves the plan, not the label


def test_unsure_floor_is_on_by_default_and_can_be_turned_off(tmp_path):
    policy = load_policy(SMALL_POLICY)
    assert policy.defaults.unsure_floor == "brief"  # the high route's floor
    assert policy.defaults.unsure_confidence == 0.6
    path = tmp_path / "off.toml"
    path.write_text(SMALL_POLICY.read_text().replace("[defaults]", '[defaults]\nunsure_floor = "off"'))
    off = load_policy(path)
    assert off.defaults.unsure_floor == ""
    assert adjust(unsure_score(), off, "acme", "give 500 mg now?", None).unsure_cues == ()


def test_a_high_verdict_never_runs_the_unsure_check():
    s = RiskScore("high", False, {"low": 0.3, "medium": 0.3, "high": 0.4}, 0.2, "m1")
    assert adjust(s, load_policy(SMALL_POLICY), "acme", "give 500 mg now?", None).unsure_cues == ()
