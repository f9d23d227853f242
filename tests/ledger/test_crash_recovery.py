"""SIGKILL under load, three times, then a restart: the file is intact and the money adds up."""

from __future__ import annotations

import contextlib
import queue
import signal
import sqlite3
from typing import Iterator

import grpc
import pytest

from conftest import DaemonProcess
from ponder.v1 import ponder_pb2, ponder_pb2_grpc

pytestmark = pytest.mark.model


@contextlib.contextmanager
def killed_at_exit(d: DaemonProcess) -> Iterator[None]:
    """Never leave a daemon running if the test fails before it kills it."""
    try:
        yield
    finally:
        if d.proc.poll() is None:
            d.proc.kill()
            d.proc.wait(30)


def test_sigkill_under_load_three_times_loses_no_answered_request(cli_env):
    answered: dict[str, int] = {}
    for round_ in range(3):
        d = DaemonProcess(cli_env)
        address = d.wait_ready()
        token = (d.state_dir / "local.token").read_text().strip()
        with grpc.insecure_channel(address) as ch, killed_at_exit(d):
            stub = ponder_pb2_grpc.PonderServiceStub(ch)
            calls = [
                stub.Ask.future(
                    ponder_pb2.AskRequest(
                        prompt=f"Round {round_}, question {i}: name a river and say where it flows.",
                        hints=ponder_pb2.Hints(samples=1 + i % 2, thinking_tokens=16 * (i % 2)),
                        seed=1 + i,
                    ),
                    metadata=(("authorization", f"Bearer {token}"),),
                    timeout=120,
                )
                for i in range(8)
            ]
            # Kill once some answers are back and the rest are mid-flight.
            finished: queue.Queue = queue.Queue()
            for call in calls:
                call.add_done_callback(finished.put)
            for _ in range(3):
                response = finished.get(timeout=120).result()
                answered[response.request_id] = round(response.cost * 1e6)
            d.proc.send_signal(signal.SIGKILL)
            assert d.proc.wait(30) == -signal.SIGKILL
            for call in calls:
                # Any answer that reached the client before the kill must have its record.
                if call.done() and call.exception() is None:
                    answered[call.result().request_id] = round(call.result().cost * 1e6)
        d._log.close()
    assert len(answered) >= 9  # three rounds, at least three answers each

    d = DaemonProcess(cli_env)
    d.wait_ready()  # start-up settles what the dead processes left reserved
    try:
        with sqlite3.connect(d.state_dir / "ponder.db") as conn:
            conn.row_factory = sqlite3.Row
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            records = {r["request_id"]: dict(r) for r in conn.execute("SELECT * FROM spend")}
            assert conn.execute("SELECT COUNT(*) FROM reservations").fetchone()[0] == 0
            tenant = dict(conn.execute("SELECT * FROM tenants WHERE name = 'local'").fetchone())
        for request_id, cost in answered.items():
            assert records[request_id]["status"] == "ok"
            assert records[request_id]["cost_micros"] == cost
        # Requests in flight at a kill were charged their reservation, marked interrupted.
        assert {r["status"] for r in records.values()} <= {"ok", "interrupted"}
        spent = sum(r["cost_micros"] for r in records.values() if r["window_start"] == tenant["window_start"])
        assert tenant["spent_micros"] == spent and tenant["reserved_micros"] == 0
        assert all(r["cost_micros"] <= r["reserved_micros"] for r in records.values())
    finally:
        assert d.stop() == 0
