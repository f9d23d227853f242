"""`--json` everywhere: one converter, and each command's output as docs/json.md documents it.

The documented schema is read from docs/json.md itself; every command that takes --json runs
through the real CLI in a subprocess against a real daemon subprocess, and its output must have
exactly the documented keys, with the documented types.
"""

import json
import re
from datetime import datetime

import pytest
from test_cli import ponder

from conftest import REPO

DOC = REPO / "docs" / "json.md"


def documented() -> tuple[dict[str, str], dict[str, dict[str, str]]]:
    """(command line -> what it prints, table name -> {key: type}) from docs/json.md."""
    commands: dict[str, str] = {}
    tables: dict[str, dict[str, str]] = {}
    section = None
    for line in DOC.read_text().splitlines():
        if line.startswith("### "):
            section = line[4:].strip()
            tables[section] = {}
        elif line.startswith("## "):
            section = None
        m = re.match(r"^\| `(ponder [^`]+)` \| (.+) \|$", line)
        if m:
            commands[m.group(1)] = m.group(2)
            continue
        m = re.match(r"^\| `(\w+)` \| (.+) \|$", line)
        if m and section is not None:
            tables[section][m.group(1)] = m.group(2).replace("\\|", "|")
    return commands, tables


COMMANDS, TABLES = documented()


def conforms(value, kind: str, where: str) -> None:
    """Assert that `value` is what the documented type `kind` says."""
    kind = kind.strip()
    oneof = re.search(r" \(oneof \w+: only when set\)$", kind)
    kind = kind[: oneof.start()] if oneof else kind
    if kind.endswith(" or null"):
        if value is None:
            return
        kind = kind[: -len(" or null")]
    if kind.startswith("one ") and " per line" in kind:
        kind = kind.removeprefix("one ").split(" per line")[0]
    if kind.startswith("list of "):
        assert isinstance(value, list), f"{where}: {value!r} is not a list"
        for i, v in enumerate(value):
            conforms(v, kind[len("list of "):], f"{where}[{i}]")
        return
    if kind.startswith("object: string → "):
        assert isinstance(value, dict), f"{where}: {value!r} is not an object"
        for k, v in value.items():
            conforms(v, kind[len("object: string → "):], f"{where}.{k}")
        return
    link = re.fullmatch(r"\[(\w+)\]\(#\w+\)", kind)
    if link:
        table = TABLES[link.group(1)]
        assert isinstance(value, dict), f"{where}: {value!r} is not an object"
        optional = {k for k, t in table.items() if "(oneof " in t}
        assert set(table) - optional <= set(value) <= set(table), (
            f"{where}: keys {sorted(value)} are not those documented for {link.group(1)}: {sorted(table)}"
        )
        for k, v in value.items():
            conforms(v, table[k], f"{where}.{k}")
        return
    if kind.startswith("enum: "):
        names = re.findall(r'`"(\w+)"`', kind)
        assert value is None or value in names, f"{where}: {value!r} is not one of {names}"
        return
    checks = {
        "string": lambda v: isinstance(v, str),
        "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
        "boolean": lambda v: isinstance(v, bool),
        "object": lambda v: isinstance(v, dict),
        "ISO-8601 string": lambda v: isinstance(v, str) and datetime.fromisoformat(v).tzinfo is not None,
    }
    assert kind in checks, f"{where}: docs/json.md names an unknown type {kind!r}"
    assert checks[kind](value), f"{where}: {value!r} is not {kind}"


def commands_with_json() -> list[str]:
    from ponder.cli import build_parser

    found = []

    def walk(parser, prefix):
        for action in parser._actions:
            if action.__class__.__name__ == "_SubParsersAction":
                for name, sub in action.choices.items():
                    walk(sub, prefix + [name])
                return
        if any("--json" in a.option_strings for a in parser._actions):
            found.append("ponder " + " ".join(prefix) + " --json")

    walk(build_parser(), [])
    return found


def test_every_command_with_json_is_documented():
    documented_commands = {c for c in COMMANDS if "--stream" not in c}
    assert documented_commands == set(commands_with_json())
    for command, prints in COMMANDS.items():
        for name in re.findall(r"\[(\w+)\]", prints):
            assert name in TABLES, f"{command}: docs/json.md has no table {name}"


def test_the_message_tables_name_every_field_of_their_message():
    from ponder.v1 import admin_pb2, ponder_pb2

    messages = {}
    for module in (ponder_pb2, admin_pb2):
        for name, d in module.DESCRIPTOR.message_types_by_name.items():
            messages[name] = d
            messages.update({n.name: n for n in d.nested_types})
    checked = 0
    for name, table in TABLES.items():
        if name in messages:
            assert list(table) == [f.name for f in messages[name].fields], f"docs/json.md's {name} is stale"
            checked += 1
    assert checked >= 20


def test_the_converter_writes_numbers_enums_and_times_by_the_rules():
    from google.protobuf.timestamp_pb2 import Timestamp

    from ponder.cli_json import dumps
    from ponder.v1 import admin_pb2, ponder_pb2

    line = admin_pb2.SpendLine(tenant="acme", requests=3, prompt_tokens=2**40, cost=0.1275)
    line.by_status["ok"] = 3
    assert json.loads(dumps(line)) == {
        "tenant": "acme", "requests": 3, "prompt_tokens": 2**40, "thinking_tokens": 0, "answer_tokens": 0,
        "cost": 0.1275, "by_status": {"ok": 3}, "host": "",
    }
    record = admin_pb2.SpendRecord(severity=ponder_pb2.SEVERITY_MEDIUM, at=Timestamp(seconds=1796606958))
    data = json.loads(dumps(record))
    assert data["severity"] == "medium" and data["at"] == "2026-12-07T01:29:18Z"
    assert data["confidence_mean"] is None and data["usage"] is None  # unset: present, null
    assert json.loads(dumps(admin_pb2.SpendRecord()))["severity"] is None
    event = ponder_pb2.AskStreamResponse(request_id="r")
    event.delta.phase = ponder_pb2.TextDelta.PHASE_ANSWER
    # A oneof: only the member that is set.
    assert json.loads(dumps(event)) == {
        "request_id": "r", "delta": {"sample": 0, "phase": "answer", "text": "", "refine_round": 0},
    }
    assert json.loads(dumps({"x": float("nan"), "when": datetime(2026, 12, 7, 1, 2, 3)})) == {
        "x": None, "when": "2026-12-07T01:02:03Z",
    }


@pytest.mark.model
def test_every_command_prints_the_documented_json(served, cli_env, tmp_path):
    seen: set[str] = set()

    def check(command: str, *args: str, stdin=None) -> dict:
        out = ponder(cli_env, *command.split()[1:-1], *args, "--json", stdin=stdin).stdout
        key = command if "--stream" not in args else command.replace(" --json", " --stream --json")
        prints = COMMANDS[key]
        if "per line" in prints:
            values = [json.loads(line) for line in out.splitlines()]
            for i, v in enumerate(values):
                conforms(v, prints, f"{key} line {i + 1}")
        else:
            values = [json.loads(out)]
            conforms(values[0], prints, key)
        seen.add(key)
        return values[-1]

    fast = ("--samples", "1", "--thinking-tokens", "0")
    asked = check("ponder ask --json", "What is 2 + 2?", *fast)
    assert isinstance(asked["cost"], float) and asked["assessment"]["severity"] in ("low", "medium", "high")
    check("ponder ask --json", "Say hi.", "--stream", *fast)
    check("ponder quote --json", "Is it safe to mix bleach and vinegar?", "--explain")
    check("ponder balance --json")
    check("ponder feedback --json", asked["request_id"], "--correct")
    created = check("ponder admin tenant create --json", "acme", "--budget", "5")
    check("ponder admin tenant list --json")
    check("ponder admin tenant disable --json", "acme")
    check("ponder admin tenant enable --json", "acme")
    check("ponder admin budget set --json", "acme", "7")
    key = check("ponder admin key issue --json", "acme", "--label", "ci")
    capped = check("ponder admin key budget --json", key["key_id"], "2")
    assert capped["budget"] == 2.0 and capped["spent"] == 0.0
    rotated = check("ponder admin key rotate --json", key["key_id"], "--overlap", "1m")
    assert rotated["old_key_id"] == key["key_id"] and rotated["old_expires_at"].endswith("Z")
    check("ponder admin key list --json")
    check("ponder admin key revoke --json", rotated["key_id"])
    ponder(cli_env, "ask", "Say yes.", "--token", created["token"])
    check("ponder admin alerts --json")
    spend = check("ponder admin spend --json", "--records", "5", "--since", "yesterday")
    assert spend["records"] and isinstance(spend["lines"][0]["requests"], int)
    check("ponder admin policy reload --json")
    check("ponder admin explain --json", "rm -rf / on prod?")
    check("ponder admin job run --json", "renew_windows")
    check("ponder admin risk status --json")
    check("ponder policy check --json", str(REPO / "tests/policies/small.toml"))
    bad = ponder(cli_env, "policy", "check", str(REPO / "tests/policies/bad/unknown_level_field.toml"), "--json",
                 check=False)
    conforms(json.loads(bad.stdout), COMMANDS["ponder policy check --json"], "policy check (a bad file)")
    check("ponder policy simulate --json", str(REPO / "tests/policies/small.toml"), "--since", "1h")
    level = asked["plan"]["level"]
    data = tmp_path / "data.jsonl"
    data.write_text(json.dumps({"id": "q1", "text": "What is 2 + 2?", "check": {"number": 4}}) + "\n")
    check("ponder calibrate --json", str(data), "--levels", level, "--out", str(tmp_path / "profile.json"))
    check("ponder risk explain --json", "my baby has a fever of 39.5, dose?")
    check("ponder risk eval --json", str(REPO / "daemon/ponderd/risk/data/corpus/money.heldout.jsonl"))
    check("ponder risk train --json", "--output", str(tmp_path / "model"))
    check("ponder risk retrain --json")
    assert seen == set(COMMANDS)
