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


# A program a user writes against the installed client; mypy --strict must pass it.
TYPED = """
from ponder.aio import AsyncPonderClient
from ponder.client import AdminClient, PonderClient
from ponder.v1 import admin_pb2, ponder_pb2


def ask(address: str, token: str) -> float:
    with PonderClient(address, token, timeout=30.0, tls_ca=None, retries=True) as c:
        r: ponder_pb2.AskResponse = c.ask("What is 2 + 2?", samples=1, severity_floor="low", check={"number": 4},
                                          answer_format="number", idempotency_key="k1",
                                          temperature=0.0, top_p=0.9)
        cost: float = r.cost + c.quote("Is 91 prime?", level="fast").plan.worst_case_cost
        for event in c.ask_stream("Say hi.", thinking_tokens=0, timeout=60.0):
            if event.WhichOneof("event") == "result":
                cost += event.result.cost
        remaining: float = c.balance().remaining
        feedback_id: str = c.feedback(r.request_id, correct=True, true_severity="medium")
    with AdminClient(address) as admin:
        tenants: list[admin_pb2.Tenant] = admin.list_tenants()
        created = admin.create_tenant("acme", 5.0, window="week")
        token_shown_once: str = created.token
        admin.revoke_key(created.key_id)
    return cost + remaining + len(tenants) + len(feedback_id) + len(token_shown_once)


async def ask_async(address: str) -> str:
    async with AsyncPonderClient(address) as c:
        r = await c.ask("What is 2 + 2?", seed=7)
        text: str = r.text
        async for event in c.ask_stream("Say hi.", samples=1):
            text += event.request_id
        return text + str((await c.balance()).remaining)
"""

# Each line is a mistake mypy must catch (with the message it must give).
WRONG = {
    'PonderClient().ask("x", samples="3")': 'Argument "samples" to "ask"',
    'PonderClient().ask("x", severity_floor="urgent")': 'Argument "severity_floor" to "ask"',
    'PonderClient().ask("x", sampels=3)': 'Unexpected keyword argument "sampels"',
    'cost: str = PonderClient().ask("x").cost': 'Incompatible types in assignment',
    'PonderClient().feedback("id", true_severity="huge")': 'Argument "true_severity" to "feedback"',
    'PonderClient(tls_sa="ca.pem")': 'Unexpected keyword argument "tls_sa"',
}


def mypy_strict(venv: Path, program: str, where: Path) -> subprocess.CompletedProcess[str]:
    source = where / "program.py"
    source.write_text(program)
    # The installed client only, as a user's project sees it: no config, no path into this checkout.
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--config-file=", "--no-incremental",
         "--python-executable", str(venv / "bin" / "python"), str(source)],
        capture_output=True, text=True, timeout=300, cwd=where, env=clean_env(),
    )


def test_every_shared_method_is_typed_as_awaited_in_the_asyncio_clients():
    """A method added to PonderMethods or AdminMethods is declared in the asyncio client too (`awaited`)."""
    from ponder.aio import AsyncAdminClient, AsyncPonderClient
    from ponder.client import AdminMethods, PonderMethods

    for shared, aio in ((PonderMethods, AsyncPonderClient), (AdminMethods, AsyncAdminClient)):
        public = {name for name in vars(shared) if not name.startswith("_") and callable(vars(shared)[name])}
        assert public - set(vars(aio)) == set(), f"add `name = awaited({shared.__name__}.name)` to {aio.__name__}"


def test_the_installed_client_is_typed_for_mypy_strict(client_venv, tmp_path):
    ok = mypy_strict(client_venv, TYPED, tmp_path)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    wrong = mypy_strict(client_venv, "from ponder.client import PonderClient\n" + "\n".join(WRONG) + "\n", tmp_path)
    assert wrong.returncode == 1
    for n, (line, message) in enumerate(WRONG.items(), 2):
        assert any(f"program.py:{n}: error: {message}" in out for out in wrong.stdout.splitlines()), (line, wrong.stdout)


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
