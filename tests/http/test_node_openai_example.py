"""docs/http.md's `openai` Node SDK example, taken from the doc itself and run with `node` against a live daemon.

The SDK is the real `openai` npm package, which `make tools` installs into tools/openai-node
(pinned by its package-lock.json). The example reads the quickstart key from
~/.local/state/ponder/local.token: the daemon here keeps its state in a home folder of the
test's own (HOME for node), so the key file is the one the daemon wrote, as on a real host.
Only the base URL is changed, to the test daemon's port.
"""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import subprocess

import pytest

from conftest import REPO, DaemonThread, make_settings

pytestmark = pytest.mark.model

DOC = REPO / "docs" / "http.md"
SDK = REPO / "tools" / "openai-node" / "node_modules"
DOC_URL = "http://127.0.0.1:8080/v1"  # `make run`'s HTTP address, which the doc's examples use


def node_example() -> str:
    found = re.search(r"The `openai` Node SDK[^\n]*\n(?:[^\n]+\n)*?\s*```js\n(.*?)```", DOC.read_text(), re.S)
    assert found, "docs/http.md has no ```js block after 'The `openai` Node SDK'"
    return found.group(1)


def node_and_sdk_or_skip() -> str:
    node = shutil.which("node")
    if node is None or not (SDK / "openai" / "package.json").is_file():
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("node or tools/openai-node/node_modules is missing: `make tools` runs npm ci there")
        pytest.skip("needs node and the openai Node SDK (`make tools`: npm ci in tools/openai-node)")
    return node


def test_the_doc_example_is_an_es_module_for_make_runs_address():
    code = node_example()
    assert 'import OpenAI from "openai";' in code and DOC_URL in code
    assert ".local/state/ponder/local.token" in code


def test_the_node_example_in_the_doc_runs_against_a_live_daemon(tmp_path):
    node = node_and_sdk_or_skip()
    home = tmp_path / "home"
    state = home / ".local" / "state" / "ponder"
    d = DaemonThread(make_settings(state, http={"listen": "127.0.0.1:0"})).start()
    try:
        assert (state / "local.token").is_file()  # the quickstart key the example reads
        run_dir = tmp_path / "run"
        run_dir.mkdir()
        (run_dir / "node_modules").symlink_to(SDK, target_is_directory=True)
        code = node_example()
        (run_dir / "example.mjs").write_text(code.replace(DOC_URL, f"{d.server.http.address}/v1"))
        env = {"PATH": os.environ.get("PATH", ""), "HOME": str(home)}
        run = subprocess.run([node, "example.mjs"], cwd=run_dir, env=env, capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stdout + run.stderr
        # console.log(answer, r.ponder.cost): the answer's text, then the charge.
        printed = run.stdout.strip()
        cost = float(printed.rsplit(maxsplit=1)[-1])
        with sqlite3.connect(d.settings.database) as conn:
            rows = conn.execute("SELECT status, cost_micros FROM spend WHERE tenant = 'local'").fetchall()
        assert rows == [("ok", round(cost * 1e6))] and cost > 0
    finally:
        d.stop()
