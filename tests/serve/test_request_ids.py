"""Every error a client sees carries the request id, and the access line agrees with the ledger record.

Through the real daemon (model, SQLite file, gRPC on loopback), the real Python
client and the real CLI in a subprocess. The engine is held at a seam (its
`generate`) only where a test needs a request to be running when its deadline
passes, or to fail.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import subprocess
import sys
import threading
from typing import Any, Iterator

import grpc
import pytest

from conftest import REPO, DaemonThread, eventually, make_settings
from ponder import errors
from ponder.client import PonderClient, PonderError
from ponderd.serve.boundary import STATUS

pytestmark = pytest.mark.model


class AccessLines(logging.Handler):
    """The daemon's access lines, as the JSON log format would write their fields."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(dict(getattr(record, "fields", {})["access"]))

    def of(self, request_id: str) -> dict[str, Any] | None:
        return next((line for line in self.lines if line["request_id"] == request_id), None)


@pytest.fixture(scope="module")
def access() -> Iterator[AccessLines]:
    logger = logging.getLogger("ponder.access")
    handler, level = AccessLines(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(level)


@pytest.fixture(scope="module")
def d(tmp_path_factory: pytest.TempPathFactory, access: AccessLines) -> Iterator[DaemonThread]:
    daemon = DaemonThread(make_settings(tmp_path_factory.mktemp("ids") / "state")).start()
    yield daemon
    daemon.stop()


def record(d: DaemonThread, request_id: str) -> dict[str, Any] | None:
    with sqlite3.connect(d.settings.database) as conn:
        conn.row_factory = sqlite3.Row
        row = conn.execute("SELECT * FROM spend WHERE request_id = ?", (request_id,)).fetchone()
    return dict(row) if row else None


def raised(call: Any, *args: Any, **kwargs: Any) -> PonderError:
    with pytest.raises(PonderError) as err:
        call(*args, **kwargs)
    assert len(err.value.request_id) == 24, err.value
    return err.value


def agree(d: DaemonThread, access: AccessLines, e: PonderError, code: str, outcome: str) -> dict[str, Any]:
    """The request's ledger record and access line say the same: id, outcome, cost; the line has the status."""
    line = eventually(lambda: access.of(e.request_id))
    row = eventually(lambda: record(d, e.request_id))
    assert line["status"] == code == e.code.name
    assert row["status"] == outcome and line["outcome"] == outcome
    assert line["cost"] == f"{row['cost_micros'] / 1e6:.6f}"
    assert line["tenant"] == row["tenant"]
    return row


@pytest.fixture
def held_engine(d: DaemonThread) -> Iterator[dict[str, Any]]:
    """The primary engine's `generate`, gated: each job waits for `gate` (or raises `fail`) before it runs."""
    engine = d.daemon.pipeline.engine.get(d.daemon.pipeline.engine.primary)
    real = engine.generate
    state: dict[str, Any] = {"gate": threading.Event(), "entered": threading.Event(), "fail": None}

    async def generate(job: Any) -> Any:
        state["entered"].set()
        if state["fail"] is not None:
            raise state["fail"]
        await asyncio.to_thread(state["gate"].wait, 120)
        return await real(job)

    engine.generate = generate
    yield state
    state["gate"].set()
    del engine.generate


def test_a_refusal_carries_the_request_id_of_its_ledger_record_in_the_client_and_the_cli(d, access, cli_env):
    with d.admin() as admin:
        token = admin.create_tenant("tiny", 0.01).token
    with d.client(token) as c:
        e = raised(c.ask, "Name a colour.")
    assert isinstance(e, errors.BudgetExhausted)
    assert e.error_info.metadata["request_id"] == e.request_id and e.request_id in str(e)
    row = agree(d, access, e, "RESOURCE_EXHAUSTED", "refused")
    assert row["cost_micros"] == 0

    cli = subprocess.run(
        [sys.executable, "-m", "ponder", "--address", d.address, "--token", token, "ask", "Name a colour."],
        env=cli_env, capture_output=True, text=True, timeout=120,
    )
    assert cli.returncode == 1
    (line,) = cli.stderr.strip().splitlines()
    assert line.startswith("ponder: RESOURCE_EXHAUSTED: ") and line.endswith(")"), line
    rid = line.rsplit("(request ", 1)[1].rstrip(")")
    assert record(d, rid)["status"] == "refused"
    assert eventually(lambda: access.of(rid))["status"] == "RESOURCE_EXHAUSTED"


def test_a_request_refused_before_it_has_a_record_still_has_its_id_in_the_access_log(d, access):
    with d.client() as c:
        e = raised(c.ask, "   ")
    assert isinstance(e, errors.InvalidArgument)
    line = eventually(lambda: access.of(e.request_id))
    assert line["status"] == "INVALID_ARGUMENT" and line["outcome"] == "-" and line["cost"] == "-"
    assert record(d, e.request_id) is None
    with PonderClient(d.address, "pnd_nokey_nosecret") as c:
        e = raised(c.balance)
    assert eventually(lambda: access.of(e.request_id))["status"] == "UNAUTHENTICATED"


def test_unavailable_while_draining_carries_the_request_id(d, access):
    d.daemon.pipeline.inflight.draining = True
    try:
        with PonderClient(d.address, d.token(), retries=False, timeout=60) as c:
            e = raised(c.ask, "Name a colour.")
    finally:
        d.daemon.pipeline.inflight.draining = False
    assert isinstance(e, errors.Unavailable) and e.retry_delay == 1.0
    assert eventually(lambda: access.of(e.request_id))["status"] == "UNAVAILABLE"


def test_deadline_exceeded_has_the_request_id_and_the_line_written_when_the_request_settles(d, access, held_engine):
    with d.client() as c:
        # The job waits at the gate until the client's own deadline has ended the call.
        e = raised(c.ask, "Name a colour.", timeout=2.0)
    assert isinstance(e, errors.DeadlineExceeded) and held_engine["entered"].is_set()
    assert access.of(e.request_id) is None  # the request runs on: its line waits for its record
    held_engine["gate"].set()
    row = agree(d, access, e, "DEADLINE_EXCEEDED", "deadline")
    assert row["reserved_micros"] >= row["cost_micros"]


def test_internal_carries_the_request_id_of_its_failed_record(d, access, held_engine):
    held_engine["fail"] = RuntimeError("boom")
    with d.client() as c:
        e = raised(c.ask, "Name a colour.")
    assert isinstance(e, errors.Internal) and e.reason == "ENGINE_FAILURE"
    assert e.code == grpc.StatusCode.INTERNAL
    agree(d, access, e, "INTERNAL", "failed")


def test_docs_errors_lists_every_error_of_the_boundary_table_with_its_status():
    """Each domain error class (its reason) and the status the boundary gives it is a row of docs/errors.md."""
    from ponderd import errors as domain
    from ponderd.serve.boundary import status_code

    text = (REPO / "docs" / "errors.md").read_text(encoding="utf-8")
    rows = {tuple(cell.strip().strip("`") for cell in line.strip("|").split("|")[:2]) for line in text.splitlines() if line.startswith("| `")}
    classes, todo = set(), [domain.PonderError]
    while todo:
        cls = todo.pop()
        classes.add(cls)
        todo += cls.__subclasses__()
    assert set(STATUS) <= classes
    for cls in classes:
        if cls.__module__ != domain.__name__:
            continue
        sample = cls.__new__(cls)
        code = status_code(sample).name
        assert (code, cls.reason) in rows, f"docs/errors.md has no row for {code} {cls.reason} ({cls.__name__})"
    assert "ponder-request-id" in text
