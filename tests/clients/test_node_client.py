"""The Node.js example client (clients/node, @grpc/grpc-js) against the real daemon: `node --test`."""

import os
import subprocess

import pytest

from conftest import NODE_DIR, node_or_skip

pytestmark = pytest.mark.model


def test_node_client_calls_the_daemon(shared_daemon):
    node = node_or_skip()
    with shared_daemon.admin() as admin:
        tiny = admin.create_tenant("tiny", 0.01).token
    env = {k: v for k, v in os.environ.items() if not k.startswith("PONDER_")}
    env |= {
        "PONDER_TEST_ADDRESS": shared_daemon.address,
        "PONDER_TEST_TOKEN": shared_daemon.token(),
        "PONDER_TEST_TINY_TOKEN": tiny,
    }
    run = subprocess.run([node, "--test"], cwd=NODE_DIR, env=env, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "# fail 0" in run.stdout and "# pass 5" in run.stdout
