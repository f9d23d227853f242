"""The daemon's life as systemd sees it: READY=1, health, SIGHUP reload, SIGTERM drain, exit 0."""

import shutil
import signal
import socket
import threading
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from conftest import SMALL_POLICY, DaemonProcess
from ponder.client import PonderClient

pytestmark = pytest.mark.model


def test_ready_reload_drain_and_clean_exit(cli_env, tmp_path):
    notify = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(notify))
    sock.settimeout(120)
    policy = tmp_path / "policy.toml"
    shutil.copy(SMALL_POLICY, policy)
    env = cli_env | {"NOTIFY_SOCKET": str(notify)}
    d = DaemonProcess(env, "--policy-file", str(policy), program="ponderd")
    address = d.wait_ready()
    assert sock.recv(100) == b"READY=1"
    token = (d.state_dir / "local.token").read_text().strip()
    # It says how to ask it, with the state dir the CLI needs to find it.
    assert f'PONDER_STATE_DIR={d.state_dir} ' in d.log.read_text() and ' ask "What is 17 * 23?"' in d.log.read_text()
    with grpc.insecure_channel(address) as ch:
        health = health_pb2_grpc.HealthStub(ch)
        assert health.Check(health_pb2.HealthCheckRequest(service="ponder.v1.Ponder")).status == health_pb2.HealthCheckResponse.SERVING

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
        time.sleep(1)
        assert c.quote("hi").plan.policy_version == "test-small-2"
    assert "reload refused, keeping what was in force" in d.log.read_text()

    # SIGTERM while a request runs: it finishes and is charged, then the process exits 0.
    result = {}

    def long_ask():
        with PonderClient(address, token, timeout=120) as c:
            result["r"] = c.ask("Tell me a story about a lighthouse.", samples=4, thinking_tokens=64, level="thorough")

    t = threading.Thread(target=long_ask)
    t.start()
    time.sleep(1.0)
    assert d.stop() == 0
    t.join(60)
    assert result["r"].usage.answer_tokens > 0
    assert sock.recv(100) == b"STOPPING=1"
    assert not (d.state_dir / "endpoint").exists()
    log = d.log.read_text()
    assert "draining: 1 request(s) running" in log and log.rstrip().endswith("stopped")
    sock.close()


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
