"""A call that never reaches the daemon says why, and what fixes it: real certificates, real daemons, the real CLI.

Each TLS failure a client can meet (an untrusted server certificate, a name
the certificate does not hold, a client certificate missing or refused,
plaintext against a TLS port and TLS against a plaintext one) is its own
`ConnectFailed.cause` with a message naming the flag or setting to change;
"is the daemon running?" is said only when nothing listens.
"""

import socket
import subprocess
import sys
from pathlib import Path

import pytest
from pki import CA

from conftest import DaemonThread, make_settings
from ponder import errors
from ponder.client import PonderClient

pytestmark = pytest.mark.model

PONDER = str(Path(sys.executable).parent / "ponder")


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("pki")
    ca, rogue = CA(d / "ca", "ponder-test-ca"), CA(d / "rogue", "rogue-ca")
    return {
        "ca": ca.path,
        "rogue": rogue.path,
        "server": ca.issue("ponder", dns=("localhost",), ips=("127.0.0.1",)),
        "svc-a": ca.issue("svc-a", client=True),
        "rogue-svc-a": rogue.issue("svc-a", client=True),  # the right name, signed by a CA the daemon does not trust
    }


@pytest.fixture(scope="module")
def mtls(tmp_path_factory, pki):
    """A daemon that speaks only mutual TLS: its certificate is signed by `ca`, and so must the client's be."""
    server = pki["server"]
    tls = {"cert": server.cert, "key": server.key, "client_ca": pki["ca"], "identities": {"svc-a": "local"}}
    d = DaemonThread(make_settings(tmp_path_factory.mktemp("mtls"), tls=tls)).start()
    yield d
    d.stop()


@pytest.fixture(scope="module")
def plaintext(tmp_path_factory):
    d = DaemonThread(make_settings(tmp_path_factory.mktemp("plain"))).start()
    yield d
    d.stop()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# (case, daemon, TLS flags as the CLI takes them, expected cause, what the message must tell the user to change)
CASES = [
    ("untrusted-server-certificate", "mtls", {"tls_ca": "rogue"}, "tls_untrusted", "--tls-ca"),
    ("server-name-mismatch", "mtls", {"tls_ca": "ca", "tls_server_name": "ponder.example.org"},
     "tls_name_mismatch", "--tls-server-name"),
    ("client-certificate-missing", "mtls", {"tls_ca": "ca"}, "tls_client_cert_missing", "--tls-cert"),
    ("client-certificate-refused", "mtls", {"tls_ca": "ca", "tls_cert": "rogue-svc-a"},
     "tls_client_cert_refused", "[tls] client_ca"),
    ("plaintext-client-tls-port", "mtls", {}, "tls_expected", "--tls-ca"),
    ("tls-client-plaintext-port", "plaintext", {"tls_ca": "ca"}, "plaintext_expected", "drop --tls-ca"),
]


def tls_kwargs(pki, flags):
    out = {}
    for name, value in flags.items():
        if name == "tls_cert":
            out["tls_cert"], out["tls_key"] = str(pki[value].cert), str(pki[value].key)
        elif name == "tls_ca":
            out["tls_ca"] = str(pki[value])
        else:
            out[name] = value
    return out


def cli_flags(kwargs):
    return [part for name, value in kwargs.items() for part in ("--" + name.replace("_", "-"), value)]


@pytest.mark.parametrize("case, which, flags, cause, fix", CASES, ids=[c[0] for c in CASES])
def test_each_tls_failure_names_its_cause_and_fix(request, pki, cli_env, case, which, flags, cause, fix):
    d = request.getfixturevalue(which)
    kwargs = tls_kwargs(pki, flags)
    with PonderClient(d.address, d.token("local"), timeout=30, **kwargs) as c, pytest.raises(errors.PonderError) as err:
        c.balance()
    e = err.value
    assert isinstance(e, errors.ConnectFailed) and isinstance(e, errors.Unavailable), repr(e)
    assert e.cause == cause, f"{case}: {e.message} (gRPC: {e.grpc_details})"
    assert e.message.startswith(f"cannot connect to {d.address}: ") and fix in e.message
    assert "is the daemon running" not in e.message

    run = subprocess.run(
        [PONDER, "balance", "--address", d.address, "--token", d.token("local"), *cli_flags(kwargs)],
        env=cli_env, capture_output=True, text=True, timeout=120,
    )
    # That one line, and nothing from gRPC's C core (see the test below).
    assert run.returncode == 1
    assert run.stderr == f"ponder: UNAVAILABLE: {e.message}\n"


def test_a_mapped_client_certificate_gets_through(mtls, pki):
    """The same daemon, with everything right: the failures above are the flags', not the daemon's."""
    kwargs = tls_kwargs(pki, {"tls_ca": "ca", "tls_cert": "svc-a"})
    with PonderClient(mtls.address, None, timeout=30, **kwargs) as c:
        assert c.balance().tenant == "local"


def test_only_a_refused_connection_asks_whether_the_daemon_runs(cli_env):
    address = f"127.0.0.1:{free_port()}"
    with PonderClient(address, "pnd_x_y", timeout=30) as c, pytest.raises(errors.ConnectFailed) as err:
        c.balance()
    assert err.value.cause == "not_listening" and "Connection refused" in err.value.grpc_details
    assert "is the daemon running? start it with `ponder serve`" in err.value.message
    run = subprocess.run([PONDER, "balance", "--address", address, "--token", "pnd_x_y"],
                         env=cli_env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 1 and run.stderr == f"ponder: UNAVAILABLE: {err.value.message}\n"


def test_the_asyncio_client_names_the_cause_too(mtls, pki):
    import asyncio

    from ponder.aio import AsyncPonderClient

    async def main():
        async with AsyncPonderClient(mtls.address, mtls.token("local"), tls_ca=str(pki["rogue"])) as c:
            await c.balance()

    with pytest.raises(errors.ConnectFailed) as err:
        asyncio.run(main())
    assert err.value.cause == "tls_untrusted" and "--tls-ca" in err.value.message


def test_grpc_core_log_lines_reach_stderr_only_when_asked_for(plaintext, pki, cli_env):
    """A TLS client against a plaintext port: gRPC's C core logs the failed handshake (ssl_transport_security.cc)."""
    call = ["balance", "--address", plaintext.address, "--token", plaintext.token("local"), "--tls-ca", str(pki["ca"])]

    def run(*args, **env):
        r = subprocess.run([*args], env=cli_env | env, capture_output=True, text=True, timeout=120)
        assert r.returncode == 1, r.stderr
        return r.stderr

    quiet = run(PONDER, *call)
    assert quiet.startswith("ponder: UNAVAILABLE: cannot connect to ") and quiet.count("\n") == 1, quiet
    assert run(sys.executable, "-m", "ponder", *call) == quiet  # `python -m ponder` is the same CLI
    # The user's GRPC_VERBOSITY is theirs; --verbose (before or after the command) shows gRPC's lines too.
    for loud in (run(PONDER, *call, GRPC_VERBOSITY="INFO"), run(PONDER, "--verbose", *call), run(PONDER, *call, "--verbose")):
        assert "ssl_transport_security" in loud and "Handshake failed" in loud, loud
        assert quiet.strip() in loud.splitlines()
    verbose = run(PONDER, "--verbose", *call)
    assert "ponder: gRPC said: failed to connect to all addresses" in verbose and "WRONG_VERSION_NUMBER" in verbose
