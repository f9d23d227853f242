"""The shipped profile: policies/default.toml plans by expected loss with a profile of the embedded model.

The profile (daemon/ponderd/planning/data/, `make profile`) must match what it claims: the
embedded model file's digest, the default policy's version and levels. A daemon on another
model file plans by the routing table and says so in one line (`ponder policy check`, real CLI).
A fresh daemon under the default policy plans by expected loss, and the README's `ponder quote`
example is what the real CLI prints.
"""

from __future__ import annotations

import datetime
import pathlib
import re
import subprocess
import sys

import pytest

from conftest import REPO, DaemonProcess
from ponderd.engine.model_file import ModelIdentity, model_identity
from ponderd.planning.policy_file import load_policy, profile_file
from ponderd.planning.profile import Profile

PONDER = str(pathlib.Path(sys.executable).parent / "ponder")
DEFAULT = REPO / "policies" / "default.toml"
BLEACH = "Can I mix bleach and ammonia to clean my bathroom?"
MARKER = "<!-- quote-example -->"


def shipped() -> Profile:
    policy = load_policy(DEFAULT)
    assert policy.planning.profile_path is not None
    return Profile.load(profile_file(DEFAULT, policy.planning.profile_path))


def test_the_shipped_profile_matches_the_embedded_model_and_the_default_policy():
    served = model_identity(None)
    policy = load_policy(DEFAULT, None, served)
    profile = shipped()
    assert policy.planning.mode == "expected_loss"
    assert policy.profile == profile and policy.profile_note == ""
    assert (profile.model_file, profile.model_sha256) == (served.file, served.sha256)
    assert profile.policy_version == policy.version
    names = [lvl.name for lvl in policy.levels]
    assert list(profile.levels) == [n for n in names if n in profile.levels]  # the policy's levels, its order
    assert {"direct", "vote3", "vote5"} <= set(profile.levels)
    assert datetime.datetime.strptime(profile.created_at, "%Y-%m-%dT%H:%M:%SZ") <= datetime.datetime.utcnow()
    assert profile.dataset["path"].startswith("bench/data/framed.jsonl") and profile.dataset["items"] > 0


def test_the_shipped_profile_is_in_the_package_so_a_copied_policy_finds_it(tmp_path: pathlib.Path):
    copy = tmp_path / "etc" / "policy.toml"  # where deploy/install.sh puts it
    copy.parent.mkdir()
    copy.write_text(DEFAULT.read_text())
    assert load_policy(copy).profile == shipped()


def test_a_daemon_on_another_model_file_plans_by_the_routing_table_and_says_so(tmp_path: pathlib.Path, cli_env):
    other = tmp_path / "other.gguf"
    other.write_bytes(b"GGUF not the embedded model")
    policy = load_policy(DEFAULT, None, model_identity(other))
    assert policy.profile is None and policy.planning.mode == "expected_loss"
    served = shipped()
    assert policy.profile_note.startswith(f"no profile for model other.gguf: the profile was measured on {served.model_file}")
    config = tmp_path / "ponder.toml"
    config.write_text(f'[model]\npath = "{other}"\n')
    r = subprocess.run([PONDER, "policy", "check", "--config", str(config), str(DEFAULT)], env=cli_env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    [line] = [x for x in r.stderr.splitlines() if "no profile for model" in x]
    assert line == f"{DEFAULT}: warning: {policy.profile_note}"
    assert line.endswith("run `ponder calibrate`; planning by the routing table")


def test_a_digest_that_differs_is_set_aside():
    policy = load_policy(DEFAULT, None, ModelIdentity(shipped().model_file, "0" * 64))
    assert policy.profile is None and "run `ponder calibrate`; planning by the routing table" in policy.profile_note


def readme_quote() -> tuple[str, str]:
    """The README's `ponder quote` example: the command's argument and the output shown."""
    block = (REPO / "README.md").read_text(encoding="utf-8").split(MARKER, 1)[1].split("```text\n", 1)[1]
    block = block.split("```", 1)[0]
    first, output = block.split("\n", 1)
    assert first.startswith('$ ponder quote "') and first.endswith('"')
    return first[len('$ ponder quote "'):-1], output


def renews(text: str) -> str:
    return re.sub(r"renews \d{4}-\d\d-\d\d \d\d:\d\d UTC", "renews DATE", text)


@pytest.mark.model
def test_a_fresh_daemon_plans_by_expected_loss_and_the_readme_shows_its_quote(tmp_path: pathlib.Path, cli_env):
    query, shown = readme_quote()
    assert query == BLEACH
    d = DaemonProcess(cli_env, "--policy-file", str(DEFAULT))
    try:
        d.wait_ready()
        r = subprocess.run([PONDER, "quote", BLEACH], env=cli_env, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        # The balance line names the day its window renews: the one part that moves with the calendar.
        assert renews(r.stdout) == renews(shown)
        assert "no profile for model" not in d.log.read_text()
    finally:
        d.stop()
    # The routing table planned it `careful` (512 thinking tokens x 3 samples); expected loss does not.
    assert "careful" not in r.stdout.split("weighed")[0] and "expected loss" in r.stdout
