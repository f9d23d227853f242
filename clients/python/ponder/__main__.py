"""`ponder` (the console script) and `python -m ponder`: the CLI, with gRPC's C-core log kept off stderr.

gRPC's C core reads GRPC_VERBOSITY once, when grpc is first imported, and
otherwise writes lines such as `I1206 12:18:29 ssl_transport_security.cc:2563]
Handshake failed …` to stderr, beside the one line a failed command prints
(which already says what failed and how to fix it). So this module decides
before anything imports grpc: GRPC_VERBOSITY=NONE, unless the user set
GRPC_VERBOSITY, passed --verbose (gRPC logs as it does by default), or runs the
daemon (`ponder serve`, whose log keeps gRPC's lines).
"""

from __future__ import annotations

import os
import sys
from typing import Mapping, Sequence

from ponder.cli_connect import DESTS

# Global options that take a value: the word after one is not the command.
_VALUED = {"--" + dest.replace("_", "-") for dest in DESTS}
# Commands that are the daemon, not a client of it.
_DAEMON = {"serve"}


def command_of(argv: Sequence[str]) -> str | None:
    """The command word of a `ponder` command line (global options may come before it)."""
    words = iter(argv)
    for word in words:
        if word in _VALUED:
            next(words, None)
        elif word == "--":
            return next(words, None)
        elif not word.startswith("-"):
            return word
    return None


def grpc_verbosity(argv: Sequence[str], environ: Mapping[str, str]) -> str | None:
    """What GRPC_VERBOSITY to set for this command line, or None to leave gRPC's logging as it is."""
    if "GRPC_VERBOSITY" in environ or "--verbose" in argv or command_of(argv) in _DAEMON:
        return None
    return "NONE"


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    level = grpc_verbosity(args, os.environ)
    # Only before grpc's first import does this take effect (and only then is this process the CLI's own).
    if level is not None and "grpc" not in sys.modules:
        os.environ["GRPC_VERBOSITY"] = level
    from ponder.cli import main as run

    return run(args)


if __name__ == "__main__":
    sys.exit(main())
