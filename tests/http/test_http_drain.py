"""SIGTERM's drain covers HTTP requests: new connections are refused at once, a running stream ends and is charged."""

from __future__ import annotations

import http.client
import json
import socket
import sqlite3

import pytest

from conftest import DaemonThread, eventually, make_settings

pytestmark = pytest.mark.model


def test_a_running_stream_drains_and_new_connections_are_refused(tmp_path):
    d = DaemonThread(make_settings(tmp_path / "state", http={"listen": "127.0.0.1:0"}, drain_seconds=30)).start()
    port = d.server.http.port
    try:
        body = {
            "model": "default", "messages": [{"role": "user", "content": "Think about the sea, then describe it."}],
            "stream": True, "seed": 9, "ponder": {"samples": 3, "thinking_tokens": 32},
        }
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        conn.request("POST", "/v1/chat/completions", body=json.dumps(body),
                     headers={"content-type": "application/json", "authorization": f"Bearer {d.token('local')}"})
        response = conn.getresponse()
        request_id = response.getheader("x-request-id")
        assert response.status == 200 and response.readline().startswith(b"data: ")  # planned and running
        d._loop.call_soon_threadsafe(d.server.should_exit.set)  # what SIGTERM does

        def refused() -> bool:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=5).close()
            except ConnectionRefusedError:
                return True
            except ConnectionResetError:  # accepted into the backlog as the listener closed: not yet refused
                return False
            return False

        eventually(refused)
        rest = response.read().decode()
        conn.close()
        assert rest.rstrip().endswith("data: [DONE]"), rest[-300:]
    finally:
        d.stop()
    with sqlite3.connect(d.settings.database) as db:
        assert db.execute("SELECT status FROM spend WHERE request_id = ?", (request_id,)).fetchone() == ("ok",)
        assert db.execute("SELECT COUNT(*) FROM reservations").fetchone()[0] == 0
