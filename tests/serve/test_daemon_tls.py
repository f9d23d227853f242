"""TLS, mutual TLS, client-certificate tenants and unix sockets, through the real daemon.

Certificates come from a CA made for this module at run time (tests/pki.py).
"""

import json
import pathlib
import shutil
import stat
import subprocess
import sys
import tempfile

import grpc
import pytest
from pki import CA

from conftest import SMALL_POLICY, DaemonProcess, DaemonThread, make_settings
from ponder.client import AdminClient, PonderClient, PonderError
from ponder.v1 import ponder_pb2, ponder_pb2_grpc
from ponderd.errors import FailedPrecondition
from ponderd.serve.transport import check_exposure
from ponderd.settings import load_settings

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("pki")
    ca, rogue = CA(d / "ca", "ponder-test-ca"), CA(d / "rogue", "rogue-ca")
    return {
        "ca": ca,
        "rogue": rogue,
        "server": ca.issue("ponder", dns=("localhost",), ips=("127.0.0.1",)),
        "svc-a": ca.issue("svc-a", client=True),  # mapped to tenant "local" by its CN
        "svc-b": ca.issue("svc-b", dns=("svc-b.internal",), client=True),  # not mapped
        "rogue-svc-a": rogue.issue("svc-a", client=True),  # the mapped name, from the wrong CA
    }


@pytest.fixture(scope="module")
def socket_dir():
    # A unix socket path must fit in 108 bytes; pytest's temporary paths may not.
    d = pathlib.Path(tempfile.mkdtemp(prefix="ponder-", dir="/tmp"))
    d.chmod(0o700)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def mtls(tmp_path_factory, pki, socket_dir):
    """A daemon on TCP with mutual TLS (svc-a's CN maps to tenant local) and on a unix socket."""
    server = pki["server"]
    settings = make_settings(
        tmp_path_factory.mktemp("state"),
        listen=f"127.0.0.1:0,unix://{socket_dir}/ponder.sock",
        tls={"cert": server.cert, "key": server.key, "client_ca": pki["ca"].path, "identities": {"svc-a": "local"}},
    )
    d = DaemonThread(settings).start()
    yield d
    d.stop()


@pytest.fixture(autouse=True)
def no_client_environment(monkeypatch):
    for name in ("PONDER_TOKEN", "PONDER_ADMIN_TOKEN", "PONDER_TLS", "PONDER_TLS_CA", "PONDER_TLS_CERT", "PONDER_TLS_KEY"):
        monkeypatch.delenv(name, raising=False)


def client(d, pki, cert=None, token=None, ca=None, cls=PonderClient):
    pair = pki[cert] if cert else None
    return cls(
        d.address, token, timeout=60, tls_ca=str((ca or pki["ca"]).path),
        tls_cert=str(pair.cert) if pair else None, tls_key=str(pair.key) if pair else None,
    )


def code_of(call):
    with pytest.raises(PonderError) as err:
        call()
    return err.value.code, err.value.message


def test_a_client_with_a_certificate_and_a_key_is_served(mtls, pki):
    with client(mtls, pki, "svc-b", mtls.token("local")) as c:
        assert c.balance().tenant == "local"


def test_a_mapped_client_certificate_is_its_tenant_without_a_token(mtls, pki):
    with client(mtls, pki, "svc-a") as c:
        assert c.balance().tenant == "local"
        r = c.ask("What is 2 + 2?")
        assert r.request_id and r.cost > 0
    # A certificate is never an admin: admin methods still need an admin key.
    with client(mtls, pki, "svc-a", cls=AdminClient) as admin:
        code, text = code_of(admin.list_tenants)
        assert code == grpc.StatusCode.PERMISSION_DENIED and "needs an admin key" in text
        # A certificate is called a certificate, not a key.
        assert "client certificate 'svc-a' stands for tenant 'local'" in text and "key of tenant" not in text
    with client(mtls, pki, "svc-a", mtls.token("admin"), cls=AdminClient) as admin:
        assert "local" in [t.name for t in admin.list_tenants()]


def test_an_unmapped_certificate_without_a_token_is_unauthenticated(mtls, pki):
    with client(mtls, pki, "svc-b") as c:
        code, text = code_of(c.balance)
    assert code == grpc.StatusCode.UNAUTHENTICATED and "missing credentials" in text


def test_a_mapped_certificate_refuses_another_tenants_key(mtls, pki):
    with client(mtls, pki, "svc-b", mtls.token("admin"), cls=AdminClient) as admin:
        other = admin.create_tenant("other", 5).token
    with client(mtls, pki, "svc-a", other) as c:
        code, text = code_of(c.balance)
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert "client certificate 'svc-a' is mapped to tenant 'local'" in text


@pytest.mark.parametrize(
    "cert, ca",
    [
        pytest.param("svc-b", "rogue", id="client-trusts-the-wrong-ca"),
        pytest.param(None, "ca", id="no-client-certificate"),
        pytest.param("rogue-svc-a", "ca", id="client-certificate-from-another-ca"),
    ],
)
def test_the_handshake_refuses(mtls, pki, cert, ca):
    with client(mtls, pki, cert, mtls.token("local"), ca=pki[ca]) as c:
        code, _ = code_of(c.balance)
    assert code == grpc.StatusCode.UNAVAILABLE


def test_a_plaintext_client_is_refused_by_a_tls_listener(mtls):
    with grpc.insecure_channel(mtls.address) as ch:
        with pytest.raises(grpc.RpcError) as err:
            ponder_pb2_grpc.PonderServiceStub(ch).GetBalance(ponder_pb2.GetBalanceRequest(), timeout=30)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE


def test_the_unix_socket_serves_same_host_callers(mtls, socket_dir):
    sock = socket_dir / "ponder.sock"
    assert stat.S_IMODE(sock.stat().st_mode) == 0o600
    with PonderClient(f"unix://{sock}", mtls.token("local"), timeout=60) as c:
        assert c.balance().tenant == "local"
    # The local CLI is sent to the socket: it needs no certificate there.
    assert (mtls.settings.state_dir / "endpoint").read_text() == f"unix://{sock}\n"


@pytest.mark.parametrize(
    "listen, tls, ok",
    [
        ("127.0.0.1:50051", {}, True),
        ("[::1]:50051", {}, True),
        ("localhost:50051", {}, True),
        ("unix:///run/ponder/ponder.sock", {}, True),
        ("0.0.0.0:50051", {"insecure": True}, True),
        ("0.0.0.0:50051", {"cert": "/etc/ponder/c.pem", "key": "/etc/ponder/k.pem"}, True),
        ("0.0.0.0:50051", {}, False),
        ("127.0.0.1:1,10.0.0.5:50051", {}, False),
        ("ponder.internal:50051", {}, False),
    ],
)
def test_plaintext_is_refused_only_off_loopback(listen, tls, ok):
    settings = load_settings(env={}, overrides={"listen": listen, "tls": tls, "state_dir": "/tmp/unused"})
    if ok:
        check_exposure(settings)
        return
    with pytest.raises(FailedPrecondition, match="refusing to serve plaintext"):
        check_exposure(settings)


def test_a_network_listen_without_tls_refuses_to_start(cli_env):
    ponderd = pathlib.Path(sys.executable).parent / "ponderd"
    run = subprocess.run(
        [str(ponderd), "--listen", "0.0.0.0:0", "--policy-file", str(SMALL_POLICY)],
        env=cli_env, capture_output=True, text=True, timeout=120,
    )
    assert run.returncode == 1
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, run.stderr
    assert "refusing to serve plaintext on 0.0.0.0:0" in lines[0]
    assert "set [tls] cert and key" in lines[0] and "[tls] insecure = true" in lines[0]


def test_the_cli_finds_a_tls_daemon_through_its_endpoint_file_and_logs_json(cli_env, pki):
    server = pki["server"]
    env = cli_env | {"PONDER_LOG_FORMAT": "json"}
    d = DaemonProcess(env, "--tls-cert", str(server.cert), "--tls-key", str(server.key))
    try:
        d.wait_ready()
        assert (d.state_dir / "endpoint").read_text().splitlines()[1:] == ["tls"]
        ponder = pathlib.Path(sys.executable).parent / "ponder"
        run = subprocess.run(
            [str(ponder), "balance", "--json", "--tls-ca", str(pki["ca"].path)],
            env=cli_env, capture_output=True, text=True, timeout=120,
        )
        assert run.returncode == 0, run.stderr
        assert json.loads(run.stdout)["tenant"] == "local"
        # Without the CA the daemon's certificate cannot be verified: a one-line failure, exit 1.
        run = subprocess.run([str(ponder), "balance"], env=cli_env, capture_output=True, text=True, timeout=120)
        assert run.returncode == 1 and "UNAVAILABLE" in run.stderr
    finally:
        assert d.stop() == 0
    records = [json.loads(line) for line in d.log.read_text().splitlines() if line.strip()]
    access = [r for r in records if r["logger"] == "ponder.access"]
    assert any(r["access"]["method"] == "GetBalance" and r["access"]["status"] == "OK" for r in access)
    assert any("(TLS)" in r["message"] for r in records if "listening on" in r["message"])


def test_settings_name_what_is_missing(tmp_path):
    cases = [
        ({"tls": {"cert": "/c.pem"}}, "set both tls.cert and tls.key"),
        ({"tls": {"client_ca": "/ca.pem"}}, "tls.client_ca needs tls.cert and tls.key"),
        ({"tls": {"cert": "/c", "key": "/k", "identities": {"a": "b"}}}, "tls.identities needs tls.client_ca"),
        ({"socket_mode": "0666"}, "socket_mode must be 0600 or 0660"),
        ({"log_format": "xml"}, "log_format must be text or json"),
    ]
    from ponderd.settings import SettingsError

    for overrides, message in cases:
        with pytest.raises(SettingsError, match=message.replace(".", r"\.")):
            load_settings(env={}, overrides=overrides | {"state_dir": tmp_path})
    env = {"PONDER_TLS_IDENTITIES": "svc-a=search, spiffe://x/y=billing", "PONDER_TLS_CERT": "/c", "PONDER_TLS_KEY": "/k",
           "PONDER_TLS_CLIENT_CA": "/ca"}
    assert load_settings(env=env).tls.identities == {"svc-a": "search", "spiffe://x/y": "billing"}


def test_the_asyncio_client_calls_over_mutual_tls(mtls, pki):
    import asyncio

    from ponder.aio import AsyncPonderClient

    async def main():
        pair = pki["svc-a"]
        async with AsyncPonderClient(
            mtls.address, None, tls_ca=str(pki["ca"].path), tls_cert=str(pair.cert), tls_key=str(pair.key)
        ) as c:
            return await c.balance()

    assert asyncio.run(main()).tenant == "local"


NODE_TLS_CALL = """
const { connect, decodeError } = require("./ponder");
const { ponder, close } = connect({ address: process.argv[1], token: process.argv[2],
  ca: process.argv[3], cert: process.argv[4], key: process.argv[5] });
ponder.GetBalance({}, { deadline: Date.now() + 60e3 }, (err, reply) => {
  close();
  if (err) { console.error(JSON.stringify(decodeError(err))); process.exit(1); }
  console.log(reply.balance.tenant);
});
"""


def test_the_node_client_calls_over_mutual_tls(mtls, pki):
    from conftest import NODE_DIR, node_or_skip

    node = node_or_skip()
    pair = pki["svc-a"]
    run = subprocess.run(
        [node, "-e", NODE_TLS_CALL, mtls.address, mtls.token("local"), str(pki["ca"].path), str(pair.cert), str(pair.key)],
        cwd=NODE_DIR, capture_output=True, text=True, timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "local"
