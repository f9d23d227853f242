"""Feedback takes a unique prefix of a request id, as git takes short hashes: the real daemon, the real CLI.

The daemon resolves the prefix among the calling tenant's own requests only, so
a prefix tells nothing about other tenants' requests.
"""

import contextlib
import re
import secrets
import sqlite3
import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from conftest import DaemonThread, make_settings
from ponder import errors

pytestmark = pytest.mark.model

PONDER = str(Path(sys.executable).parent / "ponder")


@pytest.fixture(scope="module")
def d(tmp_path_factory):
    daemon = DaemonThread(make_settings(tmp_path_factory.mktemp("feedback"))).start()
    yield daemon
    daemon.stop()


@contextlib.contextmanager
def ids_starting_with(monkeypatch, prefix):
    """Request ids drawn while this is open start with `prefix`.

    Two random 24-hex-digit ids share 8 leading digits about once in four
    billion; an ambiguous prefix needs two that do. Only the draw is steered:
    the asks run, settle and are looked up through the real daemon.
    """
    draw = secrets.token_hex
    with monkeypatch.context() as m:
        m.setattr(secrets, "token_hex", lambda n=None: prefix + draw(n)[len(prefix):] if n == 12 else draw(n))
        yield


def ask(client, **hints):
    return client.ask("Say yes.", **(hints or {"samples": 1, "thinking_tokens": 0})).request_id


def feedback_rows(d, request_id):
    db = sqlite3.connect(f"file:{d.settings.state_dir / 'ponder.db'}?mode=ro", uri=True)
    try:
        return db.execute("SELECT correct FROM feedback WHERE request_id = ?", [request_id]).fetchall()
    finally:
        db.close()


def cli(d, cli_env, *args, token=None):
    return subprocess.run(
        [PONDER, "--address", d.address, "--token", token or d.token("local"), "feedback", *args],
        env=cli_env, capture_output=True, text=True, timeout=120,
    )


def test_a_unique_prefix_is_the_request_it_starts(d, cli_env):
    with d.client() as c:
        request_id = ask(c)
    run = cli(d, cli_env, request_id[:7], "--wrong")
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("feedback ") and f"recorded for request {request_id[:7]}" in run.stdout
    assert feedback_rows(d, request_id) == [(0,)]  # stored against the whole id
    with d.client() as c:
        assert c.feedback(request_id[:6], correct=True)  # the minimum length, through the Python client
    assert sorted(feedback_rows(d, request_id)) == [(0,), (1,)]


def test_an_ambiguous_prefix_lists_the_requests_it_starts(d, cli_env, monkeypatch):
    with d.client() as c, ids_starting_with(monkeypatch, "abcdef01"):
        first, second = ask(c), ask(c)
    assert first != second and first[:8] == second[:8] == "abcdef01"
    run = cli(d, cli_env, "abcdef", "--correct")
    assert run.returncode == 1
    line = run.stderr.strip()
    assert "\n" not in line
    assert line.startswith(
        "ponder: INVALID_ARGUMENT: request id prefix 'abcdef' is ambiguous: it starts 2 of your requests (tenant 'local'): "
    )
    # Newest first, each whole, with when it was asked; and how to resolve it.
    assert line.index(second) < line.index(first) and " UTC)" in line
    # The CLI's line ends with the call's own request id (docs/errors.md § The request id).
    assert re.search(r"; give more of the request id \(request [0-9a-f]{24}\)$", line), line
    assert feedback_rows(d, first) == feedback_rows(d, second) == []
    # One more character than the two share picks one (they share 8 by design, and more by chance).
    shared = next(i for i, (a, b) in enumerate(zip(first, second)) if a != b)
    assert cli(d, cli_env, first[: shared + 1], "--correct").returncode == 0
    assert feedback_rows(d, first) == [(1,)] and feedback_rows(d, second) == []


def test_a_prefix_that_matches_nothing_or_is_too_short_is_not_found(d, cli_env):
    with d.client() as c:
        request_id = ask(c)
        e = pytest.raises(errors.NotFound, c.feedback, "zzzzzzzz", correct=True).value
        assert e.reason == "NOT_FOUND"
        assert "no request 'zzzzzzzz' for tenant 'local', and none whose id starts with it" in e.message
        short = pytest.raises(errors.NotFound, c.feedback, request_id[:5], correct=True).value
        assert "(a prefix needs at least 6 characters)" in short.message
        empty = pytest.raises(errors.InvalidArgument, c.feedback, "", correct=True).value
        assert "request_id is empty" in empty.message
    run = cli(d, cli_env, "zzzzzzzz", "--wrong")
    assert run.returncode == 1 and run.stderr.startswith("ponder: NOT_FOUND: no request 'zzzzzzzz'")
    assert feedback_rows(d, request_id) == []


def test_another_tenants_requests_are_invisible_to_a_prefix(d, cli_env, monkeypatch):
    with d.admin() as admin:
        other = admin.create_tenant("other-prefix", 5).token
    with d.client(other) as theirs, d.client() as mine, ids_starting_with(monkeypatch, "0b5e55ed"):
        their_id, my_id = ask(theirs, max_cost=5.0), ask(mine)  # a new tenant's policy allows no other hint
    # Theirs shares the prefix, but only mine is looked at: not ambiguous, and theirs is never named.
    run = cli(d, cli_env, "0b5e55ed", "--wrong")
    assert run.returncode == 0, run.stderr
    assert feedback_rows(d, my_id) == [(0,)] and feedback_rows(d, their_id) == []
    with d.client() as mine:
        # Their whole id reads exactly as an id nobody has.
        e = pytest.raises(errors.NotFound, mine.feedback, their_id, correct=True).value
        nobodys = "f" * 24
        unknown = pytest.raises(errors.NotFound, mine.feedback, nobodys, correct=True).value
        assert e.code == grpc.StatusCode.NOT_FOUND and e.message.replace(their_id, "ID") == unknown.message.replace(nobodys, "ID")
    # Their own key resolves the same prefix to their own request.
    assert cli(d, cli_env, "0b5e55ed", "--correct", token=other).returncode == 0
    assert feedback_rows(d, their_id) == [(1,)]
