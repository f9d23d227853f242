"""`ponder`: ask the daemon, administer it, run it, and work with its policy and risk model.

Every command prints one line to stderr and exits 1 when it fails; `--json`
prints machine-readable output. `ponder COMMAND --help` explains each one.
The connection options (--address, --token, --tls-*) go before or after the command.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Callable, Sequence

from . import cli_admin, cli_connect, cli_json, plugins
from .cli_format import dump_json, print_answer, print_balance, print_quote
from .cli_progress import spinner
from .client import PonderClient, PonderError
from .errors import ConnectFailed

Handler = Callable[[argparse.Namespace], int]


def _hint_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--samples", type=int, help="draw this many samples and vote (a hint the policy may refuse)")
    p.add_argument("--thinking-tokens", type=int, help="cap thinking at this many tokens (a hint)")
    p.add_argument("--severity-floor", choices=["low", "medium", "high"], help="assess as at least this severe (a hint)")
    p.add_argument("--max-cost", type=float, help="never plan above this worst-case cost (a hint)")
    p.add_argument("--level", help="use this effort level from the policy (a hint)")
    p.add_argument(
        "--answer-format", choices=["auto", "number", "choice", "phrase", "free"],
        help="what kind of answer to extract and vote on (a hint; default: the level's)",
    )
    p.add_argument("--system", default="", help="system prompt (default: the daemon's)")
    p.add_argument("--json", action="store_true", help="print one JSON object")


# Each command that calls the daemon repeats the global connection flags (after the command wins).
_connection_arguments = cli_connect.repeated


def _ask_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "samples": args.samples,
        "thinking_tokens": args.thinking_tokens,
        "severity_floor": args.severity_floor,
        "max_cost": args.max_cost,
        "level": args.level,
        "answer_format": args.answer_format,
        "system": args.system,
    }


def _check_spec(text: str) -> dict[str, Any]:
    try:
        spec = json.loads(text)
    except json.JSONDecodeError:
        spec = None
    if not isinstance(spec, dict) or len(spec) != 1:
        raise argparse.ArgumentTypeError(
            'a check is a JSON object with one key: {"number": 42}, {"regex": "..."}, {"choice": "B"} or {"any_of": ["Paris"]}'
        )
    return spec


def cmd_ask(args: argparse.Namespace) -> int:
    with PonderClient(args.address, args.token, **cli_connect.tls_options(args)) as client:
        kwargs = _ask_kwargs(args) | {
            "seed": args.seed, "explain": args.explain, "check": args.check, "idempotency_key": args.idempotency_key,
        }
        if args.stream and args.json:
            # One JSON object per line, per event: the plan, each text delta, the result.
            for event in client.ask_stream(args.text, **kwargs):
                print(cli_json.dumps(event, indent=None), flush=True)
            return 0
        if args.stream:
            result, shown_round = None, 0
            for event in client.ask_stream(args.text, **kwargs):
                kind = event.WhichOneof("event")
                # The first sample's text, then each refinement round's under its own heading.
                if kind == "delta" and event.delta.sample == 0:
                    if event.delta.refine_round != shown_round:
                        shown_round = event.delta.refine_round
                        sys.stdout.write(f"\n--- refinement round {shown_round} ---\n")
                    sys.stdout.write(event.delta.text)
                    sys.stdout.flush()
                elif kind == "result":
                    result = event.result
            print()
            if result is not None:
                print_answer(result, text=False, explain=args.explain)
            return 0
        # Generation can take minutes on a CPU: a spinner on a terminal says it is still running.
        with spinner("asking the daemon (generating)", enabled=not args.json):
            response = client.ask(args.text, **kwargs)
    if args.json:
        dump_json(response)
    else:
        print_answer(response, explain=args.explain)
    return 0


def cmd_quote(args: argparse.Namespace) -> int:
    with PonderClient(args.address, args.token, **cli_connect.tls_options(args)) as client:
        quote = client.quote(args.text, **_ask_kwargs(args), explain=args.explain)
    if args.json:
        dump_json(quote)
    else:
        print_quote(quote)
    return 0


def cmd_balance(args: argparse.Namespace) -> int:
    with PonderClient(args.address, args.token, **cli_connect.tls_options(args)) as client:
        balance = client.balance()
    if args.json:
        dump_json(balance)
    else:
        print_balance(balance)
    return 0


def cmd_feedback(args: argparse.Namespace) -> int:
    with PonderClient(args.address, args.token, **cli_connect.tls_options(args)) as client:
        feedback_id = client.feedback(
            args.request_id, args.correct, args.severity, args.needs_reasoning, args.comment or ""
        )
    if args.json:
        dump_json({"feedback_id": feedback_id, "request_id": args.request_id})
    else:
        print(f"feedback {feedback_id} recorded for request {args.request_id}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ponder", description=__doc__.splitlines()[0].split(": ", 1)[1])
    cli_connect.add_global_arguments(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("ask", help="ask a question; print the answer, assessment, plan and cost",
                       description="Ask a question; print the answer, the assessment, the plan and what it cost.")
    p.add_argument("text", help="the question")
    _hint_arguments(p)
    p.add_argument("--seed", type=int, default=0, help="fixed sampling seed (0: random)")
    p.add_argument("--explain", action="store_true", help="show why the query got its assessment and, under expected-loss "
                   "planning, the chosen level's and the next best's expected cost, P(wrong) and expected loss")
    p.add_argument("--stream", action="store_true", help="print the answer as it is produced (with --json: one JSON object per event, per line)")
    p.add_argument("--check", type=_check_spec, metavar="JSON",
                   help='verify the answer, e.g. \'{"number": 42}\' (also regex, choice, any_of); teaches the daemon what its levels buy')
    p.add_argument("--idempotency-key", metavar="KEY",
                   help="repeat an ask safely: the same KEY and question get the first answer back, not charged again "
                        "(default: a fresh key per run)")
    _connection_arguments(p)
    p.set_defaults(handler=cmd_ask)

    p = sub.add_parser("quote", help="show the assessment, plan and worst-case cost without asking",
                       description="Show the assessment, plan and worst-case cost of a question, without running or charging it.")
    p.add_argument("text", help="the question")
    _hint_arguments(p)
    p.add_argument("--explain", action="store_true", help="show the features behind the assessment (under expected-loss "
                   "planning a quote always shows the chosen and next best levels' expected cost, P(wrong) and loss)")
    _connection_arguments(p)
    p.set_defaults(handler=cmd_quote)

    p = sub.add_parser("balance", help="show your budget in the current window", description="Show your budget in the current window.")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    _connection_arguments(p)
    p.set_defaults(handler=cmd_balance)

    p = sub.add_parser("feedback", help="report whether an answer was right", description="Report whether an answer was right, and optionally its true labels.")
    p.add_argument("request_id", help="the request_id an ask returned, or a unique prefix of it (6 characters or more, "
                   "as git takes short hashes)")
    verdict = p.add_mutually_exclusive_group()
    verdict.add_argument("--correct", dest="correct", action="store_true", default=None, help="the answer was right")
    verdict.add_argument("--wrong", dest="correct", action="store_false", help="the answer was wrong")
    p.add_argument("--severity", choices=["low", "medium", "high"], help="the query's true severity")
    nr = p.add_mutually_exclusive_group()
    nr.add_argument("--needs-reasoning", dest="needs_reasoning", action="store_true", default=None, help="it truly needed reasoning")
    nr.add_argument("--no-reasoning", dest="needs_reasoning", action="store_false", help="it truly did not need reasoning")
    p.add_argument("--comment", help="free text for the admins")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    _connection_arguments(p)
    p.set_defaults(handler=cmd_feedback)

    cli_admin.add_commands(sub, _connection_arguments)
    plugins.add_commands(sub, _connection_arguments)
    _name_commands(parser)
    return parser


def _name_commands(parser: argparse.ArgumentParser) -> None:
    """Each command's parser records its name (`ponder admin key list`), for messages about the whole line."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                _name_commands(sub)
            return
    parser.set_defaults(_command=parser.prog)


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    flag = cli_connect.misplaced(args)
    if flag is not None:
        parser.error(
            f"{flag} before the command is a connection option, and `{args._command}` does not call the daemon"
        )
    return args


def main(argv: Sequence[str] | None = None) -> int:
    return run_handler(parse(argv))


def run_handler(args: argparse.Namespace) -> int:
    """Run a parsed command: a failed call prints one line, `ponder: STATUS: message (request ID)`, and exits 1."""
    try:
        return args.handler(args)
    except PonderError as exc:
        # One that never reached the daemon names its cause and fix (ponder.channel.explain_unreachable).
        # The daemon's request id, when the call reached it: what its access log and spend records are found by.
        rid = f" (request {exc.request_id})" if exc.request_id else ""
        print(f"ponder: {exc.code.name}: {exc.message}{rid}", file=sys.stderr)
        if isinstance(exc, ConnectFailed) and getattr(args, "verbose", False):
            print(f"ponder: gRPC said: {exc.grpc_details}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    # gRPC logs as it would here; `ponder` and `python -m ponder` (ponder/__main__.py) keep its C-core lines off stderr.
    sys.exit(main())
