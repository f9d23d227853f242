"""How a CLI command reaches the daemon: address, key and TLS flags, each with its PONDER_* variable."""

from __future__ import annotations

import argparse
from typing import Any


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--address", help="daemon HOST:PORT or unix:///PATH (or PONDER_ADDRESS; default: the local daemon)")
    p.add_argument("--token", help="API key (or PONDER_TOKEN; default: the local quickstart key)")
    tls = p.add_argument_group("TLS (any of these turns it on; so does PONDER_TLS=true)")
    tls.add_argument("--tls-ca", help="CA bundle that signed the daemon's certificate (or PONDER_TLS_CA; default: system roots)")
    tls.add_argument("--tls-cert", help="client certificate for mutual TLS (or PONDER_TLS_CERT)")
    tls.add_argument("--tls-key", help="the client certificate's private key (or PONDER_TLS_KEY)")
    tls.add_argument("--tls-server-name", help="name to verify in the daemon's certificate (or PONDER_TLS_SERVER_NAME)")


def tls_options(args: argparse.Namespace) -> dict[str, Any]:
    """The client's TLS keyword arguments from parsed flags (unset ones fall back to PONDER_* in the client)."""
    return {
        "tls_ca": args.tls_ca,
        "tls_cert": args.tls_cert,
        "tls_key": args.tls_key,
        "tls_server_name": args.tls_server_name,
    }
