"""The two distributions' boundary: the client never imports the daemon; the daemon's commands plug into `ponder`."""

import ast
import subprocess
import sys

from conftest import REPO

CLIENT = REPO / "clients" / "python" / "ponder"


def imported_modules(path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module


def test_the_client_package_never_imports_the_daemon():
    offenders = {
        str(path.relative_to(REPO)): name
        for path in CLIENT.rglob("*.py")
        for name in imported_modules(path)
        if name.split(".")[0] in ("ponderd", "llama_cpp", "sklearn", "numpy")
    }
    assert offenders == {}


def test_the_client_distribution_needs_only_grpc_and_protobuf():
    import tomllib

    project = tomllib.loads((REPO / "clients" / "python" / "pyproject.toml").read_text())["project"]
    names = {dep.split(">")[0].split("=")[0].split("<")[0].strip() for dep in project["dependencies"]}
    assert names == {"grpcio", "grpcio-status", "protobuf"}
    daemon = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert "ponder-client==0.1.0" in daemon["dependencies"]
    assert daemon["entry-points"]["ponder.commands"] == {"daemon": "ponderd.cli:add_commands"}


def run(*args):
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=120, cwd=REPO)


def test_daemon_commands_run_as_ponderd_and_inside_ponder():
    checked = run("-m", "ponderd.cli", "policy", "check", "policies/default.toml")
    assert checked.returncode == 0 and "ok (version" in checked.stdout
    assert "--tls-client-ca" in run("-m", "ponder.cli", "serve", "--help").stdout
    assert "--tls-client-ca" in run("-m", "ponderd.cli", "serve", "--help").stdout
    # `ponderd` with flags and no command is the daemon (what the systemd unit runs).
    assert "--tls-client-ca" in run("-m", "ponderd.cli", "--config", "x.toml", "--help").stdout
