"""How a CLI command reaches the daemon: address, key and TLS flags, each with its PONDER_* variable.

In `ponder` they are global options: given before the command (`ponder --address H:P quote …`,
as git and kubectl take them) or after it (`ponder quote --address H:P …`); after it wins.
"""

from __future__ import annotations

import argparse
from typing import Any

# The namespace attributes these flags set, in the order --help lists them.
DESTS = ("address", "token", "tls_ca", "tls_cert", "tls_key", "tls_server_name")
# Set on every command that takes them (see `repeated`), so options given before a command that does not are refused.
CONNECTS = "_connects"


# The global copies (before the command) keep their values under this prefix, so a command's own flag of the
# same name (`ponder serve --tls-cert`, the daemon's certificate) is never mistaken for a misplaced one.
GLOBAL = "global_"


def add_arguments(
    p: argparse.ArgumentParser, default: Any = None, token_help: str | None = None, prefix: str = ""
) -> None:
    """The connection flags on `p`. `default=argparse.SUPPRESS` leaves unset ones out of the namespace,
    so a command's copy of a flag does not overwrite the value given before the command."""
    p.add_argument("--address", default=default, dest=prefix + "address", metavar="ADDRESS",
                   help="daemon HOST:PORT or unix:///PATH (or PONDER_ADDRESS; default: the local daemon)")
    p.add_argument("--token", default=default, dest=prefix + "token", metavar="TOKEN",
                   help=token_help or "API key (or PONDER_TOKEN; default: the local quickstart key)")
    tls = p.add_argument_group("TLS (any of these turns it on; so does PONDER_TLS=true)")
    tls.add_argument("--tls-ca", default=default, dest=prefix + "tls_ca", metavar="TLS_CA",
                     help="CA bundle that signed the daemon's certificate (or PONDER_TLS_CA; default: system roots)")
    tls.add_argument("--tls-cert", default=default, dest=prefix + "tls_cert", metavar="TLS_CERT", help="client certificate for mutual TLS (or PONDER_TLS_CERT)")
    tls.add_argument("--tls-key", default=default, dest=prefix + "tls_key", metavar="TLS_KEY", help="the client certificate's private key (or PONDER_TLS_KEY)")
    tls.add_argument("--tls-server-name", default=default, dest=prefix + "tls_server_name", metavar="TLS_SERVER_NAME",
                     help="name to verify in the daemon's certificate (or PONDER_TLS_SERVER_NAME)")


VERBOSE_HELP = (
    "show gRPC's own log lines on stderr (hidden unless GRPC_VERBOSITY is set) and its text when a connection fails"
)


def add_global_arguments(parser: argparse.ArgumentParser) -> None:
    """The connection flags on `ponder` itself, before the command, and --verbose."""
    add_arguments(
        parser,
        token_help="API key (or PONDER_TOKEN, for `ponder admin` PONDER_ADMIN_TOKEN; default: the state "
        "directory's local.token, admin.token)",
        prefix=GLOBAL,
    )
    parser.add_argument("--verbose", action="store_true", dest=GLOBAL + "verbose", help=VERBOSE_HELP)


def repeated(p: argparse.ArgumentParser) -> None:
    """The connection flags on a command, after it: the same flags as the global ones, unset ones left alone."""
    add_arguments(p, default=argparse.SUPPRESS)
    p.add_argument("--verbose", action="store_true", default=argparse.SUPPRESS, help=VERBOSE_HELP)
    p.set_defaults(**{CONNECTS: True})


def misplaced(args: argparse.Namespace) -> str | None:
    """The first connection flag given before a command that does not connect to a daemon (None: all is well).
    A command that connects gets each global value its own copy of the flag did not set (after the command wins)."""
    connects = getattr(args, CONNECTS, False)
    for dest in (*DESTS, "verbose"):
        value = getattr(args, GLOBAL + dest, None)
        if connects:
            if not hasattr(args, dest):
                setattr(args, dest, value)
        elif value not in (None, False):
            return "--" + dest.replace("_", "-")
    return None


def tls_options(args: argparse.Namespace) -> dict[str, Any]:
    """The client's TLS keyword arguments from parsed flags (unset ones fall back to PONDER_* in the client)."""
    return {
        "tls_ca": args.tls_ca,
        "tls_cert": args.tls_cert,
        "tls_key": args.tls_key,
        "tls_server_name": args.tls_server_name,
    }
