"""Where a client connects, with which key and TLS settings, and the channel's retry policy.

Shared by the blocking clients (client.py) and the asyncio ones (aio.py): they
differ only in which grpc module opens the channel.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import socket
import ssl
from dataclasses import dataclass
from typing import Any

import grpc

from .errors import ConnectFailed, InvalidArgument, PonderError, Unauthenticated

DEFAULT_ADDRESS = "127.0.0.1:50051"
SERVICES = ("ponder.v1.PonderService", "ponder.v1.AdminService")

# gRPC retries a call that failed with UNAVAILABLE (daemon restarting, draining,
# overloaded, not yet listening), with exponential backoff and jitter, and
# honours the daemon's `grpc-retry-pushback-ms` (the delay its RetryInfo names).
# RESOURCE_EXHAUSTED is retried only when the daemon sends a pushback: a rate
# or concurrency limit (RATE_LIMITED), after the delay its RetryInfo names; an
# exhausted budget carries a negative pushback, which gRPC never retries.
# Nothing else is retried: every other status means the request, key or budget
# must change first. A call is retried only before any reply was received, so a
# stream that has started is never replayed.
RETRY_POLICY = {
    "maxAttempts": 4,
    "initialBackoff": "0.2s",
    "maxBackoff": "5s",
    "backoffMultiplier": 2,
    "retryableStatusCodes": ["UNAVAILABLE", "RESOURCE_EXHAUSTED"],
}


def service_config(retries: bool = True) -> str:
    """The channel's service config (JSON): the retry policy for every Ponder method, or none."""
    config: dict[str, Any] = {"methodConfig": [{"name": [{"service": s} for s in SERVICES]}]}
    if retries:
        config["methodConfig"][0]["retryPolicy"] = RETRY_POLICY
    return json.dumps(config)


def state_dir() -> pathlib.Path:
    if os.environ.get("PONDER_STATE_DIR"):
        return pathlib.Path(os.environ["PONDER_STATE_DIR"]).expanduser()
    base = os.environ.get("XDG_STATE_HOME") or str(pathlib.Path.home() / ".local" / "state")
    return pathlib.Path(base) / "ponder"


def resolve_endpoint(address: str | None = None) -> tuple[str, bool]:
    """Where to connect, and whether the daemon's endpoint file says that address expects TLS."""
    if address:
        return address, False
    if os.environ.get("PONDER_ADDRESS"):
        return os.environ["PONDER_ADDRESS"], False
    endpoint = state_dir() / "endpoint"
    if endpoint.is_file():
        # Line 1: the address; a later line `tls`: it expects TLS (see ponderd/transport.py).
        lines = endpoint.read_text().split()
        if lines:
            return lines[0], "tls" in lines[1:]
    listen = os.environ.get("PONDER_LISTEN") or DEFAULT_ADDRESS
    return listen.split(",")[0].strip(), False


def resolve_address(address: str | None = None) -> str:
    return resolve_endpoint(address)[0]


def resolve_token(token: str | None, env: str, filename: str, optional: bool = False) -> str | None:
    """The key to send; None only when `optional` (a client certificate may stand in) and none is given."""
    if token:
        return token
    if os.environ.get(env):
        return os.environ[env]
    if optional:
        return None
    path = state_dir() / filename
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        raise Unauthenticated(
            grpc.StatusCode.UNAUTHENTICATED,
            f"no credentials: pass a token, set {env}, or run on the daemon's host where {path} exists",
        ) from None
    except PermissionError:
        raise Unauthenticated(
            grpc.StatusCode.UNAUTHENTICATED, f"cannot read {path}: it is readable by its owner only"
        ) from None


def _read(path: str, what: str) -> bytes:
    try:
        return pathlib.Path(path).expanduser().read_bytes()
    except OSError as exc:
        raise InvalidArgument(grpc.StatusCode.INVALID_ARGUMENT, f"cannot read the {what} {path}: {exc.strerror}") from None


def _truthy(value: str | None) -> bool:
    return (value or "").lower() in ("1", "true", "yes", "on")


@dataclass(frozen=True)
class Target:
    """What opening a channel needs: the address, TLS credentials (None: plaintext) and channel options."""

    address: str
    credentials: grpc.ChannelCredentials | None
    options: tuple[tuple[str, Any], ...]
    # With a client certificate, the local token files are not a fallback: the certificate is the credential.
    cert_auth: bool
    # The name verified in the daemon's certificate when it is not the address's host (TLS only).
    server_name: str | None = None

    @property
    def tls(self) -> bool:
        return self.credentials is not None


def target(
    address: str | None = None,
    *,
    tls: bool | None = None,
    tls_ca: str | None = None,
    tls_cert: str | None = None,
    tls_key: str | None = None,
    tls_server_name: str | None = None,
    retries: bool = True,
) -> Target:
    """Resolve address and TLS from the arguments, PONDER_* variables and the endpoint file."""
    env = os.environ
    address, endpoint_tls = resolve_endpoint(address)
    ca = tls_ca or env.get("PONDER_TLS_CA")
    cert = tls_cert or env.get("PONDER_TLS_CERT")
    key = tls_key or env.get("PONDER_TLS_KEY")
    server_name = tls_server_name or env.get("PONDER_TLS_SERVER_NAME")
    on = tls if tls is not None else (_truthy(env.get("PONDER_TLS")) or endpoint_tls)
    if bool(cert) != bool(key):
        raise InvalidArgument(
            grpc.StatusCode.INVALID_ARGUMENT,
            "give both a client certificate and its key (--tls-cert and --tls-key, or PONDER_TLS_CERT and PONDER_TLS_KEY)",
        )
    options: list[tuple[str, Any]] = [
        ("grpc.enable_retries", 1 if retries else 0),
        ("grpc.service_config", service_config(retries)),
    ]
    credentials = None
    # A unix socket is plaintext: its file mode is its access control.
    if not address.startswith("unix:") and (on or ca or cert):
        credentials = grpc.ssl_channel_credentials(
            root_certificates=_read(ca, "CA bundle") if ca else None,
            private_key=_read(key, "client key") if key else None,
            certificate_chain=_read(cert, "client certificate") if cert else None,
        )
        if server_name:
            options.append(("grpc.ssl_target_name_override", server_name))
    return Target(address, credentials, tuple(options), bool(cert), server_name if credentials else None)


def open_channel(t: Target) -> grpc.Channel:
    if t.credentials is None:
        return grpc.insecure_channel(t.address, options=t.options)
    return grpc.secure_channel(t.address, t.credentials, options=t.options)


def open_aio_channel(t: Target) -> grpc.aio.Channel:
    if t.credentials is None:
        return grpc.aio.insecure_channel(t.address, options=t.options)
    return grpc.aio.secure_channel(t.address, t.credentials, options=t.options)


# Why a connection failed. gRPC's UNAVAILABLE text carries the reason: the
# socket's error, OpenSSL's handshake error, or "Socket closed" when the
# daemon hung up after (or instead of) the handshake. A mutual-TLS daemon
# that refuses a client's certificate and a TLS daemon that hears a plaintext
# client both just close, so those cases are told apart by what this client
# sent, and the plaintext one is confirmed by trying a TLS handshake.
_CLOSED = re.compile(r"socket closed|connection reset|end of tcp stream|broken pipe|connection aborted", re.I)
_UNTRUSTED = re.compile(r"certificate[_ ]verify[_ ]failed(?::\s*([^:]+))?", re.I)
_NAME = re.compile(r"hostname verification|no match found for server name|peer name .* is not in peer certificate", re.I)
_PLAINTEXT = re.compile(r"wrong[_ ]version[_ ]number|packet[_ ]length[_ ]too[_ ]long|http[_ ]request|record[_ ]layer", re.I)
_REFUSED = re.compile(r"connection refused|connect failed: .*no such file or directory", re.I)
_UNRESOLVED = re.compile(r"errors resolving|dns resolution failed|domain name not found|name or service not known", re.I)

TLS_FLAGS = "--tls-ca FILE (PONDER_TLS_CA; tls_ca= in Python)"
CERT_FLAGS = "--tls-cert FILE and --tls-key FILE (PONDER_TLS_CERT, PONDER_TLS_KEY; tls_cert=, tls_key= in Python)"


def explain_unreachable(err: PonderError, t: Target) -> PonderError:
    """`err` as a ConnectFailed naming its cause and fix, when gRPC says the call never reached the daemon."""
    if err.code != grpc.StatusCode.UNAVAILABLE or err.details or isinstance(err, ConnectFailed):
        return err  # the daemon itself answered (draining, storage): its message says what to do
    cause, fix = _diagnose(err.message, t)
    if not cause:
        return err
    return ConnectFailed(f"cannot connect to {t.address}: {fix}", cause, err.message)


def _diagnose(text: str, t: Target) -> tuple[str, str]:
    if _REFUSED.search(text):
        return "not_listening", (
            "nothing listens there: is the daemon running? start it with `ponder serve` (or `make run`), "
            "or pass its address with --address (PONDER_ADDRESS)"
        )
    if _UNRESOLVED.search(text):
        return "unknown_host", "its host name does not resolve: check --address (PONDER_ADDRESS)"
    if not t.tls:
        if _CLOSED.search(text) and _speaks_tls(t.address):
            return "tls_expected", (
                f"the daemon speaks TLS and this client sent plaintext: turn TLS on with {TLS_FLAGS}, the CA that "
                "signed the daemon's certificate, or PONDER_TLS=true if the system's roots trust it"
            )
        return "", ""
    untrusted = _UNTRUSTED.search(text)
    if untrusted:
        why = (untrusted.group(1) or "").strip()
        return "tls_untrusted", (
            f"the daemon's certificate is not trusted{f' ({why})' if why else ''}: pass the CA bundle that signed it "
            f"with {TLS_FLAGS}" + ("; or renew the daemon's certificate" if "expired" in why else "")
        )
    if _NAME.search(text):
        name = f"{t.server_name!r} (--tls-server-name)" if t.server_name else repr(_host(t.address))
        return "tls_name_mismatch", (
            f"the daemon's certificate does not name {name}: connect to a name the certificate holds (--address), "
            "or pass one of its names with --tls-server-name NAME (PONDER_TLS_SERVER_NAME; tls_server_name= in Python)"
        )
    if _PLAINTEXT.search(text):
        return "plaintext_expected", (
            "the daemon speaks plaintext and this client started TLS: drop --tls-ca, --tls-cert, --tls-key and "
            "--tls-server-name (and PONDER_TLS, PONDER_TLS_*), or turn TLS on at the daemon ([tls] cert and key)"
        )
    if _CLOSED.search(text):
        if not t.cert_auth:
            return "tls_client_cert_missing", (
                "the daemon closed the connection after the TLS handshake: it requires a client certificate "
                f"(mutual TLS) and this client sent none: pass {CERT_FLAGS}"
            )
        return "tls_client_cert_refused", (
            "the daemon refused this client's certificate (--tls-cert): it must be signed by the CA in the daemon's "
            "[tls] client_ca, be unexpired and allow client authentication; pass a certificate it accepts with "
            f"{CERT_FLAGS}"
        )
    return "", ""


def _host(address: str) -> str:
    return address.rsplit(":", 1)[0].strip("[]") if ":" in address else address


def _speaks_tls(address: str, timeout: float = 2.0) -> bool:
    """Whether a TLS handshake with `address` succeeds (certificate unchecked: this only asks what it speaks)."""
    if address.startswith("unix:"):
        return False
    target = address.split("://", 1)[-1]  # dns:///host:port, ipv4:host:port
    target = target.split(":", 1)[1] if target.startswith(("ipv4:", "ipv6:")) else target
    host, _, port = target.rpartition(":")
    if not port.isdigit():
        return False
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["h2"])
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout) as raw:
            with context.wrap_socket(raw, server_hostname=host.strip("[]") or None):
                return True
    except (OSError, ValueError):  # ssl.SSLError is an OSError
        return False
