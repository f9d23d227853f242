"""Where and how the daemon listens: TCP with TLS or mutual TLS, unix sockets, and the endpoint file.

`listen` names one address or several, comma-separated: `HOST:PORT` (TCP) or
`unix:///run/ponder/ponder.sock`. With `[tls] cert` and `key` every TCP
listener speaks TLS; with `client_ca` too, only clients holding a certificate
that CA signed can connect at all. A unix socket is plaintext: its file mode
(`socket_mode`) decides who may connect, and callers still send a bearer token.

A plaintext TCP listener on anything but loopback is refused unless `[tls]
insecure = true` says so: a bearer token sent in clear on a network is a
token given away.
"""

from __future__ import annotations

import ipaddress
import os
import pathlib
import socket
from dataclasses import dataclass
from typing import Any, Iterable

import grpc

from .errors import FailedPrecondition
from .settings import Settings


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
    for lst in listeners(settings.listen):
        if not lst.unix and not is_loopback(lst.host):
            raise FailedPrecondition(
                f"refusing to serve plaintext on {lst.address}: set [tls] cert and key (PONDER_TLS_CERT, "
                "PONDER_TLS_KEY), listen on 127.0.0.1 or unix:///PATH, or set [tls] insecure = true "
                "(PONDER_TLS_INSECURE=true) if something else encrypts the network"
            )


def server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    t = settings.tls
    if not t.enabled:
        return None
    assert t.cert is not None and t.key is not None  # settings require both or neither
    try:
        pair = (t.key.read_bytes(), t.cert.read_bytes())
        client_ca = t.client_ca.read_bytes() if t.client_ca else None
    except OSError as exc:
        raise FailedPrecondition(f"cannot read a TLS file: {exc}; check [tls] cert, key and client_ca") from None
    return grpc.ssl_server_credentials([pair], root_certificates=client_ca, require_client_auth=client_ca is not None)


def bind(server: grpc.aio.Server, settings: Settings) -> tuple[int, list[str]]:
    """Add every listener to `server`; return the first TCP port bound (0: none) and the bound addresses."""
    check_exposure(settings)
    credentials = server_credentials(settings)
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
            raise OSError(
                f"could not listen on {lst.address}: is another process using it? "
                "set listen (PONDER_LISTEN) to a free HOST:PORT"
            )
        first_port = first_port or port
        bound.append(f"{lst.host}:{port}")
    return first_port, bound


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
                raise OSError(f"could not listen on {lst.address}: another daemon is serving on it; stop it or set another path")
    if not path.parent.is_dir():
        raise OSError(f"could not listen on {lst.address}: no directory {path.parent}; create it (systemd: RuntimeDirectory=ponder)")
    try:
        port = server.add_insecure_port(lst.address)
    except RuntimeError:
        port = 0
    if port == 0 or not path.exists():
        raise OSError(f"could not listen on {lst.address}: check that the daemon's user can write {path.parent}")
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
