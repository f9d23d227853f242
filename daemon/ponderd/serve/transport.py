"""Where and how the daemon listens: TCP with TLS or mutual TLS, unix sockets, and the endpoint file.

`listen` names one address or several, comma-separated: `HOST:PORT` (TCP) or
`unix:///run/ponder/ponder.sock`. With `[tls] cert` and `key` every TCP
listener speaks TLS; with `client_ca` too, only clients holding a certificate
that CA signed can connect at all. A unix socket is plaintext: its file mode
(`socket_mode`) decides who may connect, and callers still send a bearer token.

A plaintext TCP listener on anything but loopback is refused unless `[tls]
insecure = true` says so: a bearer token sent in clear on a network is a
token given away.

The certificate, key and client CA are re-read on SIGHUP (`systemctl reload
ponderd`) without a restart: `TlsCertificates` hands gRPC's dynamic
credentials a new configuration, which every connection made afterwards gets;
connections already open keep theirs. A file that does not load (unreadable,
not PEM, a key that does not match the certificate) keeps the one in force.
"""

from __future__ import annotations

import errno
import hashlib
import ipaddress
import os
import pathlib
import socket
import ssl
import threading
from dataclasses import dataclass
from typing import Any, Iterable

import grpc

from ponderd.errors import FailedPrecondition
from ponderd.settings import Settings, TlsSettings


@dataclass(frozen=True)
class Listener:
    address: str  # as given: HOST:PORT or unix:PATH / unix:///PATH
    path: pathlib.Path | None = None  # set for a unix socket

    @property
    def unix(self) -> bool:
        return self.path is not None

    @property
    def host(self) -> str:
        return self.address.rsplit(":", 1)[0]


def listeners(listen: str) -> list[Listener]:
    out = []
    for address in (a.strip() for a in listen.split(",")):
        if address.startswith("unix:"):
            # unix:///abs/path and unix:relative/path, as gRPC itself reads them
            raw = address[len("unix://"):] if address.startswith("unix://") else address[len("unix:"):]
            out.append(Listener(address, pathlib.Path(raw)))
        else:
            out.append(Listener(address))
    return out


def is_loopback(host: str) -> bool:
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name other than localhost may resolve to anything


def check_exposure(settings: Settings) -> None:
    """Refuse plaintext TCP on a non-loopback address unless the config says so explicitly."""
    if settings.tls.enabled or settings.tls.insecure:
        return
    for lst in listeners(",".join(a for a in (settings.listen, settings.http.listen) if a)):
        if not lst.unix and not is_loopback(lst.host):
            raise FailedPrecondition(
                f"refusing to serve plaintext on {lst.address}: set [tls] cert and key (PONDER_TLS_CERT, "
                "PONDER_TLS_KEY), listen on 127.0.0.1 or unix:///PATH, or set [tls] insecure = true "
                "(PONDER_TLS_INSECURE=true) if something else encrypts the network"
            )


class TlsCertificates:
    """The listener's certificate, key and client CA: read at start, and again by reload()."""

    def __init__(self, tls: TlsSettings) -> None:
        self._tls = tls
        self._lock = threading.Lock()
        self._pending: grpc.ServerCertificateConfiguration | None = None
        self._initial, self.fingerprint = self._read()

    def _read(self) -> tuple[grpc.ServerCertificateConfiguration, str]:
        t = self._tls
        assert t.cert is not None and t.key is not None  # settings require both or neither
        try:
            cert, key = t.cert.read_bytes(), t.key.read_bytes()
            client_ca = t.client_ca.read_bytes() if t.client_ca else None
            # OpenSSL's own check: both parse, and the key is the certificate's.
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(t.cert, t.key)
            if t.client_ca:
                context.load_verify_locations(t.client_ca)
            # A file replaced between the two reads would pair what was never checked together.
            if cert != t.cert.read_bytes() or key != t.key.read_bytes():
                raise FailedPrecondition("a TLS file changed while it was read; reload again once it is written")
        except (OSError, ssl.SSLError) as exc:
            raise FailedPrecondition(f"cannot use the TLS files: {exc}; check [tls] cert, key and client_ca") from None
        config = grpc.ssl_server_certificate_configuration([(key, cert)], root_certificates=client_ca)
        der = ssl.PEM_cert_to_DER_cert(cert.decode("ascii", "replace"))
        return config, "sha256:" + hashlib.sha256(der).hexdigest()[:16]

    def credentials(self) -> grpc.ServerCredentials:
        return grpc.dynamic_ssl_server_credentials(
            self._initial, self._fetch, require_client_authentication=self._tls.client_ca is not None
        )

    def _fetch(self) -> grpc.ServerCertificateConfiguration | None:
        # gRPC asks before each handshake; None keeps the configuration it has.
        with self._lock:
            pending, self._pending = self._pending, None
        return pending

    def reload(self) -> str:
        """Re-read the files; new connections get them. Raises FailedPrecondition (keeping the old) if they do not load."""
        config, fingerprint = self._read()
        with self._lock:
            self._pending, self.fingerprint = config, fingerprint
        return f"{self._tls.cert} ({fingerprint})"


def server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    return TlsCertificates(settings.tls).credentials() if settings.tls.enabled else None


def bind(server: grpc.aio.Server, settings: Settings, certificates: TlsCertificates | None = None) -> tuple[int, list[str]]:
    """Add every listener to `server`; return the first TCP port bound (0: none) and the bound addresses.

    With `certificates`, TCP listeners use them (and follow their reloads).
    """
    check_exposure(settings)
    credentials = certificates.credentials() if certificates is not None else server_credentials(settings)
    first_port, bound = 0, []
    for lst in listeners(settings.listen):
        if lst.unix:
            bound.append(_bind_unix(server, lst, int(settings.socket_mode, 8)))
            continue
        try:
            port = server.add_secure_port(lst.address, credentials) if credentials else server.add_insecure_port(lst.address)
        except RuntimeError:  # grpcio raises where older versions returned 0
            port = 0
        if port == 0:
            raise FailedPrecondition(
                f"could not listen on {lst.address}: {why_unbindable(lst.address)}: "
                "set listen (PONDER_LISTEN, --listen) to a free HOST:PORT"
            )
        first_port = first_port or port
        bound.append(f"{lst.host}:{port}")
    return first_port, bound


def bind_failure(exc: OSError) -> str:
    """Why binding a TCP address failed, in words that point at the fix."""
    if isinstance(exc, socket.gaierror):
        return "its host name does not resolve"
    if exc.errno == errno.EADDRINUSE:
        return "the address is in use (another daemon on this host? stop it, or pick another port)"
    if exc.errno == errno.EACCES:
        return "permission denied (a port below 1024 needs privileges)"
    if exc.errno == errno.EADDRNOTAVAIL:
        return "no network interface of this host has that address"
    return exc.strerror or str(exc)


def why_unbindable(address: str) -> str:
    """gRPC says only that it could not bind: ask the socket layer why (it binds nothing it keeps)."""
    host, _, port = address.rpartition(":")
    try:
        infos = socket.getaddrinfo(host.strip("[]") or None, int(port), type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        for family, kind, proto, _, sockaddr in infos:
            with socket.socket(family, kind, proto) as probe:
                probe.bind(sockaddr)
    except ValueError:
        return "that is not HOST:PORT"
    except OSError as exc:
        return bind_failure(exc)
    return "gRPC could not bind it (is another process using it?)"


def _bind_unix(server: grpc.aio.Server, lst: Listener, mode: int) -> str:
    assert lst.path is not None
    path = lst.path
    # gRPC removes a socket file in its way before binding, which would take the
    # socket from a daemon still serving on it: only a dead one's file may go.
    if path.exists():
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            try:
                probe.connect(str(path))
            except OSError:
                pass
            else:
                raise FailedPrecondition(
                    f"could not listen on {lst.address}: another daemon is serving on it; stop it, "
                    "or set listen (PONDER_LISTEN, --listen) to another path"
                )
    if not path.parent.is_dir():
        raise FailedPrecondition(
            f"could not listen on {lst.address}: no directory {path.parent}; create it (systemd: RuntimeDirectory=ponder)"
        )
    try:
        port = server.add_insecure_port(lst.address)
    except RuntimeError:
        port = 0
    if port == 0 or not path.exists():
        raise FailedPrecondition(f"could not listen on {lst.address}: check that the daemon's user can write {path.parent}")
    # The socket exists with the umask's mode for this instant: a directory only
    # the daemon's user (and group) can enter keeps that instant harmless.
    os.chmod(path, mode)
    return f"unix://{path.resolve()}"


def endpoint_text(settings: Settings, bound: Iterable[str]) -> str:
    """What the CLI on this host reads from the `endpoint` file: where to connect, and how.

    A unix socket is preferred: it needs no certificate. The first line is the
    address; a second line `tls` says that address expects TLS.
    """
    addresses = list(bound)
    local = next((a for a in addresses if a.startswith("unix:")), None)
    if local is not None:
        return local + "\n"
    return addresses[0] + ("\ntls\n" if settings.tls.enabled else "\n")


def peer_identities(context: Any) -> list[str]:
    """The verified client certificate's CN and SANs (empty without mutual TLS)."""
    try:
        auth = context.auth_context() or {}
    except Exception:  # a context without a transport (never in a real server)
        return []
    names = list(auth.get("x509_subject_alternative_name", ())) + list(auth.get("x509_common_name", ()))
    return [n.decode() if isinstance(n, bytes) else str(n) for n in names]
