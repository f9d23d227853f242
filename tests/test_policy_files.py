"""Policy files: every shipped one is valid; every bad one fails with its exact message; reloads are atomic."""

import pathlib
import shutil

import pytest

from conftest import REPO, SMALL_POLICY
from ponderd.assessment import RiskScore, adjust
from ponderd.errors import PolicyError
from ponderd.policy import PolicyHolder, load_policy

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
