"""Budgets through the real daemon: exhaustion, degradation, renewal, concurrency, restarts, crashes."""

import concurrent.futures
import json
import sqlite3
from datetime import timedelta

import grpc
import pytest
from google.rpc import error_details_pb2

from conftest import DaemonThread, make_settings
from ponder.client import PonderError

pytestmark = pytest.mark.model

# With the small test policy a 'direct' answer reserves about 0.09 credits.
PROMPT = "Name a colour."


def tenant(d, name, budget, window="day"):
    with d.admin() as admin:
        return admin.create_tenant(name, budget, window).token


def test_a_spent_budget_gets_resource_exhausted_with_quota_failure(daemon):
    token = tenant(daemon, "tiny", 0.01)
    with daemon.client(token) as c, pytest.raises(PonderError) as err:
        c.ask(PROMPT)
    e = err.value
    assert e.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "tenant 'tiny' has 0.010000 credits left" in e.message and "renews at" in e.message
    quota = e.quota_failure
    assert isinstance(quota, error_details_pb2.QuotaFailure)
    assert quota.violations[0].subject == "tenant:tiny"
    info = next(d for d in e.details if isinstance(d, error_details_pb2.ErrorInfo))
    assert info.reason == "BUDGET_EXHAUSTED" and int(info.metadata["remaining_micros"]) == 10_000
    with sqlite3.connect(daemon.settings.database) as conn:
        status, cost = conn.execute("SELECT status, cost_micros FROM spend WHERE tenant = 'tiny'").fetchone()
        assert (status, cost) == ("refused", 0)
        assert conn.execute("SELECT COUNT(*) FROM reservations").fetchone()[0] == 0


def test_a_short_budget_degrades_the_plan_down_the_ladder(daemon):
    prompt = "Plan the steps to compute 23 * 47."
    with daemon.client() as c:
        careful = c.quote(prompt, level="careful").plan.worst_case_cost
        brief = c.quote(prompt, level="brief").plan.worst_case_cost
    budget = (careful + brief) / 2
    token = tenant(daemon, "thrifty", budget)
    with daemon.client(token) as c:
        # A high-severity floor routes to 'careful' or 'thorough'; only 'brief' (the floor) fits.
        r = c.ask(prompt, severity_floor="high")
    assert r.plan.level == "brief"
    assert any(reason.startswith("budget: degraded from") and reason.endswith("to brief") for reason in r.plan.reasons)
    assert r.cost <= brief


def test_window_renewal_restores_the_budget(clocked_daemon, clock):
    d = clocked_daemon
    token = tenant(d, "daily", 0.2)
    with d.client(token) as c:
        c.ask(PROMPT, seed=1)
        spent = c.balance()
        assert spent.spent > 0
        with d.admin() as admin:
            assert "renewed 0" in admin.run_job("renew_windows")
            clock.advance(timedelta(days=1))
            assert admin.run_job("renew_windows") == "renewed 2 tenant window(s): daily, local"
        renewed = c.balance()
    assert renewed.spent == 0 and renewed.remaining == pytest.approx(0.2)
    assert renewed.window_start.ToDatetime() > spent.window_start.ToDatetime()
    # The scheduler has the same job on its calendar.
    assert d.daemon.jobs._scheduler.get_job("renew_windows") is not None


def test_concurrent_asks_never_overspend(daemon):
    with daemon.client() as c:
        worst = c.quote(PROMPT).plan.worst_case_cost
    budget = worst * 3.5
    token = tenant(daemon, "rush", budget)

    def ask(i):
        with daemon.client(token) as c:
            try:
                return c.ask(PROMPT, seed=i).cost
            except PonderError as e:
                assert e.code == grpc.StatusCode.RESOURCE_EXHAUSTED
                return None

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(ask, range(8)))
    served = [r for r in results if r is not None]
    assert len(served) >= 3
    with daemon.client(token) as c:
        b = c.balance()
    assert b.spent == pytest.approx(sum(served)) and b.spent <= budget and b.reserved == 0
    with sqlite3.connect(daemon.settings.database) as conn:
        rows = conn.execute("SELECT status, COUNT(*) FROM spend WHERE tenant='rush' GROUP BY status").fetchall()
    assert dict(rows).get("ok") == len(served) and sum(n for _, n in rows) == 8


def test_budget_state_survives_a_restart_and_a_crash_is_settled(tmp_path):
    settings = make_settings(tmp_path / "state")
    d = DaemonThread(settings).start()
    try:
        with d.client() as c:
            c.ask(PROMPT, seed=4)
            spent = c.balance().spent
    finally:
        d.stop()
    # Simulate a process that died mid-request: its reservation is still in the file.
    with sqlite3.connect(settings.database) as conn:
        plan = json.dumps({"plan": {"level": "direct", "samples": 1}, "assessment": {"severity": "low"}})
        conn.execute(
            "INSERT INTO reservations (request_id, tenant, amount_micros, created_at, plan) "
            "VALUES ('crashed1', 'local', 50000, '2026-01-01T00:00:00+00:00', ?)", [plan]
        )
        conn.execute("UPDATE tenants SET reserved_micros = reserved_micros + 50000 WHERE name = 'local'")
    d = DaemonThread(settings).start()
    try:
        with d.client() as c:
            b = c.balance()
    finally:
        d.stop()
    assert b.reserved == 0
    assert b.spent == pytest.approx(spent + 0.05)
    with sqlite3.connect(settings.database) as conn:
        status, cost = conn.execute("SELECT status, cost_micros FROM spend WHERE request_id = 'crashed1'").fetchone()
    assert (status, cost) == ("interrupted", 50000)
