"""Alert webhooks through the real daemon: a signed POST to a local HTTP server, retried with backoff from the
ledger's outbox, delivered once, also after a restart. The daemon's clock is a ManualClock: backoff without sleeps."""

from __future__ import annotations

import hashlib
import hmac
import http.server
import json
import threading
from datetime import datetime, timedelta, timezone

import pytest

from conftest import SMALL_POLICY, DaemonThread, eventually, make_settings
from ponder import errors
from ponder.client import PonderClient
from ponderd.clock import ManualClock

pytestmark = pytest.mark.model

SECRET = b"s3cret-shared-with-the-receiver"


class Receiver:
    """A local HTTP server that answers `status` and keeps every POST it gets."""

    def __init__(self) -> None:
        self.status = 503
        self.posts: list[tuple[int, dict, bytes]] = []
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.posts.append((receiver.status, dict(self.headers), body))
                self.send_response(receiver.status)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}/hook"


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.server.shutdown()


def ask_until_the_soft_limit(d, token):
    with PonderClient(d.address, token, timeout=300, retries=False) as c:
        spent = 0.0
        while spent < 0.3 * 0.2:
            try:
                spent = c.ask("Say yes.", samples=1, thinking_tokens=0).balance.spent
            except errors.BudgetExhausted:
                break


def test_an_alert_is_signed_retried_after_backoff_and_delivered_once_across_a_restart(tmp_path, receiver):
    (tmp_path / "webhook.secret").write_bytes(SECRET + b"\n")
    policy = tmp_path / "policy.toml"
    policy.write_text(SMALL_POLICY.read_text() + f"""
[tenants.watched]
hints = ["severity_floor", "max_cost", "samples", "thinking_tokens"]
soft_limit = 0.3

[alerts]
webhook = "{receiver.url}"
secret_file = "webhook.secret"
""")
    clock = ManualClock(datetime(2026, 3, 2, 10, 0, tzinfo=timezone.utc))
    d = DaemonThread(make_settings(tmp_path / "state", policy=policy), clock).start()
    try:
        with d.admin() as admin:
            token = admin.create_tenant("watched", 0.2).token
            ask_until_the_soft_limit(d, token)
            admin.run_job("deliver_alerts")  # the receiver is down (503): the first try fails
            eventually(lambda: receiver.posts)
            tries = len(receiver.posts)
            assert admin.run_job("deliver_alerts") == "no alerts to deliver"  # not due before its backoff
            assert len(receiver.posts) == tries
    finally:
        d.stop()  # the alert waits in the ledger's outbox
    receiver.status = 200
    clock.advance(timedelta(seconds=5))  # the first backoff
    d = DaemonThread(make_settings(tmp_path / "state", policy=policy), clock).start()
    try:
        with d.admin() as admin:
            admin.run_job("deliver_alerts")
            eventually(lambda: any(status == 200 for status, _, _ in receiver.posts))
            assert admin.run_job("deliver_alerts") == "no alerts to deliver"
            (listed,) = admin.list_alerts()
            assert listed.delivered and listed.kind == "soft_limit" and listed.attempts == len(receiver.posts)
            assert listed.id == f"watched/{listed.id.split('/', 1)[1]}" and listed.last_error == ""
    finally:
        d.stop()
    delivered = [(h, b) for status, h, b in receiver.posts if status == 200]
    assert len(delivered) == 1 and all(status == 503 for status, _, _ in receiver.posts[:-1])
    headers, body = delivered[0]
    expected = "sha256=" + hmac.new(SECRET, body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(headers["X-Ponder-Signature"], expected)
    alert = json.loads(body)
    assert alert["kind"] == "soft_limit" and alert["tenant"] == "watched" and alert["budget"] == 0.2
    assert alert["spent"] >= 0.06 and headers["X-Ponder-Event-Id"] == alert["id"]
