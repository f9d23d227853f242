"""Rate and concurrency limits through the real daemon: refusals carry QuotaFailure and RetryInfo, charge nothing.

The daemon's clock is a ManualClock, so the rate buckets refill only when the
test moves it; the running count is read from the limiter (an observable
state), never guessed with sleeps.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import pytest

from conftest import SMALL_POLICY, DaemonThread, eventually, make_settings, scrape, value
from ponder import errors
from ponder.client import PonderClient

pytestmark = pytest.mark.model

PONDER = str(Path(sys.executable).parent / "ponder")
HINTS = 'hints = ["severity_floor", "max_cost", "samples", "thinking_tokens"]'
LIMITS = f"""
[tenants.limited]
{HINTS}
requests_per_minute = 5

[tenants.narrow]
{HINTS}
max_concurrent = 2

[tenants.fresh]
{HINTS}

[tenants.poor]
{HINTS}
"""


@pytest.fixture(scope="module")
def policy(tmp_path_factory):
    path = tmp_path_factory.mktemp("policy") / "limits.toml"
    path.write_text(SMALL_POLICY.read_text() + LIMITS)
    return path


@pytest.fixture(scope="module")
def d(tmp_path_factory, policy):
    from datetime import datetime, timezone

    from ponderd.clock import ManualClock

    clock = ManualClock(datetime(2026, 3, 2, 10, 0, tzinfo=timezone.utc))
    daemon = DaemonThread(make_settings(tmp_path_factory.mktemp("limits"), policy=policy), clock).start()
    daemon.clock = clock
    with daemon.admin() as admin:
        daemon.tokens = {name: admin.create_tenant(name, 1000).token for name in ("limited", "narrow", "fresh")}
        daemon.tokens["poor"] = admin.create_tenant("poor", 0).token
    yield daemon
    daemon.stop()


def client(d, tenant, retries=False):
    return PonderClient(d.address, d.tokens[tenant], timeout=300, retries=retries)


def ask(c):
    try:
        return c.ask("Say yes.", samples=1, thinking_tokens=0)
    except errors.PonderError as exc:
        return exc


def ledger(d, tenant):
    db = sqlite3.connect(f"file:{d.settings.state_dir / 'ponder.db'}?mode=ro", uri=True)
    try:
        records = db.execute("SELECT status, cost_micros FROM spend WHERE tenant = ?", [tenant]).fetchall()
        spent, reserved = db.execute(
            "SELECT spent_micros, reserved_micros FROM tenants WHERE name = ?", [tenant]).fetchone()
        return records, spent, reserved
    finally:
        db.close()


def test_twenty_asks_at_once_at_five_a_minute_five_answered_fifteen_refused_uncharged(d):
    with client(d, "limited") as c, ThreadPoolExecutor(20) as pool:
        results = list(pool.map(lambda _: ask(c), range(20)))
    answered = [r for r in results if not isinstance(r, Exception)]
    refused = [r for r in results if isinstance(r, Exception)]
    assert len(answered) == 5 and len(refused) == 15
    for e in refused:
        assert type(e) is errors.RateLimited and e.reason == "RATE_LIMITED" and e.limit == "requests_per_minute"
        assert e.code.name == "RESOURCE_EXHAUSTED" and 0 < e.retry_delay <= 12.0
        (v,) = e.violations
        assert v.subject == "tenant:limited" and v.description == "requests_per_minute = 5"
        assert "requests_per_minute limit of 5" in e.message
    records, spent, reserved = ledger(d, "limited")
    assert sorted(s for s, _ in records) == ["ok"] * 5  # no record, no charge for a refusal
    assert spent == sum(c for _, c in records) == sum(round(a.cost * 1e6) for a in answered) and reserved == 0


def test_the_clients_retry_policy_waits_the_retry_delay_and_an_exhausted_budget_is_not_retried(d):
    d.clock.advance(timedelta(seconds=11.9))  # the bucket is 0.1 s short of its next request
    before = value(scrape(d), "ponder_rpcs_total", method="Ask", code="RESOURCE_EXHAUSTED")
    with client(d, "limited", retries=True) as c:  # the default retry policy
        e = ask(c)
    assert type(e) is errors.RateLimited and e.retry_delay == pytest.approx(0.1, abs=0.01)
    # The manual clock stood still, so every attempt was refused: gRPC tried 4 times, the pushback apart.
    eventually(lambda: value(scrape(d), "ponder_rpcs_total", method="Ask", code="RESOURCE_EXHAUSTED") == before + 4)
    d.clock.advance(timedelta(seconds=0.1))
    with client(d, "limited", retries=True) as c:
        assert not isinstance(ask(c), Exception)
    with client(d, "poor", retries=True) as c:
        e = ask(c)
    assert type(e) is errors.BudgetExhausted
    eventually(lambda: value(scrape(d), "ponder_rpcs_total", method="Ask", code="RESOURCE_EXHAUSTED") == before + 5)


def test_max_concurrent_two_holds_under_sixteen_streams(d):
    limiter = d.daemon.pipeline.limiter

    def stream(c):
        try:
            return [e.WhichOneof("event") for e in c.ask_stream("Count to five.", samples=1, thinking_tokens=16)]
        except errors.PonderError as exc:
            return exc

    with client(d, "narrow") as c, ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda _: stream(c), range(16)))
    answered = [r for r in results if not isinstance(r, Exception)]
    refused = [r for r in results if isinstance(r, Exception)]
    assert limiter.peak("narrow") == 2 and limiter.running("narrow") == 0
    assert len(answered) + len(refused) == 16 and len(answered) >= 2 and refused
    assert all(r[-1] == "result" for r in answered)
    assert all(type(e) is errors.RateLimited and e.limit == "max_concurrent" and e.retry_delay == 1.0 for e in refused)
    records, spent, reserved = ledger(d, "narrow")
    assert len(records) == len(answered) and reserved == 0


def test_a_reload_changes_limits_without_dropping_the_asks_in_flight(d, policy, cli_env):
    limiter = d.daemon.pipeline.limiter
    events: list = []
    with client(d, "fresh") as c:
        running = threading.Thread(target=lambda: events.extend(
            e.WhichOneof("event") for e in c.ask_stream("Count to five.", samples=1, thinking_tokens=16)))
        running.start()
        eventually(lambda: limiter.running("fresh") or events)
        original = policy.read_text()
        policy.write_text(original.replace(f"[tenants.fresh]\n{HINTS}\n", f"[tenants.fresh]\n{HINTS}\nrequests_per_minute = 1\n"))
        try:
            reload = subprocess.run([PONDER, "--address", d.address, "--token", d.token("admin"), "admin", "policy", "reload"],
                                    env=cli_env, capture_output=True, text=True, timeout=120)
            assert reload.returncode == 0, reload.stderr
            running.join(300)
            assert events[-1] == "result"  # the ask in flight through the reload finished
            assert not isinstance(ask(c), Exception)
            e = ask(c)
            assert type(e) is errors.RateLimited and e.limit == "requests_per_minute"
        finally:
            policy.write_text(original)


def test_bad_limits_are_policy_errors_collected_by_ponder_policy_check(tmp_path, cli_env):
    bad = tmp_path / "bad.toml"
    bad.write_text(SMALL_POLICY.read_text() + '\n[tenants.x]\nrequests_per_minute = -5\nmax_concurrent = 1.5\n'
                   'tokens_per_minute = "lots"\n')
    run = subprocess.run([PONDER, "policy", "check", str(bad)], env=cli_env, capture_output=True, text=True, timeout=120)
    out = run.stdout + run.stderr
    assert run.returncode != 0
    for problem in ("tenants.x.requests_per_minute: must be a whole number from 0 (no limit) to 1000000000, not -5",
                    "tenants.x.max_concurrent: must be a whole number from 0 (no limit) to 1000000000, not 1.5",
                    "tenants.x.tokens_per_minute: must be a whole number from 0 (no limit) to 1000000000, not 'lots'"):
        assert problem in out, out

