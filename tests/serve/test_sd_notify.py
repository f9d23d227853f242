"""systemd's notify protocol, as a real daemon speaks it: STATUS= at each start-up step, EXTEND_TIMEOUT_USEC while
the model loads, READY=1, then STOPPING=1 and STATUS= while it drains; read from a real unix datagram socket."""

from __future__ import annotations

import re
import socket
from typing import Iterator

import pytest

from conftest import REPO, DaemonProcess

pytestmark = pytest.mark.model


@pytest.fixture
def notify_socket(tmp_path) -> Iterator[tuple[socket.socket, str]]:
    path = str(tmp_path / "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(30)
    yield sock, path
    sock.close()


def messages(sock: socket.socket, until: str) -> list[str]:
    """Every datagram up to and including the first with an assignment starting `until`."""
    got: list[str] = []
    while not any(line.startswith(until) for line in (got[-1].splitlines() if got else [])):
        got.append(sock.recv(4096).decode())
    return got


def test_start_and_stop_tell_systemd_each_step(notify_socket, cli_env):
    sock, path = notify_socket
    env = dict(cli_env, NOTIFY_SOCKET=path)
    daemon = DaemonProcess(env)
    address = daemon.wait_ready()
    started = messages(sock, "READY=1")
    daemon.stop()
    stopped = messages(sock, "STATUS=freeing the model")
    lines = [line for m in started for line in m.splitlines()]
    statuses = [line.removeprefix("STATUS=") for line in lines if line.startswith("STATUS=")]
    assert [s.split(" ")[0] for s in statuses[:3]] == ["opening", "loading", "serving"], statuses
    assert "warming the model" in statuses
    assert any(s.startswith("settling what the last run left") for s in statuses)
    # While the model loads: more start-up time, before READY=1.
    extend = [i for i, line in enumerate(lines) if line.startswith("EXTEND_TIMEOUT_USEC=")]
    assert extend and extend[0] < lines.index("READY=1")
    assert all(re.fullmatch(r"EXTEND_TIMEOUT_USEC=\d+", lines[i]) for i in extend)
    assert int(lines[extend[0]].split("=")[1]) >= 30_000_000
    # READY=1 comes with the status a `systemctl status` shows while serving.
    ready = next(m for m in started if "READY=1" in m)
    assert "STATUS=serving on 127.0.0.1:" in ready and address
    stop_lines = [line for m in stopped for line in m.splitlines()]
    assert stop_lines[0] == "STOPPING=1"
    assert any(line.startswith("STATUS=draining: 0 request(s) running") for line in stop_lines)
    assert "STATUS=writing waiting settlements" in stop_lines


def test_the_unit_gives_start_up_time_for_a_model_load():
    text = (REPO / "systemd" / "ponderd.service").read_text()
    match = re.search(r"(?m)^TimeoutStartSec=(\d+)$", text)
    assert match and int(match.group(1)) >= 120
