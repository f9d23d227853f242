"""Online backup of the ledger database, with retention (ponder-backup.timer runs it daily).

    python -m ponderd.backup [--config FILE] [--dest DIR] [--keep N]

SQLite's online backup API copies a consistent snapshot while the daemon keeps
serving: in WAL mode a reader never blocks the writer, and the snapshot
includes what the WAL holds but has not yet checkpointed. Each copy is written
under a temporary name, checked with `PRAGMA integrity_check`, made a
standalone file (rollback journal, no -wal beside it), then renamed into place,
so a copy named `ponder-<UTC time>.db` is always whole. The newest `keep`
copies are kept; older ones are removed. Copies hold prompts, spend and key
hashes: directory 0700, files 0600.
"""

from __future__ import annotations

import argparse
import datetime
import logging
import os
import pathlib
import sqlite3
import sys
from dataclasses import dataclass
from typing import Sequence

from ponderd.private import owner_only, private_dir
from ponderd.settings import SettingsError, load_settings

log = logging.getLogger("ponder.backup")

PREFIX, SUFFIX = "ponder-", ".db"
DEFAULT_KEEP = 14


class BackupError(RuntimeError):
    """The copy could not be made or failed its check; nothing was renamed into place."""


@dataclass(frozen=True)
class BackupResult:
    path: pathlib.Path
    pages: int
    removed: list[pathlib.Path]


def copies(dest: pathlib.Path) -> list[pathlib.Path]:
    """The finished copies in `dest`, oldest first (their names sort by time)."""
    return sorted(p for p in dest.glob(f"{PREFIX}*{SUFFIX}") if p.is_file())


def backup(database: pathlib.Path, dest: pathlib.Path, keep: int = DEFAULT_KEEP,
           now: datetime.datetime | None = None) -> BackupResult:
    if keep < 1:
        raise BackupError("keep must be at least 1: a backup run that removes its own copy is no backup")
    if not database.is_file():
        raise BackupError(f"no database at {database}: check state_dir (PONDER_STATE_DIR)")
    private_dir(dest)
    now = now or datetime.datetime.now(datetime.timezone.utc)
    # Microseconds: two runs in one second (a manual one beside the timer's) never collide.
    final = dest / f"{PREFIX}{now.strftime('%Y%m%dT%H%M%S.%fZ')}{SUFFIX}"
    tmp = dest / f".{final.name}.tmp"
    tmp.unlink(missing_ok=True)
    try:
        pages = _copy(database, tmp)
        os.chmod(tmp, 0o600)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        tmp.replace(final)
        _fsync_dir(dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return BackupResult(final, pages, prune(dest, keep))


def _copy(database: pathlib.Path, target: pathlib.Path) -> int:
    # Opened read-write (never written): a read-only connection to a WAL
    # database cannot always map the shared-memory index the daemon uses.
    src = sqlite3.connect(database, timeout=30)
    try:
        dst = sqlite3.connect(target)
        try:
            src.backup(dst)
            # The copy inherits WAL mode from the source's header; a restore
            # should be one file, so switch it to a rollback journal.
            dst.execute("PRAGMA journal_mode=DELETE")
            problems = [row[0] for row in dst.execute("PRAGMA integrity_check")]
            if problems != ["ok"]:
                raise BackupError(f"the copy of {database} failed its integrity check: {'; '.join(problems[:5])}")
            pages = dst.execute("PRAGMA page_count").fetchone()[0]
        finally:
            dst.close()
    except sqlite3.Error as exc:
        raise BackupError(f"cannot copy {database}: {exc}") from None
    finally:
        src.close()
    # The daemon's database files are 0600 whoever opens them (store.py): keep it so.
    for suffix in ("-wal", "-shm"):
        owner_only(database.with_name(database.name + suffix))
    return pages


def prune(dest: pathlib.Path, keep: int) -> list[pathlib.Path]:
    """Remove all but the newest `keep` copies; return what was removed."""
    old = copies(dest)[:-keep]
    for path in old:
        path.unlink(missing_ok=True)
    return old


def _fsync_dir(path: pathlib.Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ponderd.backup", description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="the daemon's config file (for state_dir); default: PONDER_CONFIG")
    parser.add_argument("--state-dir", help="the daemon's state directory (overrides the config)")
    parser.add_argument("--dest", help="where copies go (default: STATE_DIR/backups)")
    parser.add_argument("--keep", type=int, default=DEFAULT_KEEP, help=f"copies to keep (default {DEFAULT_KEEP})")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    os.umask(0o077)  # run by hand, too: nothing this writes is for other users
    try:
        settings = load_settings(pathlib.Path(args.config) if args.config else None,
                                 overrides={"state_dir": args.state_dir})
        dest = pathlib.Path(args.dest) if args.dest else settings.state_dir / "backups"
        result = backup(settings.database, dest, args.keep)
    except (SettingsError, BackupError, OSError) as exc:
        log.error("backup failed: %s", exc)
        return 1
    log.info(
        "backed up %s to %s (%d pages, integrity ok); removed %d old cop%s, keeping %d",
        settings.database, result.path, result.pages, len(result.removed),
        "y" if len(result.removed) == 1 else "ies", min(args.keep, len(copies(dest))),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
