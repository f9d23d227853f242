"""Certificate rotation: SIGHUP re-reads the TLS files of a running daemon; a bad file keeps the one in force."""

from __future__ import annotations

import shutil
import signal
import socket
import ssl
import time

import pytest
from cryptography import x509
from pki import CA, Pair

from conftest import DaemonProcess
from ponder.client import PonderClient

pytestmark = pytest.mark.model


def served_serial(address: str, ca: CA) -> int:
    """The serial number of the certificate a new TLS connection to `address` is shown."""
    host, port = address.rsplit(":", 1)
    context = ssl.create_default_context(cafile=str(ca.path))
    context.set_alpn_protocols(["h2"])  # gRPC servers speak HTTP/2 only
    with socket.create_connection((host, int(port)), timeout=30) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            der = tls.getpeercert(binary_form=True)
    return x509.load_der_x509_certificate(der).serial_number


def serial(pair: Pair) -> int:
    return x509.load_pem_x509_certificate(pair.cert.read_bytes()).serial_number


def install(pair: Pair, live: Pair) -> None:
    """Put `pair` where the daemon reads its certificate, each file replaced whole, as a deploy tool does."""
    for source, target in ((pair.key, live.key), (pair.cert, live.cert)):
        shutil.copyfile(source, target.with_suffix(".tmp"))
        target.with_suffix(".tmp").replace(target)


def wait_for_line(d: DaemonProcess, text: str, count: int, timeout: float = 60) -> list[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = [line for line in d.log.read_text().splitlines() if text in line]
        if len(lines) >= count:
            return lines
        if d.proc.poll() is not None:
            raise AssertionError(f"the daemon exited:\n{d.log.read_text()}")
        time.sleep(0.05)
    raise AssertionError(f"no {count}th line {text!r} in the daemon's log:\n{d.log.read_text()}")


def test_sighup_rotates_the_certificate_and_a_bad_one_is_refused(cli_env, tmp_path):
    ca = CA(tmp_path / "ca", "rotation-ca")
    first = ca.issue("ponder-1", dns=("localhost",), ips=("127.0.0.1",))
    second = ca.issue("ponder-2", dns=("localhost",), ips=("127.0.0.1",))
    stranger = ca.issue("ponder-3", dns=("localhost",), ips=("127.0.0.1",))
    live = Pair(tmp_path / "live" / "server.crt", tmp_path / "live" / "server.key")
    live.cert.parent.mkdir()
    install(first, live)

    d = DaemonProcess(cli_env, "--tls-cert", str(live.cert), "--tls-key", str(live.key))
    try:
        address = d.wait_ready().splitlines()[0]
        token = (d.state_dir / "local.token").read_text().strip()
        assert served_serial(address, ca) == serial(first)

        # New files alone change nothing: the daemon reads them when told to.
        install(second, live)
        assert served_serial(address, ca) == serial(first)
        d.proc.send_signal(signal.SIGHUP)
        [line] = wait_for_line(d, "reloaded the TLS certificate", 1)
        assert str(live.cert) in line
        assert served_serial(address, ca) == serial(second)
        with PonderClient(address, token, timeout=60, tls_ca=str(ca.path)) as c:
            assert c.balance().tenant == "local"

        # A certificate whose key is not the one beside it: refused in one line, the second stays.
        shutil.copyfile(stranger.cert, live.cert)
        d.proc.send_signal(signal.SIGHUP)
        [refused] = wait_for_line(d, "TLS reload refused", 1)
        assert "new connections keep the certificate in force" in refused and "check [tls] cert" in refused
        wait_for_line(d, "reloaded: policy", 2)  # the policy reload beside it still happened
        assert served_serial(address, ca) == serial(second)
        with PonderClient(address, token, timeout=60, tls_ca=str(ca.path)) as c:
            assert c.balance().tenant == "local"
    finally:
        assert d.stop() == 0
