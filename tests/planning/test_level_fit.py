"""A level the model's context cannot hold as configured is a warning, at `ponder policy check` and at start-up,
naming what runs instead; the quote shows the samples that really run.

The real CLI in a subprocess, the real daemon on the embedded model.
"""

from __future__ import annotations

import logging
import pathlib
import subprocess
import sys

import pytest

from conftest import SMALL_POLICY, DaemonThread, make_settings
from ponderd.engine import EngineLimits
from ponderd.planning.planner import fit_warnings, level_fit
from ponderd.planning.policy_file import load_policy


def wide_policy(tmp_path: pathlib.Path) -> pathlib.Path:
    """The small policy with `thorough` at 8 samples of 300 answer tokens: 3 fit a 1,024-cell context at once."""
    text = SMALL_POLICY.read_text().replace(
        "[levels.thorough]\nthinking_tokens = 32\nsamples = 5\nanswer_tokens = 16",
        "[levels.thorough]\nthinking_tokens = 0\nsamples = 8\nanswer_tokens = 300",
    )
    assert "samples = 8" in text
    path = tmp_path / "wide.toml"
    path.write_text(text)
    return path


def test_a_level_whose_samples_do_not_fit_says_what_runs_instead(tmp_path):
    policy = load_policy(wide_policy(tmp_path))
    limits = EngineLimits(1024, 1024, 8)
    (warning,) = fit_warnings(policy, lambda model: limits)
    assert warning.startswith("level thorough does not fit the model's context (n_ctx 1024, n_seq_max 8)")
    assert "3 sample(s) at once, not 8" in warning
    assert level_fit(policy.level("thorough"), EngineLimits(8192, 8192, 16), policy) == ""
    # Per-sample caps the context cannot hold are named too.
    assert "an answer cap of 200, not 300" in level_fit(policy.level("thorough"), EngineLimits(200, 200, 8), policy)
    # A level on a model that is not served is the policy check's problem, not a fit warning.
    assert fit_warnings(policy, lambda model: None) == []


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ponder", *args], env=env, capture_output=True, text=True, timeout=120)


def test_policy_check_warns_with_the_daemons_n_ctx(tmp_path, cli_env):
    config = tmp_path / "ponder.toml"
    config.write_text("[model]\nn_ctx = 1024\nn_seq_max = 8\n")
    policy = wide_policy(tmp_path)
    done = cli(cli_env, "policy", "check", str(policy), "--config", str(config))
    assert done.returncode == 0, done.stderr
    assert ": ok (" in done.stdout
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith(f"{policy}: warning: level thorough does not fit") and "3 sample(s) at once, not 8" in line
    # The daemon's default context (8,192 cells, 16 sequences) holds it: no warning.
    done = cli(cli_env, "policy", "check", str(policy))
    assert done.returncode == 0 and done.stderr == ""


@pytest.mark.model
def test_start_up_warns_and_the_quote_shows_the_samples_that_run(tmp_path, caplog, cli_env):
    settings = make_settings(tmp_path / "state", wide_policy(tmp_path), model={"n_ctx": 1024, "n_seq_max": 8})
    with caplog.at_level(logging.WARNING, logger="ponder.server"):
        d = DaemonThread(settings).start()
    try:
        warnings = [r.getMessage() for r in caplog.records if r.name == "ponder.server" and r.levelno == logging.WARNING]
        assert any("level thorough does not fit" in w and "sample(s) at once, not 8" in w for w in warnings), warnings
        done = cli(cli_env, "--address", d.address, "--token", d.token(), "quote", "--level", "thorough", "Name a colour.")
        assert done.returncode == 0, done.stderr
        fitted = next(w for w in warnings if "level thorough" in w).split(" sample(s) at once")[0].rsplit(" ", 1)[1]
        assert f"samples={fitted}" in done.stdout and f"context: {fitted} samples fit at once, not 8" in done.stdout
    finally:
        d.stop()
