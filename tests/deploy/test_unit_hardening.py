"""The systemd units' hardening: the exposure score systemd-analyze gives, and the daemon answering under that confinement."""

from __future__ import annotations

import os
import pathlib
import re
import shutil
import subprocess
import sys

import pytest

from conftest import REPO, SMALL_POLICY, DaemonProcess
from ponder.client import PonderClient

LIMIT = 2.5
UNIT = REPO / "systemd" / "ponderd.service"


def exposure(unit: pathlib.Path) -> float:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        message = "systemd-analyze is missing: install systemd (apt-get install systemd) to check the unit's hardening"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    run = subprocess.run([tool, "security", "--offline=true", "--no-pager", str(unit)],
                         capture_output=True, text=True, timeout=120)
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", run.stdout)
    assert match, f"no exposure level in systemd-analyze's output:\n{run.stdout}\n{run.stderr}"
    return float(match.group(1))


@pytest.mark.parametrize("unit", ["ponderd.service", "ponder-backup.service"])
def test_the_unit_is_exposed_at_most_2_5(unit):
    score = exposure(REPO / "systemd" / unit)
    assert score <= LIMIT, f"{unit} scores {score} in systemd-analyze security (limit {LIMIT}): a hardening line was lost"


def test_the_gpu_drop_in_keeps_the_unit_under_the_limit(tmp_path):
    # A drop-in's lines apply after the unit's: the unit with the drop-in appended is what systemd runs.
    merged = tmp_path / "ponderd.service"
    merged.write_text(UNIT.read_text() + (REPO / "systemd/gpu.conf.example").read_text())
    score = exposure(merged)
    assert score <= LIMIT, f"ponderd.service with systemd/gpu.conf.example scores {score} (limit {LIMIT})"


def test_the_unit_keeps_notify_watchdog_and_runtime_directory():
    text = UNIT.read_text()
    for line in ("Type=notify", "WatchdogSec=60", "RuntimeDirectory=ponder", "StateDirectory=ponder", "UMask=0077"):
        assert re.search(rf"(?m)^{re.escape(line)}$", text), line


def _sandbox_available() -> str | None:
    if os.geteuid() != 0:
        return "the sandbox mounts /proc and /dev in a private namespace: needs root"
    if not shutil.which("unshare") or not shutil.which("systemd-analyze"):
        return "needs unshare and systemd-analyze"
    probe = subprocess.run(["unshare", "--mount", "true"], capture_output=True)
    if probe.returncode != 0:
        return "no private mount namespace here (unshare --mount failed)"
    return None


@pytest.mark.model
def test_the_daemon_answers_under_the_units_confinement(cli_env, tmp_path):
    """System call filter, address families, no W+X memory, no new privileges, /proc subset and private /dev."""
    reason = _sandbox_available()
    if reason:
        pytest.skip(reason)
    sandbox = ["unshare", "--mount", "--propagation", "private", "--",
               sys.executable, str(REPO / "tests/sandbox.py"), str(UNIT), "--"]
    d = SandboxedDaemon(cli_env, sandbox)
    try:
        address = d.wait_ready()
        with PonderClient(address, (d.state_dir / "local.token").read_text().strip(), timeout=120) as c:
            answer = c.ask("What is 2 + 2?")
        assert answer.request_id and answer.cost > 0
    finally:
        assert d.stop() == 0, d.log.read_text()
    log = d.log.read_text()
    assert "Operation not permitted" not in log, log


class SandboxedDaemon(DaemonProcess):
    def __init__(self, env: dict[str, str], prefix: list[str]) -> None:
        import subprocess as sp

        self.env = env
        self.state_dir = pathlib.Path(env["PONDER_STATE_DIR"])
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.log = self.state_dir.parent / "daemon.log"
        self._log = self.log.open("w")
        ponderd = pathlib.Path(sys.executable).parent / "ponderd"
        command = [*prefix, str(ponderd), "--listen", "127.0.0.1:0", "--policy-file", str(SMALL_POLICY)]
        # exec all the way down: the signal reaches the daemon itself.
        self.proc = sp.Popen(command, env=env, stdout=self._log, stderr=sp.STDOUT)


def test_the_backup_runs_under_its_units_confinement(tmp_path):
    reason = _sandbox_available()
    if reason:
        pytest.skip(reason)
    import sqlite3

    state = tmp_path / "state"
    state.mkdir()
    db = sqlite3.connect(state / "ponder.db")
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE t (x)")
    db.execute("INSERT INTO t VALUES (42)")
    db.commit()
    sandbox = ["unshare", "--mount", "--propagation", "private", "--",
               sys.executable, str(REPO / "tests/sandbox.py"), str(REPO / "systemd/ponder-backup.service"), "--"]
    run = subprocess.run([*sandbox, sys.executable, "-m", "ponderd.backup", "--state-dir", str(state), "--keep", "1"],
                         capture_output=True, text=True, timeout=120, env={**os.environ, "PONDER_CONFIG": ""})
    db.close()
    assert run.returncode == 0, run.stderr
    [copy] = (state / "backups").glob("ponder-*.db")
    assert sqlite3.connect(copy).execute("SELECT x FROM t").fetchall() == [(42,)]
