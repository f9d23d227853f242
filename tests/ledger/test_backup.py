"""Online backup (python -m ponderd.backup): a whole copy of a live database, retention, and a restore that serves."""

from __future__ import annotations

import datetime
import pathlib
import shutil
import sqlite3
import stat
import subprocess
import sys

import pytest

from conftest import DaemonProcess, DaemonThread, make_settings
from ponder.client import AdminClient, PonderClient
from ponderd.ledger.sqlite.backup import BackupError, backup, copies


def _rows(path: pathlib.Path, sql: str) -> list[tuple]:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return db.execute(sql).fetchall()
    finally:
        db.close()


def _database(path: pathlib.Path) -> pathlib.Path:
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE t (x INTEGER)")
    db.execute("INSERT INTO t VALUES (1), (2)")
    db.commit()
    db.close()
    return path


def test_retention_keeps_the_newest_copies(tmp_path):
    source = _database(tmp_path / "ponder.db")
    dest = tmp_path / "backups"
    start = datetime.datetime(2026, 3, 1, 2, 45, tzinfo=datetime.timezone.utc)
    made = [backup(source, dest, keep=3, now=start + datetime.timedelta(days=i)) for i in range(5)]
    assert copies(dest) == [m.path for m in made[2:]]
    assert made[3].removed == [made[0].path] and made[4].removed == [made[1].path]
    assert stat.S_IMODE(dest.stat().st_mode) == 0o700
    for copy in copies(dest):
        assert stat.S_IMODE(copy.stat().st_mode) == 0o600
        assert _rows(copy, "PRAGMA journal_mode") == [("delete",)]  # one standalone file
        assert _rows(copy, "SELECT x FROM t ORDER BY x") == [(1,), (2,)]
    assert not list(dest.glob(".*.tmp"))
    with pytest.raises(BackupError, match="keep must be at least 1"):
        backup(source, dest, keep=0)
    with pytest.raises(BackupError, match="no database at"):
        backup(tmp_path / "missing.db", dest)


@pytest.mark.model
def test_a_backup_of_the_live_database_is_whole_and_a_restore_serves_it(cli_env, tmp_path):
    """Back up while the daemon serves (what it just wrote still in the WAL), then start a daemon from the copy."""
    d = DaemonProcess(cli_env)
    state = d.state_dir
    try:
        address = d.wait_ready()
        admin_token = (state / "admin.token").read_text().strip()
        with AdminClient(address, admin_token, timeout=120) as admin:
            admin.create_tenant("billing", 250)
        with PonderClient(address, (state / "local.token").read_text().strip(), timeout=120) as c:
            asked = c.ask("What is 2 + 2?")
        # The daemon holds the database open in WAL mode, its latest writes in the -wal file.
        assert (state / "ponder.db-wal").stat().st_size > 0
        run = subprocess.run(
            [sys.executable, "-m", "ponderd.backup", "--keep", "2"], env=cli_env,
            capture_output=True, text=True, timeout=120,
        )
        assert run.returncode == 0, run.stderr
        assert "integrity ok" in run.stderr
        dest = state / "backups"
        [copy] = copies(dest)
        assert _rows(copy, "PRAGMA integrity_check") == [("ok",)]
        assert ("billing",) in _rows(copy, "SELECT name FROM tenants")
        assert _rows(copy, f"SELECT status FROM spend WHERE request_id = '{asked.request_id}'") == [("ok",)]
        assert stat.S_IMODE(copy.stat().st_mode) == 0o600 and stat.S_IMODE(dest.stat().st_mode) == 0o700
        # Retention through the command: three runs, --keep 2.
        for _ in range(2):
            assert subprocess.run([sys.executable, "-m", "ponderd.backup", "--keep", "2"], env=cli_env,
                                  capture_output=True, timeout=120).returncode == 0
        assert len(copies(dest)) == 2 and copy not in copies(dest)
        latest = copies(dest)[-1]
    finally:
        assert d.stop() == 0

    # Restore (docs/operations.md, "Backups and restore"): the copy becomes ponder.db of a state directory.
    restored = tmp_path / "restored"
    restored.mkdir(mode=0o700)
    shutil.copy2(latest, restored / "ponder.db")
    r = DaemonThread(make_settings(restored)).start()
    try:
        with AdminClient(r.address, admin_token, timeout=120) as admin:
            tenants = {t.name: t for t in admin.list_tenants()}
        assert "billing" in tenants and "local" in tenants
        assert _rows(restored / "ponder.db", f"SELECT status FROM spend WHERE request_id = '{asked.request_id}'") == [("ok",)]
        # The restored daemon found its admin key in the database: it wrote no new first-run key.
        assert not (restored / "admin.token").exists()
    finally:
        r.stop()
