"""The client distribution installs alone, offline, into a fresh virtualenv, and calls a real daemon."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

# `make setup` fills it with wheels of grpcio, grpcio-status, protobuf (and theirs).
WHEELHOUSE = Path(os.environ.get("PONDER_CLIENT_WHEELHOUSE", Path.home() / ".cache" / "ponder" / "wheels" / "client"))

SCRIPT = """
import importlib.util, json, sys
from importlib.metadata import distributions
from ponder.client import PonderClient
from ponder.aio import AsyncPonderClient
assert importlib.util.find_spec("ponderd") is None, "ponderd is importable"
print(json.dumps(sorted(d.metadata["Name"].lower().replace("_", "-") for d in distributions())))
with PonderClient(sys.argv[1], sys.argv[2]) as c:
    print(c.balance().tenant)
    print(c.quote("What is 2 + 2?").plan.level)
"""


@pytest.fixture(scope="module")
def client_venv(tmp_path_factory):
    if not any(WHEELHOUSE.glob("grpcio-*.whl")):
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"no wheels in {WHEELHOUSE}: `make setup` downloads them")
        pytest.skip(f"no wheels in {WHEELHOUSE}: run `make setup`")
    root = tmp_path_factory.mktemp("client-alone")
    dist = root / "dist"
    # Built from a copy, so the build leaves no egg-info in the checkout; with this environment's
    # setuptools. The new venv then installs it with no index at all.
    source = shutil.copytree(REPO / "clients" / "python", root / "src", ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", str(dist), str(source)],
        check=True, timeout=300, cwd=root, env=clean_env(),
    )
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300, env=clean_env())
    subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--no-index",
         "--find-links", str(WHEELHOUSE), "--find-links", str(dist), "ponder-client"],
        check=True, timeout=300, env=clean_env(), cwd=root,
    )
    return venv


def clean_env():
    """No PYTHONPATH (it points at this checkout's daemon) and none of the developer's PONDER_* settings."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH" and not k.startswith("PONDER_")}


def test_the_client_alone_has_no_daemon_and_calls_a_real_one(client_venv, shared_daemon):
    run = subprocess.run(
        [str(client_venv / "bin" / "python"), "-c", SCRIPT, shared_daemon.address, shared_daemon.token()],
        capture_output=True, text=True, timeout=120, env=clean_env(), cwd=client_venv,
    )
    assert run.returncode == 0, run.stderr
    installed, tenant, level = run.stdout.splitlines()
    assert set(json.loads(installed)) - {"pip", "setuptools"} == {
        "ponder-client", "grpcio", "grpcio-status", "protobuf", "googleapis-common-protos", "typing-extensions",
    }
    assert tenant == "local" and level


def test_the_client_cli_asks_and_says_daemon_commands_need_ponderd(client_venv, shared_daemon):
    ponder = str(client_venv / "bin" / "ponder")
    run = subprocess.run(
        [ponder, "balance", "--address", shared_daemon.address, "--token", shared_daemon.token()],
        capture_output=True, text=True, timeout=120, env=clean_env(), cwd=client_venv,
    )
    assert run.returncode == 0 and run.stdout.startswith("local: "), run.stderr
    serve = subprocess.run([ponder, "serve"], capture_output=True, text=True, timeout=60, env=clean_env(), cwd=client_venv)
    assert serve.returncode == 2 and "pip install ponderd" in serve.stderr
