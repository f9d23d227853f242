"""The daemon's life as systemd sees it: READY=1, health, SIGHUP reload, SIGTERM drain, exit 0."""

import shutil
import signal
import socket
import sqlite3
import threading
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from conftest import SMALL_POLICY, DaemonProcess
from ponder.client import PonderClient
from ponder.v1 import ponder_pb2, ponder_pb2_grpc

pytestmark = pytest.mark.model


def wait_until(predicate, timeout: float = 60.0) -> None:
    """Poll an observable state; fail loudly if it never comes."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "state not reached in time"
        time.sleep(0.05)


def reservations(d: DaemonProcess) -> int:
    db = d.state_dir / "ponder.db"
    if not db.exists():
        return 0
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT COUNT(*) FROM reservations").fetchone()[0]


def _until(sock: socket.socket, first: str) -> list[str]:
    """The lines of the first datagram whose first line is `first` (skipping STATUS= and EXTEND_TIMEOUT_USEC= ones)."""
    while True:
        lines = sock.recv(4096).decode().splitlines()
        if lines and lines[0] == first:
            return lines
        assert all(line.startswith(("STATUS=", "EXTEND_TIMEOUT_USEC=")) for line in lines), lines


def test_ready_reload_drain_and_clean_exit(cli_env, tmp_path):
    notify = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(notify))
    sock.settimeout(120)
    policy = tmp_path / "policy.toml"
    shutil.copy(SMALL_POLICY, policy)
    # A drain long enough for the running request to finish on a slow, busy machine.
    env = cli_env | {"NOTIFY_SOCKET": str(notify), "PONDER_DRAIN_SECONDS": "300"}
    d = DaemonProcess(env, "--policy-file", str(policy), program="ponderd")
    address = d.wait_ready()
    # Start-up steps come as STATUS= lines and EXTEND_TIMEOUT_USEC (tests/serve/test_sd_notify.py); then READY=1.
    assert _until(sock, "READY=1")[0] == "READY=1"
    token = (d.state_dir / "local.token").read_text().strip()
    # It says how to ask it, with the state dir the CLI needs to find it.
    assert f'PONDER_STATE_DIR={d.state_dir} ' in d.log.read_text() and ' ask "What is 17 * 23?"' in d.log.read_text()
    with grpc.insecure_channel(address) as ch:
        health = health_pb2_grpc.HealthStub(ch)
        assert health.Check(health_pb2.HealthCheckRequest(service="ponder.v1.PonderService")).status == health_pb2.HealthCheckResponse.SERVING

    # SIGHUP re-reads the policy; a bad file is refused and the good one stays.
    policy.write_text(SMALL_POLICY.read_text().replace('"test-small-1"', '"test-small-2"'))
    d.proc.send_signal(signal.SIGHUP)
    with PonderClient(address, token) as c:
        deadline = time.time() + 30
        while c.quote("hi").plan.policy_version != "test-small-2" and time.time() < deadline:
            time.sleep(0.1)
        assert c.quote("hi").plan.policy_version == "test-small-2"
        policy.write_text("not = [valid")
        d.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: "reload refused" in d.log.read_text())
        assert c.quote("hi").plan.policy_version == "test-small-2"
    assert "reload refused, keeping the policy and risk model in force" in d.log.read_text()

    # SIGTERM while a request runs: it finishes and is charged, then the process exits 0.
    result = {}

    def long_ask():
        with PonderClient(address, token, timeout=120) as c:
            result["r"] = c.ask("Tell me a story about a lighthouse.", samples=4, thinking_tokens=64, level="thorough")

    t = threading.Thread(target=long_ask)
    t.start()
    wait_until(lambda: reservations(d) == 1)
    assert d.stop(300) == 0
    t.join(60)
    assert result["r"].usage.answer_tokens > 0
    assert _until(sock, "STOPPING=1")[0] == "STOPPING=1"
    assert not (d.state_dir / "endpoint").exists()
    log = d.log.read_text()
    assert "draining: 1 request(s) running" in log and log.rstrip().endswith("stopped")
    sock.close()


def test_a_second_signal_cuts_the_drain_short_and_the_request_is_recorded_as_drained(cli_env):
    d = DaemonProcess(cli_env | {"PONDER_DRAIN_SECONDS": "120"})
    address = d.wait_ready()
    token = (d.state_dir / "local.token").read_text().strip()
    request = ponder_pb2.AskRequest(
        prompt="Write a long story about a lighthouse.", hints=ponder_pb2.Hints(samples=8, thinking_tokens=64)
    )
    with grpc.insecure_channel(address) as ch:
        call = ponder_pb2_grpc.PonderServiceStub(ch).Ask.future(
            request, metadata=(("authorization", f"Bearer {token}"),), timeout=120
        )
        wait_until(lambda: reservations(d) == 1)
        d.proc.send_signal(signal.SIGTERM)
        wait_until(lambda: "draining: 1 request(s) running, up to 120s" in d.log.read_text())
        d.proc.send_signal(signal.SIGTERM)
        with pytest.raises(grpc.RpcError) as err:
            call.result()
    assert d.proc.wait(60) == 0
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "shut down before the request finished" in err.value.details()
    with sqlite3.connect(d.state_dir / "ponder.db") as conn:
        (status, cost, reserved), = conn.execute("SELECT status, cost_micros, reserved_micros FROM spend").fetchall()
        assert conn.execute("SELECT COUNT(*) FROM reservations").fetchone()[0] == 0
    assert status == "drained" and 0 < cost < reserved
    log = d.log.read_text()
    assert "second signal: cutting the drain short" in log and log.rstrip().endswith("stopped")


def test_an_unusable_state_directory_is_one_line_and_exit_code_1(cli_env, tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    r = subprocess.run(
        [str(Path(sys.executable).parent / "ponder"), "serve", "--listen", "127.0.0.1:0", "--state-dir",
         str(blocker / "state"), "--policy-file", str(SMALL_POLICY)],
        env=cli_env, capture_output=True, text=True, timeout=120,
    )
    assert r.returncode == 1
    assert "Traceback" not in r.stderr
    assert f"cannot use the state directory {blocker / 'state'}" in r.stderr
    assert "make it writable by this user, or set state_dir (PONDER_STATE_DIR)" in r.stderr


def test_a_second_daemon_on_the_same_port_fails_with_a_clear_message(served, cli_env, tmp_path):
    address = (served.state_dir / "endpoint").read_text().strip()
    env = cli_env | {"PONDER_STATE_DIR": str(tmp_path / "other")}
    import subprocess
    import sys
    from pathlib import Path

    r = subprocess.run(
        [str(Path(sys.executable).parent / "ponder"), "serve", "--listen", address, "--policy-file", str(SMALL_POLICY)],
        env=env, capture_output=True, text=True, timeout=120,
    )
    assert r.returncode == 1
    assert f"could not listen on {address}" in r.stderr
