"""What the daemon keeps is private and is kept no longer than documented.

The state directory is 0700 and the database files 0600 whatever the umask;
the prune_prompts job removes every copy of a request's text (prompt, the
prompt copied into feedback, the answer) once it is older than keep_prompts_days.
"""

import os
import sqlite3
import stat
from datetime import timedelta

import pytest

from conftest import DaemonThread, make_settings
from ponderd.ledger.sqlite import store
from ponderd.risk import feedback


def mode(path):
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


@pytest.mark.model
def test_a_daemon_started_under_umask_022_keeps_its_state_owner_only(tmp_path, umask_022):
    d = DaemonThread(make_settings(tmp_path / "state")).start()
    try:
        with d.client() as c:
            c.ask("Say hi.", seed=2, thinking_tokens=0)
        state = d.settings.state_dir
        db = d.settings.database
        assert mode(state) == 0o700
        for path in (db, db.with_name("ponder.db-wal"), db.with_name("ponder.db-shm")):
            assert mode(path) == 0o600, path
        assert mode(state / "admin.token") == 0o600
    finally:
        d.stop()


def test_an_existing_state_dir_and_database_are_narrowed_to_owner_only(tmp_path, umask_022):
    state = tmp_path / "state"
    state.mkdir(mode=0o755)
    path = state / "ponder.db"
    # An older version's database, opened in WAL mode and left world-readable.
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("CREATE TABLE t (x)")
    assert mode(state) == 0o755 and mode(path) == 0o644
    db = store.connect(path)
    try:
        assert mode(state) == 0o700
        for p in (path, state / "ponder.db-wal", state / "ponder.db-shm"):
            assert mode(p) == 0o600, p
    finally:
        db.close()
        conn.close()


def test_a_new_database_is_created_owner_only_in_a_new_private_dir(tmp_path, umask_022):
    path = tmp_path / "a" / "state" / "ponder.db"
    db = store.connect(path)
    try:
        assert mode(path.parent) == 0o700
        for p in (path, path.with_name("ponder.db-wal"), path.with_name("ponder.db-shm")):
            assert mode(p) == 0o600, p
    finally:
        db.close()


def text_rows(d):
    with sqlite3.connect(d.settings.database) as conn:
        prompts = dict(conn.execute("SELECT request_id, text FROM prompts"))
        feedback_texts = dict(conn.execute("SELECT request_id, text FROM feedback"))
        answers = dict(conn.execute("SELECT request_id, answer FROM spend"))
    return prompts, feedback_texts, answers


@pytest.mark.model
def test_prune_prompts_removes_every_copy_of_old_requests_text_and_keeps_newer(clocked_daemon, clock):
    d = clocked_daemon
    assert d.settings.risk.keep_prompts_days == 30
    old_prompt = "What is 2 + 3? Reply with just the number."
    new_prompt = "What is 4 + 4? Reply with just the number."
    with d.client() as c:
        old = c.ask(old_prompt, seed=1, thinking_tokens=0, samples=1)
        c.feedback(old.request_id, correct=False, true_severity="low")
        clock.advance(timedelta(days=20))
        new = c.ask(new_prompt, seed=1, thinking_tokens=0, samples=1)
        c.feedback(new.request_id, correct=True, true_severity="low")
    prompts, feedback_texts, answers = text_rows(d)
    assert prompts == {old.request_id: old_prompt, new.request_id: new_prompt}
    assert feedback_texts == prompts
    assert answers[old.request_id] and answers[new.request_id]

    # The old request is now 35 days old, the new one 15.
    clock.advance(timedelta(days=15))
    with d.admin() as admin:
        summary = admin.run_job("prune_prompts")
    assert summary == (
        "removed 1 prompt(s), 1 feedback prompt copy(ies) and 1 answer(s) of requests older than 30 day(s)"
    )
    prompts, feedback_texts, answers = text_rows(d)
    assert prompts == {new.request_id: new_prompt}
    assert feedback_texts == {old.request_id: None, new.request_id: new_prompt}
    assert answers == {old.request_id: "", new.request_id: new.answer}
    # Feedback past the window can no longer teach the classifier.
    examples = d.call(d.daemon.store.call(feedback.labeled_examples))
    assert [e.text for e in examples] == [new_prompt]
    # The spend records themselves (the ledger) stay.
    with d.admin() as admin:
        records = admin.spend(since=clock.now() - timedelta(days=40), records=10).records
    assert {r.request_id for r in records} == {old.request_id, new.request_id}
