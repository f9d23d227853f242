"""The daemon's commands: `ponderd serve|policy|risk …`, and the same inside `ponder` when ponderd is installed.

The client distribution (`ponder-client`) never imports ponderd. It finds these
commands through the `ponder.commands` entry point this distribution declares
(pyproject.toml), which names `add_commands` below; in a source checkout
without installed metadata it falls back to this module by name. So:

- a daemon-side command is registered here, in `add_commands` (by module:
  policy.py holds policy and calibrate, risk.py the risk group, serve.py the
  daemon's flags; a new module adds its own `add_commands` and is called from here);
- this module imports only argparse-level code; each command imports the
  engine, scikit-learn and the rest when it runs.

`ponderd` with flags and no command is `ponderd serve` (what the systemd unit runs).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, Callable, Sequence

from ponder import cli_connect
from ponderd.cli import policy, risk
from ponderd.cli.serve import add_serve_arguments, cmd_serve

COMMANDS = ("serve", "policy", "risk")


def add_commands(sub: Any, connection: Callable[[argparse.ArgumentParser], None] = cli_connect.add_arguments) -> None:
    """Add serve, policy and risk to a subparsers object (the `ponder.commands` entry point)."""
    p = sub.add_parser("serve", help="run the daemon in the foreground", description="Run the daemon in the foreground.")
    add_serve_arguments(p)
    p.set_defaults(handler=cmd_serve, prog_name="ponder")
    policy.add_commands(sub, connection)
    risk.add_commands(sub, connection)


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
