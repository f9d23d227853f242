"""Asking through the real daemon: real model, real SQLite file, real gRPC on loopback."""

import sqlite3

import grpc
import pytest

from ponder.client import PonderError

pytestmark = pytest.mark.model


def spend_rows(d):
    with sqlite3.connect(d.settings.database) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute("SELECT * FROM spend ORDER BY at")]


def test_ask_charges_the_tenant_and_writes_its_spend_record(daemon):
    with daemon.client() as c:
        before = c.balance()
        r = c.ask("What is 17 * 23?", seed=1)
        after = c.balance()
    assert r.text
    assert r.cost > 0
    assert abs((before.remaining - after.remaining) - r.cost) < 1e-9
    assert r.usage.prompt_tokens > 0 and r.usage.answer_tokens > 0
    assert r.balance.remaining == pytest.approx(after.remaining)
    (row,) = spend_rows(daemon)
    assert row["request_id"] == r.request_id and row["tenant"] == "local" and row["status"] == "ok"
    assert row["cost_micros"] == round(r.cost * 1e6)
    assert row["cost_micros"] <= row["reserved_micros"]
    assert (row["prompt_tokens"], row["answer_tokens"]) == (r.usage.prompt_tokens, r.usage.answer_tokens)
    assert row["severity"] in ("low", "medium", "high") and row["level"] == r.plan.level
    assert row["latency_ms"] > 0
    ran = [s.confidence for s in r.samples if s.thinking_tokens or s.answer_tokens]
    assert ran and all(0 < c <= 1 for c in ran)
    assert row["confidence_min"] == pytest.approx(min(ran))
    assert row["confidence_mean"] == pytest.approx(sum(ran) / len(ran))


@pytest.mark.parametrize("cap", [0, 1, 5, 12])
def test_a_thinking_cap_of_n_never_yields_more_than_n_thinking_tokens(shared_daemon, cap):
    with shared_daemon.client() as c:
        r = c.ask("Explain why the sky is blue, step by step.", samples=3, thinking_tokens=cap, seed=3)
    assert r.plan.thinking_tokens == cap
    for s in r.samples:
        assert s.thinking_tokens <= cap
        if cap and s.thinking_capped:
            assert s.thinking_tokens == cap
    assert r.usage.thinking_tokens == sum(s.thinking_tokens for s in r.samples) <= 3 * cap


def test_n_samples_are_drawn_together_and_voted(shared_daemon):
    with shared_daemon.client() as c:
        r = c.ask("What is 2 + 3? Reply with just the number.", samples=5, thinking_tokens=0, seed=11)
    assert r.plan.samples == 5
    assert len(r.samples) == 5
    finished = [s for s in r.samples if s.finish_reason in ("stop", "length")]
    stopped = [s for s in r.samples if s.finish_reason == "vote_decided"]
    assert len(finished) + len(stopped) == 5
    assert r.usage.samples_stopped == len(stopped)
    # The votes count exactly the finished samples' answers, and the winner leads them.
    assert sum(v.count for v in r.votes) == sum(1 for s in finished if s.answer)
    if r.votes:
        assert r.answer == r.votes[0].answer
        assert r.votes[0].count == max(v.count for v in r.votes)
        assert r.text in [s.text for s in finished if s.answer == r.answer]


def test_quote_plans_without_generating_or_charging(shared_daemon):
    with shared_daemon.client() as c:
        before = c.balance()
        q = c.quote("Should I run DROP TABLE customers on the production database?", explain=True)
        after = c.balance()
    assert q.assessment.severity == 3  # high: the default override pins destructive commands
    assert q.plan.worst_case_cost > 0 and q.prompt_tokens > 0
    assert before.spent == after.spent and before.reserved == after.reserved
    assert any(c.axis == "severity" for c in q.assessment.explanation)


@pytest.mark.parametrize(
    "kwargs, code, message",
    [
        ({"prompt": ""}, grpc.StatusCode.INVALID_ARGUMENT, "the prompt is empty"),
        ({"prompt": "   "}, grpc.StatusCode.INVALID_ARGUMENT, "the prompt is empty"),
        ({"prompt": "word " * 9000}, grpc.StatusCode.INVALID_ARGUMENT, "shorten the prompt"),
        ({"prompt": "hi", "samples": 99}, grpc.StatusCode.INVALID_ARGUMENT, "samples must be from 1 to 8"),
        ({"prompt": "hi", "max_cost": 0.000001}, grpc.StatusCode.FAILED_PRECONDITION, "no allowed plan fits max_cost"),
        ({"prompt": "hi", "level": "nope"}, grpc.StatusCode.INVALID_ARGUMENT, "no level 'nope'"),
    ],
)
def test_bad_requests_get_the_right_status_and_cost_nothing(shared_daemon, kwargs, code, message):
    with shared_daemon.client() as c:
        before = c.balance()
        prompt = kwargs.pop("prompt")
        with pytest.raises(PonderError) as err:
            c.ask(prompt, **kwargs)
        assert err.value.code == code
        assert message in err.value.message
        after = c.balance()
        assert (after.spent, after.reserved) == (before.spent, before.reserved)
        assert c.ask("Say hi.", seed=2).text  # and the daemon keeps serving


def test_the_system_field_is_assessed_like_the_prompt(shared_daemon):
    """Moving the risky part into `system` must not lower the assessment: the model reads both."""
    risky = "rm -rf /var/lib/postgresql on prod now?"
    with shared_daemon.client() as c:
        in_prompt = c.quote(risky)
        in_system = c.quote("Name a fruit.", system=risky)
        bland = c.quote("Name a fruit.")
    assert in_prompt.assessment.severity == in_system.assessment.severity == 3  # SEVERITY_HIGH
    assert in_system.plan.level == in_prompt.plan.level
    assert bland.assessment.severity < 3
