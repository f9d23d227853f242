"""Key lifetime through the real daemon and the real CLI in a subprocess: expiry, rotation with an overlap, key list.

The daemon's clock is a ManualClock the test moves: an expiry of hours passes without a sleep.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from conftest import DaemonThread, make_settings

pytestmark = pytest.mark.model

PONDER = str(Path(sys.executable).parent / "ponder")


@pytest.fixture
def d(tmp_path, clock):
    daemon = DaemonThread(make_settings(tmp_path / "state"), clock).start()
    yield daemon
    daemon.stop()


def ponder(d, env, *args, token):
    return subprocess.run(
        [PONDER, "--address", d.address, "--token", token, *args], env=env, capture_output=True, text=True, timeout=300,
    )


def admin(d, env, *args):
    run = ponder(d, env, "admin", *args, token=d.token("admin"))
    assert run.returncode == 0, run.stderr
    return run


def keys(d, env):
    return {k["key_id"]: k for k in json.loads(admin(d, env, "key", "list", "--tenant", "local", "--json").stdout)}


def test_an_expiring_key_works_then_is_refused_saying_when_it_expired(d, cli_env, clock):
    issued = admin(d, cli_env, "key", "issue", "local", "--expires", "12h", "--label", "nightly")
    token = issued.stdout.strip()
    key_id = token.split("_")[1]
    assert "expires 2026-03-02 22:00:00Z" in issued.stderr
    asked = ponder(d, cli_env, "ask", "Say yes.", "--samples", "1", "--thinking-tokens", "0", token=token)
    assert asked.returncode == 0, asked.stderr
    clock.advance(timedelta(hours=11, minutes=59))
    assert ponder(d, cli_env, "balance", token=token).returncode == 0
    clock.advance(timedelta(minutes=1))
    refused = ponder(d, cli_env, "balance", token=token)
    assert refused.returncode != 0
    assert f"key {key_id} expired at 2026-03-02T22:00:00Z" in refused.stderr, refused.stderr
    admin(d, cli_env, "job", "run", "flush_key_usage")
    row = keys(d, cli_env)[key_id]
    assert row["expired"] and row["label"] == "nightly" and row["last_used_at"].startswith("2026-03-02T21:59")
    table = admin(d, cli_env, "key", "list", "--tenant", "local").stdout
    (line,) = [x for x in table.splitlines() if x.startswith(key_id)]
    assert "expired" in line and "2026-03-02 22:00:00Z" in line and "2026-03-02 21:59:00Z" in line


def test_rotation_keeps_both_keys_for_the_overlap_then_only_the_new(d, cli_env, clock):
    old = admin(d, cli_env, "key", "issue", "local", "--label", "billing").stdout.strip()
    old_id = old.split("_")[1]
    rotated = admin(d, cli_env, "key", "rotate", old_id, "--overlap", "10m")
    new = rotated.stdout.strip()
    new_id = new.split("_")[1]
    assert f"{old_id} works until 2026-03-02 10:10:00Z" in rotated.stderr
    for token in (old, new):
        assert ponder(d, cli_env, "balance", token=token).returncode == 0
    listed = keys(d, cli_env)
    assert listed[old_id]["replaced_by"] == new_id and listed[new_id]["label"] == "billing"
    clock.advance(timedelta(minutes=10))
    refused = ponder(d, cli_env, "balance", token=old)
    assert refused.returncode != 0 and f"key {old_id} expired at 2026-03-02T10:10:00Z" in refused.stderr
    assert ponder(d, cli_env, "balance", token=new).returncode == 0
    again = ponder(d, cli_env, "admin", "key", "rotate", old_id, token=d.token("admin"))
    assert again.returncode != 0 and "no active key" in again.stderr


def test_bad_expiries_are_refused_with_the_reason(d, cli_env):
    past = ponder(d, cli_env, "admin", "key", "issue", "local", "--expires-at", "2020-01-01", token=d.token("admin"))
    assert past.returncode != 0 and "is not in the future" in past.stderr
    both = ponder(d, cli_env, "admin", "key", "issue", "local", "--expires", "1h", "--expires-at", "2030-01-01",
                  token=d.token("admin"))
    assert both.returncode != 0 and "not both" in both.stderr
    garbled = ponder(d, cli_env, "admin", "key", "issue", "local", "--expires", "soon", token=d.token("admin"))
    assert garbled.returncode == 2 and "is not a duration" in garbled.stderr
