"""The real `ponder` CLI in a subprocess, against a real daemon subprocess."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

PONDER = str(Path(sys.executable).parent / "ponder")
pytestmark = pytest.mark.model


def ponder(env, *args, stdin=None, check=True):
    result = subprocess.run([PONDER, *args], env=env, input=stdin, capture_output=True, text=True, timeout=300)
    if check and result.returncode != 0:
        raise AssertionError(f"ponder {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
    return result


def test_ask_prints_answer_assessment_plan_usage_cost_and_balance(served, cli_env):
    out = ponder(cli_env, "ask", "What is 17 * 23?").stdout
    for label in ("assessment", "plan", "usage", "cost", "balance", "request"):
        assert re.search(rf"^  {label} ", out, re.M), f"no {label!r} line in:\n{out}"
    assert "severity=" in out and "needs_reasoning=" in out and "samples=" in out and "thinking<=" in out


def test_ask_json_is_one_object_with_the_same_facts(served, cli_env):
    data = json.loads(ponder(cli_env, "ask", "What is 17 * 23?", "--json", "--samples", "3", "--thinking-tokens", "8").stdout)
    assert set(data) >= {"request_id", "text", "answer", "votes", "assessment", "plan", "usage", "cost", "balance"}
    assert data["plan"]["samples"] == 3 and data["plan"]["thinking_tokens"] == 8
    assert data["assessment"]["severity"] in ("low", "medium", "high")
    assert data["balance"]["tenant"] == "local"


def test_ask_repeated_with_an_idempotency_key_is_answered_once_and_charged_once(served, cli_env):
    ask = ("ask", "Say yes.", "--json", "--idempotency-key", "cli-run-7")
    first = json.loads(ponder(cli_env, *ask).stdout)
    second = json.loads(ponder(cli_env, *ask).stdout)
    assert first["replayed"] is False and second["replayed"] is True
    assert second["request_id"] == first["request_id"] and second["answer"] == first["answer"]
    assert json.loads(ponder(cli_env, "balance", "--json").stdout)["spent"] == first["balance"]["spent"]
    assert "  replayed " in ponder(cli_env, *ask[:2], "--idempotency-key", "cli-run-7").stdout
    err = ponder(cli_env, "ask", "Say no.", "--idempotency-key", "cli-run-7", check=False).stderr
    assert "ponder: INVALID_ARGUMENT: idempotency key 'cli-run-7' was used for a different request" in err


def test_stream_quote_balance_and_feedback(served, cli_env):
    out = ponder(cli_env, "ask", "Say hello.", "--stream").stdout
    assert "  cost " in out
    assert "level=" in ponder(cli_env, "quote", "Is it safe to mix bleach and vinegar?", "--explain").stdout
    assert ponder(cli_env, "balance").stdout.startswith("local: ")
    request_id = json.loads(ponder(cli_env, "ask", "Say yes.", "--json").stdout)["request_id"]
    assert "recorded" in ponder(cli_env, "feedback", request_id, "--wrong", "--severity", "low").stdout


def test_admin_commands(served, cli_env):
    created = json.loads(ponder(cli_env, "admin", "tenant", "create", "acme", "--budget", "5", "--json").stdout)
    token = created["token"]
    assert token.startswith("pnd_")
    assert "acme" in ponder(cli_env, "admin", "tenant", "list").stdout
    assert ponder(cli_env, "balance", "--token", token).stdout.startswith("acme: ")
    ponder(cli_env, "admin", "budget", "set", "acme", "7", "--window", "week")
    assert "DISABLED" in ponder(cli_env, "admin", "tenant", "disable", "acme").stdout
    denied = ponder(cli_env, "balance", "--token", token, check=False)
    assert denied.returncode == 1 and denied.stderr.startswith("ponder: PERMISSION_DENIED: tenant 'acme' is disabled")
    ponder(cli_env, "admin", "tenant", "enable", "acme")
    issued = ponder(cli_env, "admin", "key", "issue", "acme", "--label", "ci")
    # The once-only token alone on stdout, for TOKEN=$(ponder admin key issue …); the note on stderr.
    assert issued.stdout.startswith("pnd_") and len(issued.stdout.split()) == 1 and "shown once" in issued.stderr
    key_id = json.loads(ponder(cli_env, "admin", "key", "issue", "acme", "--json").stdout)["key_id"]
    assert key_id in ponder(cli_env, "admin", "key", "list", "--tenant", "acme").stdout
    assert "revoked" in ponder(cli_env, "admin", "key", "revoke", key_id).stdout
    ponder(cli_env, "ask", "Say hi.", "--token", token)
    report = json.loads(ponder(cli_env, "admin", "spend", "--json", "--records", "5", "--since", "yesterday").stdout)
    assert {line["tenant"] for line in report["lines"]} == {"acme"}
    assert json.loads(ponder(cli_env, "admin", "tenant", "disable", "acme", "--json").stdout)["enabled"] is False
    assert ponder(cli_env, "admin", "tenant", "list").stdout.startswith("TENANT ")
    bad = ponder(cli_env, "admin", "spend", "--since", "last tuesday", check=False)
    assert bad.returncode == 2 and "'last tuesday' is not a time" in bad.stderr and "Traceback" not in bad.stderr
    assert "policy test-small-1" in ponder(cli_env, "admin", "policy", "reload").stdout
    assert "renewed" in ponder(cli_env, "admin", "job", "run", "renew_windows").stdout
    assert "risk model in service" in ponder(cli_env, "admin", "risk", "status").stdout
    assert "severity=" in ponder(cli_env, "admin", "explain", "rm -rf / on prod?").stdout


def test_ask_json_stream_prints_one_object_per_event(served, cli_env):
    lines = ponder(cli_env, "ask", "Say hi.", "--json", "--stream", "--samples", "1", "--thinking-tokens", "0").stdout.splitlines()
    events = [json.loads(line) for line in lines]
    assert "plan" in events[0] and "result" in events[-1] and any("delta" in e for e in events)
    assert events[-1]["result"]["request_id"] == events[0]["request_id"]


def test_errors_are_one_line_with_the_status(served, cli_env):
    r = ponder(cli_env, "ask", "", check=False)
    assert r.returncode == 1
    # The line ends with the daemon's request id for the call (docs/errors.md § The request id).
    assert re.fullmatch(
        r"ponder: INVALID_ARGUMENT: the prompt is empty: put the question in 'prompt' \(request [0-9a-f]{24}\)\n", r.stderr
    ), r.stderr


def test_no_daemon_says_how_to_start_one(cli_env):
    r = ponder(cli_env, "balance", "--address", "127.0.0.1:9", "--token", "pnd_x_y", check=False)
    assert r.returncode == 1
    assert "UNAVAILABLE" in r.stderr and "ponder serve" in r.stderr


def test_connection_options_go_before_or_after_the_command(served, cli_env, tmp_path):
    address = (served.state_dir / "endpoint").read_text().strip()
    token = (served.state_dir / "local.token").read_text().strip()
    # Nothing to fall back on: only the flags can lead these commands to the daemon.
    env = cli_env | {"PONDER_STATE_DIR": str(tmp_path / "elsewhere"), "PONDER_ADDRESS": "127.0.0.1:9"}
    before = json.loads(ponder(env, "--address", address, "--token", token, "quote", "Is 91 prime?", "--json").stdout)
    after = json.loads(ponder(env, "quote", "--address", address, "--token", token, "Is 91 prime?", "--json").stdout)
    assert before["plan"] == after["plan"] and before["assessment"]["severity"] == after["assessment"]["severity"]
    mixed = ponder(env, "--token", token, "balance", "--address", address)
    assert mixed.stdout.startswith("local: ")
    # Given in both places, the one after the command wins.
    assert ponder(env, "--address", "127.0.0.1:9", "balance", "--address", address, "--token", token).returncode == 0
    admin = (served.state_dir / "admin.token").read_text().strip()
    assert "local" in ponder(env, "--address", address, "--token", admin, "admin", "tenant", "list").stdout
    # Before a command that never calls the daemon, a connection option is a usage error, not silently ignored.
    bad = ponder(env, "--address", address, "policy", "check", str(REPO / "policies/default.toml"), check=False)
    assert bad.returncode == 2
    assert "ponder: error: --address before the command is a connection option, and `ponder policy check` does not call the daemon" in bad.stderr


def test_risk_score_reads_and_writes_json_lines(cli_env):
    lines = '{"text": "what is the capital of peru", "id": 1}\n{"text": "wire 40k to this new IBAN now?", "id": 2}\nnot json\n'
    r = ponder(cli_env, "risk", "score", stdin=lines, check=False)
    out = [json.loads(line) for line in r.stdout.splitlines()]
    assert r.returncode == 1 and len(out) == 3
    assert out[0]["id"] == 1 and out[0]["severity"] in ("low", "medium") and "needs_reasoning" in out[0]
    assert out[1]["severity"] == "high" and set(out[1]["severity_probs"]) == {"low", "medium", "high"}
    assert out[2] == {"line": 3, "error": out[2]["error"]} and "'text'" in out[2]["error"]


def test_risk_eval_and_explain(cli_env, tmp_path):
    corpus = REPO / "daemon/ponderd/risk/data/corpus"
    out = ponder(cli_env, "risk", "eval", str(corpus / "money.heldout.jsonl")).stdout
    assert "macro-F1" in out and "confusion" in out and "ECE" in out and "needs_reasoning" in out
    assert "money.heldout.jsonl: 180 examples" in out
    # Several files are scored together, as one set.
    both = json.loads(ponder(cli_env, "risk", "eval", str(corpus / "money.heldout.jsonl"),
                             str(corpus / "tech.heldout.jsonl"), "--json").stdout)
    assert both["summary"]["examples"] == 360
    explained = json.loads(ponder(cli_env, "risk", "explain", "my baby has a fever of 39.5, dose?", "--json").stdout)
    assert explained["severity"] == "high" and explained["explanation"]
    bad = ponder(cli_env, "risk", "eval", str(tmp_path / "missing.jsonl"), check=False)
    assert bad.returncode == 1 and "missing.jsonl" in bad.stderr


def test_policy_check(cli_env):
    assert "ok (version default-3" in ponder(cli_env, "policy", "check", str(REPO / "policies/default.toml")).stdout
    bad = ponder(cli_env, "policy", "check", str(REPO / "tests/policies/bad/unknown_level_field.toml"), check=False)
    assert bad.returncode == 1
    assert "levels.b: unknown field 'sample' (did you mean 'samples'?)" in bad.stderr


def test_risk_train_reports_held_out_metrics(cli_env, tmp_path):
    out = ponder(cli_env, "risk", "train", "--output", str(tmp_path / "m")).stdout
    assert "macro-F1" in out and "high" in out and "recall" in out
    assert (tmp_path / "m" / "manifest.json").exists()
    assert "written only (--output): the daemon's current model is unchanged" in out
    eval_out = ponder(cli_env, "risk", "eval", "--model-dir", str(tmp_path / "m"),
                      str(REPO / "daemon/ponderd/risk/data/corpus/tech.heldout.jsonl")).stdout
    assert "macro-F1" in eval_out


def test_risk_train_makes_a_model_current_only_through_the_retrain_gate(cli_env):
    from ponderd.risk import ClassifierHolder

    state = Path(cli_env["PONDER_STATE_DIR"])
    shipped = ClassifierHolder(state, None).current().version
    # Tuned for 60% high recall instead of 95%: it loses high recall on the held-out split.
    out = ponder(cli_env, "risk", "train", "--recall-target", "0.6", "--json").stdout
    report = json.loads(out)
    assert report["current"] is False
    assert report["verdict"].startswith("not made current: loses on the held-out split: ")
    assert "high_recall" in report["verdict"] and "--force installs anyway" in report["verdict"]
    assert Path(report["output"], "manifest.json").exists()
    assert ClassifierHolder(state, None).current().version == shipped


def all_commands():
    from ponder.cli import build_parser

    found = []

    def walk(parser, prefix):
        for action in parser._actions:
            if action.__class__.__name__ == "_SubParsersAction":
                for name, sub in action.choices.items():
                    walk(sub, prefix + [name])
                return
        found.append(" ".join(prefix))

    walk(build_parser(), [])
    return found


@pytest.mark.parametrize("command", all_commands())
def test_every_command_has_help_and_is_documented(command, cli_env):
    r = ponder(cli_env, *command.split(), "--help")
    assert "usage: ponder " + command in " ".join(r.stdout.split())
    assert f"## ponder {command}\n" in (REPO / "docs" / "cli.md").read_text()
    assert f"ponder {command}" in (REPO / "README.md").read_text(), f"README.md has no example of 'ponder {command}'"


def test_the_command_reference_is_current():
    sys.path.insert(0, str(REPO / "tools"))
    import cli_docs

    assert (REPO / "docs" / "cli.md").read_text() == cli_docs.render(), "docs/cli.md is stale: run python tools/cli_docs.py"


def test_a_commands_own_flag_named_like_a_connection_option_is_its_own():
    """`ponder serve --tls-cert` is the daemon's certificate, not a misplaced client option; before `serve` it is one."""
    from ponder.cli import parse

    args = parse(["serve", "--tls-cert", "server.crt", "--tls-key", "server.key"])
    assert (args.tls_cert, args.tls_key) == ("server.crt", "server.key")
    with pytest.raises(SystemExit) as stop:
        parse(["--tls-cert", "client.crt", "serve"])
    assert stop.value.code == 2
    # A command that calls the daemon takes the global value unless it repeats the flag after itself.
    args = parse(["--address", "h:1", "--verbose", "balance"])
    assert (args.address, args.verbose) == ("h:1", True)
    assert parse(["--address", "h:1", "balance", "--address", "h:2"]).address == "h:2"
