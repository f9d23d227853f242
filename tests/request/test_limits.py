"""Rate and concurrency limits (request/limits.py): token buckets on a ManualClock, nothing taken from a refusal."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest

from ponderd.clock import ManualClock
from ponderd.errors import RateLimited
from ponderd.planning.policy import TenantRules
from ponderd.request.limits import Limiter

RULES = TenantRules("direct", "careful", frozenset(), 8, 64)


@pytest.fixture
def clock():
    return ManualClock(datetime(2026, 3, 2, 10, 0, tzinfo=timezone.utc))


def test_requests_per_minute_is_a_bucket_that_refills_evenly(clock):
    limiter, rules = Limiter(clock), replace(RULES, requests_per_minute=5)
    for _ in range(5):
        limiter.admit("acme", rules, 10).release()
    with pytest.raises(RateLimited) as err:
        limiter.admit("acme", rules, 10)
    assert err.value.limit == "requests_per_minute" and err.value.retry_after_seconds == pytest.approx(12.0)
    clock.advance(timedelta(seconds=6))
    with pytest.raises(RateLimited) as err:
        limiter.admit("acme", rules, 10)
    assert err.value.retry_after_seconds == pytest.approx(6.0)
    clock.advance(timedelta(seconds=6))
    limiter.admit("acme", rules, 10).release()
    limiter.admit("other", rules, 10).release()  # per tenant


def test_tokens_per_minute_counts_the_worst_case_then_what_was_used(clock):
    limiter, rules = Limiter(clock), replace(RULES, tokens_per_minute=1_000)
    first = limiter.admit("acme", rules, 600)
    with pytest.raises(RateLimited) as err:
        limiter.admit("acme", rules, 600)  # 400 left of the worst cases
    assert err.value.limit == "tokens_per_minute" and err.value.retry_after_seconds == pytest.approx(12.0)
    first.settle(100)  # it used 100: 500 come back
    first.release()
    limiter.admit("acme", rules, 600).release()
    with pytest.raises(RateLimited, match="more than tenant 'acme'") as err:
        limiter.admit("acme", rules, 1_001)  # never fits: no wait helps
    assert not err.value.retryable


def test_max_concurrent_counts_running_asks_and_a_refusal_takes_nothing(clock):
    limiter = Limiter(clock)
    rules = replace(RULES, max_concurrent=2, requests_per_minute=3, tokens_per_minute=100)
    a, b = limiter.admit("acme", rules, 10), limiter.admit("acme", rules, 10)
    with pytest.raises(RateLimited) as err:
        limiter.admit("acme", rules, 10)
    assert err.value.limit == "max_concurrent" and limiter.running("acme") == 2
    a.release()
    limiter.admit("acme", rules, 10)  # the third request: the refused one took none of the rate
    assert limiter.peak("acme") == 2
    b.release()


def test_a_reload_changes_the_limits_and_keeps_the_running_asks(clock):
    limiter = Limiter(clock)
    running = limiter.admit("acme", replace(RULES, max_concurrent=5), 10)
    with pytest.raises(RateLimited):
        limiter.admit("acme", replace(RULES, max_concurrent=1), 10)
    running.release()  # the ask admitted under the old limit ends normally
    limiter.admit("acme", replace(RULES, max_concurrent=1), 10).release()
    limiter.admit("acme", RULES, 10).release()  # 0: no limit
