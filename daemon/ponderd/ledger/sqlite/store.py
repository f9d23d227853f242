"""The SQLite file: schema migrations, and one owner thread that runs every query in order.

SQLite allows one writer at a time; funnelling all work through a single thread
makes each ledger operation a plain transaction with nothing to race against,
and keeps the event loop free of disk I/O.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import os
import pathlib
import sqlite3
import threading
from typing import Any, Callable, TypeVar

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

from ponderd.errors import StorageUnavailable
from ponderd.private import owner_only, private_dir

T = TypeVar("T")

migrations = Migrations("ponder")


@migrations()
def m001_initial(db: Database) -> None:
    db.execute(
        """CREATE TABLE tenants (
            name TEXT PRIMARY KEY,
            enabled INTEGER NOT NULL DEFAULT 1,
            budget_micros INTEGER NOT NULL,
            window TEXT NOT NULL CHECK (window IN ('day', 'week', 'month')),
            window_start TEXT NOT NULL,
            spent_micros INTEGER NOT NULL DEFAULT 0,
            reserved_micros INTEGER NOT NULL DEFAULT 0,
            created_at TEXT NOT NULL,
            CHECK (spent_micros >= 0 AND reserved_micros >= 0)
        )"""
    )
    db.execute(
        """CREATE TABLE keys (
            key_id TEXT PRIMARY KEY,
            tenant TEXT REFERENCES tenants(name),
            scope TEXT NOT NULL CHECK (scope IN ('tenant', 'admin')),
            secret_sha256 TEXT NOT NULL,
            label TEXT NOT NULL DEFAULT '',
            created_at TEXT NOT NULL,
            revoked_at TEXT
        )"""
    )
    db.execute(
        """CREATE TABLE reservations (
            request_id TEXT PRIMARY KEY,
            tenant TEXT NOT NULL REFERENCES tenants(name),
            amount_micros INTEGER NOT NULL CHECK (amount_micros >= 0),
            created_at TEXT NOT NULL,
            plan TEXT NOT NULL
        )"""
    )
    db.execute(
        """CREATE TABLE spend (
            request_id TEXT PRIMARY KEY,
            tenant TEXT NOT NULL REFERENCES tenants(name),
            at TEXT NOT NULL,
            window_start TEXT NOT NULL,
            severity TEXT NOT NULL,
            needs_reasoning INTEGER NOT NULL,
            model_severity TEXT NOT NULL,
            model_needs_reasoning INTEGER NOT NULL,
            risk_model TEXT NOT NULL,
            policy_version TEXT NOT NULL,
            level TEXT NOT NULL,
            thinking_cap INTEGER NOT NULL,
            answer_cap INTEGER NOT NULL,
            samples_planned INTEGER NOT NULL,
            prompt_tokens INTEGER NOT NULL,
            thinking_tokens INTEGER NOT NULL,
            answer_tokens INTEGER NOT NULL,
            forced_tokens INTEGER NOT NULL,
            samples_run INTEGER NOT NULL,
            samples_stopped INTEGER NOT NULL,
            reserved_micros INTEGER NOT NULL,
            cost_micros INTEGER NOT NULL,
            latency_ms INTEGER NOT NULL,
            status TEXT NOT NULL,
            error TEXT NOT NULL DEFAULT '',
            answer TEXT NOT NULL DEFAULT '',
            CHECK (cost_micros <= reserved_micros)
        )"""
    )
    db.execute("CREATE INDEX spend_tenant_at ON spend (tenant, at)")
    db.execute("CREATE INDEX spend_at ON spend (at)")
    # Prompts live apart from spend so retention can drop them without touching the ledger.
    db.execute(
        """CREATE TABLE prompts (
            request_id TEXT PRIMARY KEY REFERENCES spend(request_id),
            at TEXT NOT NULL,
            text TEXT NOT NULL
        )"""
    )
    db.execute(
        """CREATE TABLE feedback (
            feedback_id TEXT PRIMARY KEY,
            request_id TEXT NOT NULL REFERENCES spend(request_id),
            tenant TEXT NOT NULL,
            at TEXT NOT NULL,
            correct INTEGER,
            true_severity TEXT,
            true_needs_reasoning INTEGER,
            comment TEXT NOT NULL DEFAULT '',
            text TEXT
        )"""
    )
    db.execute(
        """CREATE TABLE retrains (
            id INTEGER PRIMARY KEY,
            at TEXT NOT NULL,
            candidate_version TEXT NOT NULL,
            accepted INTEGER NOT NULL,
            reason TEXT NOT NULL,
            candidate_metrics TEXT NOT NULL,
            incumbent_metrics TEXT NOT NULL,
            feedback_used INTEGER NOT NULL,
            data_hash TEXT NOT NULL DEFAULT ''
        )"""
    )


@migrations()
def m002_heartbeat(db: Database) -> None:
    # One row the health probe rewrites to learn whether the file takes writes again.
    db.execute("CREATE TABLE heartbeat (id INTEGER PRIMARY KEY CHECK (id = 1), n INTEGER NOT NULL)")


@migrations()
def m003_confidence(db: Database) -> None:
    # Per-request summary of the samples' confidence (engine/confidence.py):
    # NULL for requests settled before it was measured, or where no sample produced a token.
    db.execute("ALTER TABLE spend ADD COLUMN confidence_mean REAL DEFAULT NULL")
    db.execute("ALTER TABLE spend ADD COLUMN confidence_min REAL DEFAULT NULL")


@migrations()
def m004_models_and_outcomes(db: Database) -> None:
    # Which served model ran a request, and whether its answer passed the
    # client's check (NULL: no check). accuracy.py learns from these outcomes.
    db.execute("ALTER TABLE spend ADD COLUMN model TEXT NOT NULL DEFAULT ''")
    db.execute("ALTER TABLE spend ADD COLUMN verified INTEGER DEFAULT NULL CHECK (verified IN (0, 1))")
    # Every run of the accuracy update, accepted or not; `counts` is what it learned (JSON).
    db.execute(
        """CREATE TABLE accuracy_updates (
            id INTEGER PRIMARY KEY,
            at TEXT NOT NULL,
            outcomes INTEGER NOT NULL CHECK (outcomes >= 0),
            new_outcomes INTEGER NOT NULL CHECK (new_outcomes >= 0),
            accepted INTEGER NOT NULL CHECK (accepted IN (0, 1)),
            reason TEXT NOT NULL,
            counts TEXT NOT NULL
        )"""
    )


@migrations()
def m005_adaptive_sampling(db: Database) -> None:
    # Samples pruned for low confidence, and why sampling ended ("all", "decided",
    # "beta", "agreed", "pruned"; "" for requests that never sampled or predate it).
    db.execute("ALTER TABLE spend ADD COLUMN samples_pruned INTEGER NOT NULL DEFAULT 0")
    db.execute("ALTER TABLE spend ADD COLUMN stop_reason TEXT NOT NULL DEFAULT ''")


@migrations()
def m006_idempotency_keys(db: Database) -> None:
    # One row per tenant and idempotency key (idempotency.py owns it): the
    # request's fingerprint, the attempt running under the key (request_id, the
    # spend record it settles into) and, once answered, the serialized
    # AskResponse a repeat gets back. state: running | done | lost (answered and
    # charged, but the process stopped before the reply was kept).
    db.execute(
        """CREATE TABLE idempotency_keys (
            tenant TEXT NOT NULL REFERENCES tenants(name),
            key TEXT NOT NULL,
            fingerprint TEXT NOT NULL,
            state TEXT NOT NULL CHECK (state IN ('running', 'done', 'lost')),
            request_id TEXT NOT NULL,
            reply BLOB,
            created_at TEXT NOT NULL,
            expires_at TEXT NOT NULL,
            PRIMARY KEY (tenant, key),
            CHECK ((state = 'done') = (reply IS NOT NULL))
        )"""
    )
    db.execute("CREATE INDEX idempotency_keys_expires ON idempotency_keys (expires_at)")


@migrations()
def m007_fleet_outbox(db: Database) -> None:
    # With the fleet ledger (ledger/postgres/) this file is the host's buffer:
    # a spend record is written with shipped = 0 and set to 1 once the central
    # ledger has it. A single host's records are written as shipped: nothing waits.
    db.execute("ALTER TABLE spend ADD COLUMN shipped INTEGER NOT NULL DEFAULT 1")
    db.execute("CREATE INDEX spend_unshipped ON spend (at) WHERE shipped = 0")


@migrations()
def m008_key_lifetime(db: Database) -> None:
    # A key may expire (NULL: never); a rotated key names its successor and expires
    # at the end of the overlap. last_used_at is written in batches by the
    # flush_key_usage job (ledger/keys.py), never by the request itself.
    db.execute("ALTER TABLE keys ADD COLUMN expires_at TEXT DEFAULT NULL")
    db.execute("ALTER TABLE keys ADD COLUMN last_used_at TEXT DEFAULT NULL")
    db.execute("ALTER TABLE keys ADD COLUMN replaced_by TEXT DEFAULT NULL")


@migrations()
def m009_alerts(db: Database) -> None:
    # One row per alert raised (request/alerts.py): the unique key makes it once per tenant,
    # window and kind ("soft_limit", "budget_exhausted"), also across restarts. The table is
    # also the webhook's outbox (serve/webhook.py): a row waits until a POST of it succeeds
    # (delivered_at), retried with backoff (attempts, next_attempt_at, last_error).
    db.execute(
        """CREATE TABLE alerts (
            id INTEGER PRIMARY KEY,
            tenant TEXT NOT NULL,
            window_start TEXT NOT NULL,
            kind TEXT NOT NULL,
            at TEXT NOT NULL,
            spent_micros INTEGER NOT NULL,
            budget_micros INTEGER NOT NULL,
            delivered_at TEXT DEFAULT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt_at TEXT DEFAULT NULL,
            last_error TEXT NOT NULL DEFAULT '',
            UNIQUE (tenant, window_start, kind)
        )"""
    )
    db.execute("CREATE INDEX alerts_undelivered ON alerts (next_attempt_at) WHERE delivered_at IS NULL")


@migrations()
def m010_key_budgets(db: Database) -> None:
    # A key may carry a cap of its own inside its tenant's budget (NULL: none), in
    # micro-credits per the tenant's window. Per key, as per tenant: spent + reserved
    # <= budget whenever a reservation is taken (ledger.py: reserve_first_fitting, in the
    # same transaction as the tenant's). spent_micros restarts when the tenant's window
    # does; a reservation names the key it counts against, so settling it corrects both.
    db.execute(
        "ALTER TABLE keys ADD COLUMN budget_micros INTEGER DEFAULT NULL "
        "CHECK (budget_micros IS NULL OR budget_micros >= 0)"
    )
    db.execute("ALTER TABLE keys ADD COLUMN spent_micros INTEGER NOT NULL DEFAULT 0 CHECK (spent_micros >= 0)")
    db.execute("ALTER TABLE keys ADD COLUMN reserved_micros INTEGER NOT NULL DEFAULT 0 CHECK (reserved_micros >= 0)")
    db.execute("ALTER TABLE reservations ADD COLUMN key_id TEXT DEFAULT NULL")


def connect(path: pathlib.Path) -> Database:
    """Open (creating if needed) the database and bring its schema up to date."""
    private_dir(path.parent)
    # The file holds prompts, answers and spend: owner-only, whatever the umask.
    # It is created 0600 here, before SQLite opens it, because SQLite gives the
    # -wal and -shm files it creates later the main file's mode; that covers a
    # -wal re-created long after start-up too, which a chmod after connect would
    # not. (Narrowing the process umask around connect would also work, but the
    # umask is process-wide and other threads create files meanwhile.)
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    owner_only(path)
    conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
    db = Database(conn)
    db.execute("PRAGMA journal_mode = WAL")
    # Budgets are money: a committed settle must survive power loss too.
    db.execute("PRAGMA synchronous = FULL")
    db.execute("PRAGMA foreign_keys = ON")
    db.execute("PRAGMA busy_timeout = 5000")
    migrations.apply(db)
    # Files an older version (or another tool) left readable by others.
    for side in ("-wal", "-shm"):
        owner_only(path.with_name(path.name + side))
    return db


# SQLite result codes (the low byte of an extended code) that mean the file
# cannot be written right now rather than that the query is wrong: the caller
# gets UNAVAILABLE and the daemon reports its database NOT_SERVING until a
# write succeeds again.
_STORAGE_CODES = {
    5: "the database is locked by another process",  # SQLITE_BUSY
    8: "the database file is read-only",  # SQLITE_READONLY
    10: "disk I/O error",  # SQLITE_IOERR
    13: "the database or disk is full",  # SQLITE_FULL
    14: "the database file cannot be opened",  # SQLITE_CANTOPEN
}


def storage_fault(exc: BaseException) -> str | None:
    """Why the database cannot be written, if `exc` is a storage fault; None for any other error."""
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        if code is not None and code & 0xFF in _STORAGE_CODES:
            return f"{_STORAGE_CODES[code & 0xFF]} ({exc})"
    if isinstance(exc, OSError):
        return f"{exc.strerror or exc}"
    return None


class _Job:
    """One caller's function, waiting for (or in) a batch; `future` is how its caller hears the outcome."""

    __slots__ = ("fn", "args", "future")

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.fn, self.args = fn, args
        self.future: concurrent.futures.Future[Any] = concurrent.futures.Future()


class _BatchLost(Exception):
    """The batch's transaction is gone (a fault at BEGIN or COMMIT, or SQLite rolled it back)."""


#: The most calls one batch runs before its COMMIT.
BATCH_LIMIT = 256


class Store:
    """Owns the connection; `call` runs a function of the Database on the owner thread.

    Group commit (the default): calls that arrive while the owner thread is busy
    queue up, and the owner thread runs up to BATCH_LIMIT of them as one
    transaction, each inside its own SAVEPOINT, then COMMITs once: one fsync for
    the batch. A call that raises rolls back only its savepoint and hears its
    own exception. Nobody hears a result before the COMMIT of its batch has
    returned (synchronous=FULL: the batch is on disk). If the batch's
    transaction is lost (a fault at COMMIT, or SQLite rolled it back), the calls
    whose effects were lost run again one by one, each in its own transaction,
    so every caller gets its own true result. A caller cancelled while its call
    waits is dropped; once its call is in a batch, the batch decides its outcome.
    `group_commit=False` runs every call as its own transaction (the baseline).

    It also knows whether the file takes writes: a storage fault (disk full,
    I/O error) marks it unwritable and becomes StorageUnavailable for the
    caller; the next call that writes successfully marks it writable again.
    """

    def __init__(self, path: pathlib.Path, group_commit: bool = True, batch_limit: int = BATCH_LIMIT) -> None:
        self.path = path
        self.group_commit = group_commit
        self.batch_limit = batch_limit
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="ponder-db")
        self._db: Database | None = None
        self._queue: collections.deque[_Job] = collections.deque()
        self._lock = threading.Lock()
        self._draining = False
        # Read from other threads; written only on the owner thread.
        self.fault: str = ""
        self.batches = 0  # batches committed
        self.batched_calls = 0  # calls those batches ran
        self.fallbacks = 0  # batches whose transaction was lost and whose calls ran one by one

    @property
    def writable(self) -> bool:
        return not self.fault

    @property
    def pending(self) -> int:
        """Calls queued for the next batch (group commit), cancelled ones not yet dropped included."""
        with self._lock:
            return len(self._queue)

    def open(self) -> None:
        self._db = self._pool.submit(connect, self.path).result()

    def _unavailable(self, reason: str, exc: BaseException) -> StorageUnavailable:
        self.fault = reason
        err = StorageUnavailable(
            f"the database at {self.path} cannot be written: {reason}; nothing was charged for this call. "
            "Free disk space or fix the disk, then retry: Ponder recovers by itself"
        )
        err.__cause__ = exc
        return err

    def _run(self, fn: Callable[..., T], *args: Any) -> T:
        if self._db is None:
            raise RuntimeError("store is not open")
        conn = self._db.conn
        before = conn.total_changes
        try:
            out = fn(self._db, *args)
        except Exception as exc:
            reason = storage_fault(exc)
            if reason is None:
                raise
            if conn.in_transaction:  # a failed COMMIT can leave the transaction open
                conn.execute("ROLLBACK")
            raise self._unavailable(reason, exc) from exc
        if self.fault and conn.total_changes != before:
            self.fault = ""
        return out

    # group commit ------------------------------------------------------------

    def _submit(self, fn: Callable[..., T], args: tuple[Any, ...]) -> concurrent.futures.Future[T]:
        if not self.group_commit:
            return self._pool.submit(self._run, fn, *args)
        job = _Job(fn, args)
        with self._lock:
            self._queue.append(job)
            start = not self._draining
            self._draining = True
        if start:
            self._pool.submit(self._drain)
        return job.future

    def _drain(self) -> None:
        """On the owner thread: run batches until the queue is empty."""
        while True:
            with self._lock:
                batch: list[_Job] = []
                while self._queue and len(batch) < self.batch_limit:
                    job = self._queue.popleft()
                    # False: its caller was cancelled while it waited; it is dropped, never run.
                    if job.future.set_running_or_notify_cancel():
                        batch.append(job)
                if not batch:
                    self._draining = False
                    return
            try:
                self._run_batch(batch)
            except BaseException as exc:  # never strand a caller
                for job in batch:
                    if not job.future.done():
                        job.future.set_exception(exc)

    def _run_batch(self, batch: list[_Job]) -> None:
        if self._db is None:
            err = RuntimeError("store is not open")
            for job in batch:
                job.future.set_exception(err)
            return
        db, conn = self._db, self._db.conn
        # Per job: None (its effects are in the open transaction, or it has not run) or its final exception.
        failed: list[BaseException | None] = [None] * len(batch)
        values: list[Any] = [None] * len(batch)
        wrote = False  # a call after this batch's last storage fault changed rows (and kept them)
        try:
            self._execute(conn, "BEGIN IMMEDIATE")
            for i, job in enumerate(batch):
                self._execute(conn, "SAVEPOINT ponder_call")
                before = conn.total_changes
                try:
                    values[i] = job.fn(db, *job.args)
                except BaseException as exc:
                    if not conn.in_transaction:  # SQLite rolled the whole batch back
                        reason = storage_fault(exc)
                        failed[i] = exc if reason is None else self._unavailable(reason, exc)
                        raise _BatchLost() from exc
                    self._execute(conn, "ROLLBACK TO ponder_call")
                    self._execute(conn, "RELEASE ponder_call")
                    reason = storage_fault(exc) if isinstance(exc, Exception) else None
                    if reason is not None:
                        failed[i] = self._unavailable(reason, exc)
                        wrote = False
                    else:
                        failed[i] = exc
                else:
                    # A call must not COMMIT or ROLLBACK itself (sqlite_utils' atomic() nests as a savepoint).
                    if not conn.in_transaction:
                        raise _BatchLost()
                    self._execute(conn, "RELEASE ponder_call")
                    wrote = wrote or conn.total_changes != before
            self._commit(conn)
        except BaseException:
            self._rollback(conn)
            self.fallbacks += 1
            self._one_by_one(batch, failed)
            return
        self.batches += 1
        self.batched_calls += len(batch)
        if self.fault and wrote:
            self.fault = ""
        # Acknowledged only now, after the batch's COMMIT.
        for i, job in enumerate(batch):
            if failed[i] is not None:
                job.future.set_exception(failed[i])  # type: ignore[arg-type]
            else:
                job.future.set_result(values[i])

    def _one_by_one(self, batch: list[_Job], failed: list[BaseException | None]) -> None:
        """The batch's transaction was lost: a call that raised keeps its exception (it changed
        nothing); every other call runs again alone, in its own transaction, and its caller gets that result."""
        for job, exc in zip(batch, failed):
            if exc is not None:
                job.future.set_exception(exc)
                continue
            try:
                out = self._run(job.fn, *job.args)
            except BaseException as err:
                job.future.set_exception(err)
            else:
                job.future.set_result(out)

    # Seams for fault injection in tests: the statements a batch runs around its calls.
    def _execute(self, conn: sqlite3.Connection, sql: str) -> None:
        conn.execute(sql)

    def _commit(self, conn: sqlite3.Connection) -> None:
        conn.execute("COMMIT")

    def _rollback(self, conn: sqlite3.Connection) -> None:
        if conn.in_transaction:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass

    # callers -----------------------------------------------------------------

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run fn(db, *args) on the owner thread without blocking the event loop.

        Cancelling the caller before its call is taken into a batch drops the
        call; after that, the call completes (or fails) with its batch.
        """
        return await asyncio.wrap_future(self._submit(fn, args))

    def call_sync(self, fn: Callable[..., T], *args: Any) -> T:
        """Run fn(db, *args) on the owner thread and wait: for jobs and start-up."""
        return self._submit(fn, args).result()

    async def probe(self) -> bool:
        """Try one small write; True (and writable again) if the database takes it."""
        try:
            await self.call(_touch)
        except StorageUnavailable:
            return False
        return True

    def close(self) -> None:
        """Finish queued work, checkpoint the WAL and close the file."""
        if self._db is not None:
            self._pool.submit(self._close).result()
        self._pool.shutdown(wait=True)

    def _close(self) -> None:
        assert self._db is not None
        try:
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            self._db.close()
            self._db = None


def _touch(db: Database) -> None:
    db.execute("INSERT OR REPLACE INTO heartbeat (id, n) VALUES (1, COALESCE((SELECT n FROM heartbeat WHERE id = 1), 0) + 1)")
