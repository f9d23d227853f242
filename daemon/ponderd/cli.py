"""The daemon's commands: `ponderd serve|policy|risk …`, and the same inside `ponder` when ponderd is installed.

The client distribution (`ponder-client`) never imports ponderd. It finds these
commands through the `ponder.commands` entry point this distribution declares
(pyproject.toml), which names `add_commands` below; in a source checkout
without installed metadata it falls back to this module by name. So:

- a daemon-side command is registered here, in `add_commands` (by module:
  cli_local.py holds policy and risk; a new module adds its own `add_commands`
  and is called from here);
- this module imports only argparse-level code; each command imports the
  engine, scikit-learn and the rest when it runs.

`ponderd` with flags and no command is `ponderd serve` (what the systemd unit runs).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, Callable, Sequence

from ponder import cli_connect

from . import cli_local

COMMANDS = ("serve", "policy", "risk")


def add_serve_arguments(p: argparse.ArgumentParser) -> None:
    """The daemon's flags, shared by `ponder serve`, `ponderd serve` and `ponderd`."""
    p.add_argument("--config", help="TOML config file (or PONDER_CONFIG)")
    p.add_argument("--listen", help="HOST:PORT or unix:///PATH, or several, comma-separated (or PONDER_LISTEN; default 127.0.0.1:50051)")
    p.add_argument("--state-dir", help="database and credentials directory (or PONDER_STATE_DIR)")
    p.add_argument("--policy-file", help="policy TOML (or PONDER_POLICY_FILE; default policies/default.toml)")
    p.add_argument("--log-level", help="debug, info, warning or error (or PONDER_LOG_LEVEL)")
    p.add_argument("--log-format", choices=["text", "json"], help="log lines as text or JSON objects (or PONDER_LOG_FORMAT)")
    p.add_argument("--tls-cert", help="server certificate chain, PEM (or PONDER_TLS_CERT; with --tls-key: TLS on)")
    p.add_argument("--tls-key", help="the server certificate's private key (or PONDER_TLS_KEY)")
    p.add_argument("--tls-client-ca", help="require client certificates this CA signed: mutual TLS (or PONDER_TLS_CLIENT_CA)")
    p.add_argument("--metrics-listen", help='Prometheus metrics HOST:PORT, "" for none (or PONDER_METRICS_LISTEN; default 127.0.0.1:9464)')


def cmd_serve(args: argparse.Namespace) -> int:
    from .server import run, settings_from_args
    from .settings import SettingsError

    try:
        settings = settings_from_args(args)
    except SettingsError as exc:
        print(f"{args.prog_name}: {exc}", file=sys.stderr)
        return 2
    return run(settings)


def add_commands(sub: Any, connection: Callable[[argparse.ArgumentParser], None] = cli_connect.add_arguments) -> None:
    """Add serve, policy and risk to a subparsers object (the `ponder.commands` entry point)."""
    p = sub.add_parser("serve", help="run the daemon in the foreground", description="Run the daemon in the foreground.")
    add_serve_arguments(p)
    p.set_defaults(handler=cmd_serve, prog_name="ponder")
    cli_local.add_commands(sub, connection)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ponderd", description="The Ponder daemon and its local tools.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    add_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in (*COMMANDS, "-h", "--help"):
        # `ponderd --config …`: the daemon, as the systemd unit starts it.
        serve = argparse.ArgumentParser(prog="ponderd", description="Run the Ponder daemon in the foreground.")
        add_serve_arguments(serve)
        args = serve.parse_args(argv)
        args.prog_name = "ponderd"
        return cmd_serve(args)
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        args.prog_name = "ponderd"
    from ponder.cli import run_handler

    return run_handler(args)


if __name__ == "__main__":
    sys.exit(main())
