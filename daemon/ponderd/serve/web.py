"""Wiring of the OpenAI-compatible HTTP API (ponderd/http/) to this daemon: the same Asking, keys, table and logs as gRPC."""

from __future__ import annotations

from typing import Callable

from ponderd.errors import PonderError
from ponderd.http.app import Backend, create_app
from ponderd.http.server import HttpServer
from ponderd.serve import auth, boundary, logs
from ponderd.serve.app import Daemon
from ponderd.serve.asking import Asking


def status_name(exc: PonderError) -> str:
    """The gRPC status code name boundary.py's table gives a domain error."""
    return boundary.status_code(exc).name


def http_server(daemon: Daemon, health: Callable[[], dict[str, bool]], ready: Callable[[], bool]) -> HttpServer:
    """The HTTP API on [http] listen, with the daemon's TLS certificate when it has one."""
    d, s = daemon, daemon.settings
    identities = dict(s.tls.identities)
    backend = Backend(
        asking=Asking(d.pipeline, d.keys),
        authenticate=lambda token, peer: auth.caller(d.keyring, identities, token, peer),
        status_of=status_name,
        policies=d.policies,
        primary=s.model.name,
        health=health,
        ready=ready,
        count=lambda method, code, seconds: d.telemetry.rpc(method, code, seconds, transport="http"),
        begin=logs.begin,
        access=logs.access,
    )
    t = s.tls
    return HttpServer(
        create_app(backend), s.http.listen,
        certfile=str(t.cert) if t.cert else None, keyfile=str(t.key) if t.key else None,
        client_ca=str(t.client_ca) if t.client_ca else None, drain_seconds=s.drain_seconds,
    )
