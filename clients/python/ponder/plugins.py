"""Commands other distributions add to `ponder`: the daemon's serve, policy and risk.

A distribution declares an entry point in the group `ponder.commands` naming a
function `add_commands(subparsers, connection_arguments)`; the daemon
distribution (ponderd) declares `daemon = "ponderd.cli:add_commands"`. Looking
entry points up reads installed metadata only: nothing is imported unless it is
installed. In a source checkout run with PYTHONPATH (no installed metadata),
`ponderd.cli` is used when it can be found. With neither, `ponder serve`,
`ponder policy` and `ponder risk` say how to install the daemon.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from importlib.metadata import entry_points
from typing import Any, Callable

GROUP = "ponder.commands"
# What the daemon distribution registers, for a source checkout without installed metadata.
DAEMON_MODULE = "ponderd.cli"
DAEMON_COMMANDS = {
    "serve": "run the daemon in the foreground",
    "policy": "check policy files offline",
    "risk": "score, train, evaluate and explain the risk classifier",
}


def _loaders() -> list[Callable[..., None]]:
    found = [ep.load() for ep in entry_points(group=GROUP)]
    if not found and importlib.util.find_spec("ponderd") is not None:
        found.append(importlib.import_module(DAEMON_MODULE).add_commands)
    return found


def _needs_daemon(args: argparse.Namespace) -> int:
    print(
        f"ponder: `{args.command}` runs on the daemon's host and needs the daemon distribution: "
        "pip install ponderd (this is the client alone)",
        file=sys.stderr,
    )
    return 2


def add_commands(sub: Any, connection: Callable[[argparse.ArgumentParser], None]) -> None:
    loaders = _loaders()
    for add in loaders:
        add(sub, connection)
    if not loaders:
        for name, help_text in DAEMON_COMMANDS.items():
            p = sub.add_parser(name, help=f"{help_text} (needs ponderd)", description=f"Needs the daemon: {help_text}.")
            p.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
            p.set_defaults(handler=_needs_daemon)
