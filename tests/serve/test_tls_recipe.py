"""docs/operations.md's openssl recipe works: its commands, run as written in an empty directory, give a CA, a
server and a client certificate that a real daemon serves mutual TLS with, and the real CLI connects with."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from conftest import REPO, DaemonThread, make_settings

pytestmark = pytest.mark.model


def recipe() -> str:
    text = (REPO / "docs" / "operations.md").read_text()
    block = text.split("<!-- openssl-recipe -->", 1)[1].split("<!-- /openssl-recipe -->", 1)[0]
    return block.split("```sh\n", 1)[1].split("```", 1)[0]


def test_the_openssl_recipe_makes_certificates_a_daemon_serves_mutual_tls_with(tmp_path, cli_env):
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command")
    pki = tmp_path / "pki"
    pki.mkdir()
    run = subprocess.run(["bash", "-euo", "pipefail", "-c", recipe()], cwd=pki, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    for name in ("ca.pem", "server.crt", "server.key", "client.crt", "client.key"):
        assert (pki / name).stat().st_size > 0, name
    assert (pki / "client.key").stat().st_mode & 0o077 == 0
    settings = make_settings(
        tmp_path / "state",
        tls={"cert": pki / "server.crt", "key": pki / "server.key", "client_ca": pki / "ca.pem",
             "identities": {"search-api.svc.internal": "local"}},
    )
    d = DaemonThread(settings).start()
    try:
        tls = ["--tls-ca", str(pki / "ca.pem"), "--tls-cert", str(pki / "client.crt"), "--tls-key", str(pki / "client.key")]
        for host in ("127.0.0.1", "localhost"):  # the server's SANs: an address and a name
            done = subprocess.run(
                [sys.executable, "-m", "ponder", "--address", f"{host}:{d.server.port}", *tls, "balance"],
                env=cli_env, capture_output=True, text=True, timeout=120,
            )
            assert done.returncode == 0, done.stderr
            assert "local" in done.stdout
        # Without the client certificate the handshake is refused, and the CLI says which flag is missing.
        done = subprocess.run(
            [sys.executable, "-m", "ponder", "--address", f"127.0.0.1:{d.server.port}", "--tls-ca", str(pki / "ca.pem"),
             "--token", d.token(), "balance"],
            env=cli_env, capture_output=True, text=True, timeout=120,
        )
        assert done.returncode == 1 and "--tls-cert" in done.stderr, done.stderr
    finally:
        d.stop()
