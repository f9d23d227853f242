"""A daemon that cannot start names its own cause and the setting that fixes it: the real `ponderd`, real ports."""

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import SMALL_POLICY

pytestmark = pytest.mark.model

PONDERD = str(Path(sys.executable).parent / "ponderd")


@pytest.fixture
def taken():
    """A loopback port another process holds (listening), as a second daemon on the host meets it."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield f"127.0.0.1:{holder.getsockname()[1]}"


def start(env, *args):
    return subprocess.run(
        [PONDERD, "--policy-file", str(SMALL_POLICY), *args], env=env, capture_output=True, text=True, timeout=180
    )


def the_error(run) -> str:
    assert run.returncode == 1, run.stderr
    assert "Traceback" not in run.stderr
    errors = [line for line in run.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1, run.stderr
    return errors[0]


def test_a_taken_metrics_port_is_named_with_its_setting_not_blamed_on_the_state_directory(cli_env, taken):
    error = the_error(start(cli_env | {"PONDER_METRICS_LISTEN": taken}, "--listen", "127.0.0.1:0"))
    assert f"could not serve metrics on {taken}: the address is in use" in error
    assert 'set [metrics] listen (PONDER_METRICS_LISTEN, --metrics-listen) to a free HOST:PORT, or "" to turn metrics off' in error
    assert "state directory" not in error


def test_a_taken_listen_port_is_named_with_its_setting(cli_env, taken):
    error = the_error(start(cli_env, "--listen", taken))
    assert f"could not listen on {taken}: the address is in use" in error
    assert "set listen (PONDER_LISTEN, --listen) to a free HOST:PORT" in error
    assert "state directory" not in error


def test_an_unwritable_state_directory_is_still_the_state_directorys(cli_env, tmp_path):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    error = the_error(start(cli_env | {"PONDER_STATE_DIR": str(blocker / "state")}, "--listen", "127.0.0.1:0"))
    assert f"cannot use the state directory {blocker / 'state'}" in error
    assert "make it writable by this user, or set state_dir (PONDER_STATE_DIR)" in error
