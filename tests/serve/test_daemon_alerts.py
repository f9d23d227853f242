"""Soft-limit alerts through the real daemon: one per tenant and window, a log line and a counter, kept across a restart."""

from __future__ import annotations

import logging
import sqlite3

import pytest

from conftest import SMALL_POLICY, DaemonThread, make_settings, scrape, value
from ponder import errors
from ponder.client import PonderClient

pytestmark = pytest.mark.model

POLICY = """
[tenants.watched]
hints = ["severity_floor", "max_cost", "samples", "thinking_tokens"]
soft_limit = 0.3
"""


def alerts(d):
    db = sqlite3.connect(f"file:{d.settings.state_dir / 'ponder.db'}?mode=ro", uri=True)
    try:
        return db.execute("SELECT tenant, kind FROM alerts ORDER BY id").fetchall()
    finally:
        db.close()


def ask(d, token):
    with PonderClient(d.address, token, timeout=300, retries=False) as c:
        try:
            return c.ask("Say yes.", samples=1, thinking_tokens=0)
        except errors.PonderError as exc:
            return exc


def test_crossing_the_soft_limit_alerts_once_per_window_even_across_a_restart(tmp_path, caplog):
    policy = tmp_path / "policy.toml"
    policy.write_text(SMALL_POLICY.read_text() + POLICY)
    settings = make_settings(tmp_path / "state", policy=policy)
    d = DaemonThread(settings).start()
    try:
        with d.admin() as admin:
            token = admin.create_tenant("watched", 0.2).token
        with caplog.at_level(logging.WARNING, logger="ponder.alerts"):
            first = ask(d, token)
            assert not isinstance(first, Exception) and first.cost >= 0.3 * 0.2, first
            second = ask(d, token)
        lines = [r for r in caplog.records if r.name == "ponder.alerts"]
        assert len(lines) == 1 and "alert soft_limit: tenant 'watched'" in lines[0].getMessage()
        (fields,) = [r.fields["alert"] for r in lines]  # the JSON log's own field
        assert fields["tenant"] == "watched" and fields["budget"] == 0.2 and fields["spent"] >= 0.06
        assert value(scrape(d), "ponder_alerts_total", tenant="watched", kind="soft_limit") == 1
        assert alerts(d) == [("watched", "soft_limit")]
        assert second is not None
    finally:
        d.stop()
    d = DaemonThread(make_settings(tmp_path / "state", policy=policy)).start()
    try:
        results = [ask(d, token) for _ in range(6)]  # spends on, then runs out
        assert any(isinstance(r, errors.BudgetExhausted) for r in results)
        assert value(scrape(d), "ponder_alerts_total", tenant="watched", kind="soft_limit") == 0  # not again
        assert alerts(d) == [("watched", "soft_limit"), ("watched", "budget_exhausted")]
    finally:
        d.stop()
