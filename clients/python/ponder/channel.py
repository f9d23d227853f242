"""Where a client connects, with which key and TLS settings, and the channel's retry policy.

Shared by the blocking clients (client.py) and the asyncio ones (aio.py): they
differ only in which grpc module opens the channel.
"""

from __future__ import annotations

import json
import os
import pathlib
from dataclasses import dataclass
from typing import Any

import grpc

from .errors import InvalidArgument, Unauthenticated

DEFAULT_ADDRESS = "127.0.0.1:50051"
SERVICES = ("ponder.v1.PonderService", "ponder.v1.AdminService")

# gRPC retries a call that failed with UNAVAILABLE (daemon restarting, draining,
# overloaded, not yet listening), with exponential backoff and jitter, and
# honours the daemon's `grpc-retry-pushback-ms` (the delay its RetryInfo names).
# Nothing else is retried: every other status means the request, key or budget
# must change first. A call is retried only before any reply was received, so a
# stream that has started is never replayed.
RETRY_POLICY = {
    "maxAttempts": 4,
    "initialBackoff": "0.2s",
    "maxBackoff": "5s",
    "backoffMultiplier": 2,
    "retryableStatusCodes": ["UNAVAILABLE"],
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
    return Target(address, credentials, tuple(options), bool(cert))


def open_channel(t: Target) -> grpc.Channel:
    if t.credentials is None:
        return grpc.insecure_channel(t.address, options=t.options)
    return grpc.secure_channel(t.address, t.credentials, options=t.options)


def open_aio_channel(t: Target) -> grpc.aio.Channel:
    if t.credentials is None:
        return grpc.aio.insecure_channel(t.address, options=t.options)
    return grpc.aio.secure_channel(t.address, t.credentials, options=t.options)
