"""The type checker over both packages: the seams are Protocols, and this is what holds the real classes to them."""

from __future__ import annotations

import subprocess
import sys

from conftest import REPO


def test_mypy_finds_no_errors_in_the_daemon_or_the_client():
    run = subprocess.run(
        [sys.executable, "-m", "mypy", "--no-error-summary"], cwd=REPO, capture_output=True, text=True, timeout=900,
    )
    assert run.returncode == 0, run.stdout + run.stderr
