"""Budgets: window arithmetic, reserve/settle invariants, renewal, crash recovery."""

import asyncio
import random
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from ponderd.clock import ManualClock
from ponderd.errors import BudgetExhausted, NotFound
from ponderd.ledger.sqlite.budgets import SqliteBudgets
from ponderd.ledger.sqlite.ledger import Ledger
from ponderd.ledger.sqlite.store import Store, connect
from ponderd.ledger.types import SpendRow, iso, window_end, window_start

UTC = timezone.utc
BERLIN = ZoneInfo("Europe/Berlin")
NOW = datetime(2026, 3, 4, 15, 30, tzinfo=UTC)  # a Wednesday


@dataclass
class Cand:
    worst_case_micros: int

    def to_json(self):
        return {"worst_case_micros": self.worst_case_micros}


def row(request_id, tenant="acme", cost=0, at=NOW, status="ok"):
    return SpendRow(
        request_id=request_id, tenant=tenant, at=iso(at), severity="low", needs_reasoning=False,
        model_severity="low", model_needs_reasoning=False, risk_model="m", policy_version="p", level="direct",
        thinking_cap=0, answer_cap=16, samples_planned=1, prompt_tokens=10, thinking_tokens=0, answer_tokens=5,
        forced_tokens=0, samples_run=1, samples_stopped=0, cost_micros=cost, latency_ms=5, status=status,
    )


@pytest.mark.parametrize(
    "now, window, zone, start, end",
    [
        (NOW, "day", UTC, "2026-03-04T00:00:00+00:00", "2026-03-05T00:00:00+00:00"),
        (NOW, "week", UTC, "2026-03-02T00:00:00+00:00", "2026-03-09T00:00:00+00:00"),
        (NOW, "month", UTC, "2026-03-01T00:00:00+00:00", "2026-04-01T00:00:00+00:00"),
        (datetime(2026, 12, 31, 23, tzinfo=UTC), "month", UTC, "2026-12-01T00:00:00+00:00", "2027-01-01T00:00:00+00:00"),
        # Berlin midnight is 23:00 UTC in winter; the spring-forward day is 23 hours long.
        (datetime(2026, 3, 28, 23, 30, tzinfo=UTC), "day", BERLIN, "2026-03-28T23:00:00+00:00", "2026-03-29T22:00:00+00:00"),
        (datetime(2026, 3, 4, 22, 30, tzinfo=UTC), "day", BERLIN, "2026-03-03T23:00:00+00:00", "2026-03-04T23:00:00+00:00"),
    ],
)
def test_windows(now, window, zone, start, end):
    s = window_start(now, window, zone)
    assert s.isoformat() == start
    assert window_end(s, window, zone).isoformat() == end


@pytest.fixture
def db(tmp_path):
    return connect(tmp_path / "ledger.db")


@pytest.fixture
def ledger(db):
    ledger = Ledger(UTC)
    ledger.create_tenant(db, "acme", 1_000_000, "day", NOW)
    return ledger


def test_reserve_takes_the_first_candidate_that_fits(db, ledger):
    assert ledger.reserve_first_fitting(db, "acme", "r1", [Cand(2_000_000), Cand(600_000), Cand(100)], NOW) == 1
    b = ledger.balance(db, "acme", NOW)
    assert (b.reserved_micros, b.remaining_micros) == (600_000, 400_000)


def test_exhausted_budget_names_the_numbers_and_the_renewal(db, ledger):
    ledger.reserve_first_fitting(db, "acme", "r1", [Cand(900_000)], NOW)
    with pytest.raises(BudgetExhausted) as err:
        ledger.reserve_first_fitting(db, "acme", "r2", [Cand(500_000), Cand(200_000)], NOW)
    assert err.value.detail.needed_micros == 200_000
    assert err.value.detail.remaining_micros == 100_000
    assert "renews at 2026-03-05T00:00:00" in err.value.message
    assert db["reservations"].count == 1


def test_settle_charges_actual_cost_never_above_the_reservation(db, ledger):
    ledger.reserve_first_fitting(db, "acme", "r1", [Cand(500_000)], NOW)
    assert ledger.settle(db, row("r1", cost=123_456), "the prompt") == 123_456
    ledger.reserve_first_fitting(db, "acme", "r2", [Cand(100_000)], NOW)
    assert ledger.settle(db, row("r2", cost=999_999), None) == 100_000  # clamped
    b = ledger.balance(db, "acme", NOW)
    assert (b.spent_micros, b.reserved_micros) == (223_456, 0)
    assert db["spend"].count == 2 and db["reservations"].count == 0
    assert db["prompts"].get("r1")["text"] == "the prompt"


def test_settle_is_idempotent_by_request_id(db, ledger):
    ledger.reserve_first_fitting(db, "acme", "r1", [Cand(500_000)], NOW)
    assert ledger.settle(db, row("r1", cost=123_456), None) == 123_456
    # A retry (did the first attempt commit?) returns the same charge and changes nothing.
    assert ledger.settle(db, row("r1", cost=400_000), None) == 123_456
    b = ledger.balance(db, "acme", NOW)
    assert (b.spent_micros, b.reserved_micros) == (123_456, 0)
    assert db["spend"].count == 1
    with pytest.raises(NotFound):
        ledger.settle(db, row("never-reserved", cost=1), None)


def test_window_renewal_restores_the_budget_and_carries_open_reservations(db, ledger):
    ledger.reserve_first_fitting(db, "acme", "r1", [Cand(300_000)], NOW)
    ledger.reserve_first_fitting(db, "acme", "r2", [Cand(200_000)], NOW)
    ledger.settle(db, row("r1", cost=300_000), None)
    assert ledger.renew_windows(db, NOW + timedelta(hours=1)) == []
    assert ledger.renew_windows(db, NOW + timedelta(days=1)) == ["acme"]
    b = ledger.balance(db, "acme", NOW + timedelta(days=1))
    assert (b.spent_micros, b.reserved_micros, b.remaining_micros) == (0, 200_000, 800_000)
    assert b.window_start.isoformat() == "2026-03-05T00:00:00+00:00"


def test_orphaned_reservations_are_settled_at_their_full_amount(db, ledger):
    ledger.reserve_first_fitting(db, "acme", "lost", [Cand(250_000)], NOW, {"assessment": {"severity": "medium"}})
    ledger.reserve_first_fitting(db, "acme", "running", [Cand(100_000)], NOW)
    assert ledger.settle_orphans(db, {"running"}, NOW + timedelta(seconds=1), NOW) == ["lost"]
    record = db["spend"].get("lost")
    assert (record["status"], record["cost_micros"], record["severity"]) == ("interrupted", 250_000, "medium")
    b = ledger.balance(db, "acme", NOW)
    assert (b.spent_micros, b.reserved_micros) == (250_000, 100_000)


def test_concurrent_reservations_never_overspend(tmp_path):
    store = Store(tmp_path / "c.db")
    store.open()
    clock = ManualClock(NOW)
    ledger = Ledger(UTC)
    store.call_sync(ledger.create_tenant, "acme", 5_000_000, "day", NOW)
    budgets = SqliteBudgets(store, ledger, clock)
    rng = random.Random(7)

    async def one(i):
        cands = [Cand(rng.randrange(50_000, 900_000)) for _ in range(3)]
        try:
            index = await budgets.reserve("acme", f"r{i}", cands, {})
        except BudgetExhausted:
            return 0
        cost = rng.randrange(0, cands[index].worst_case_micros + 1)
        return await budgets.settle(replace(row(f"r{i}"), cost_micros=cost), None)

    async def main():
        return await asyncio.gather(*(one(i) for i in range(200)))

    charged = asyncio.run(main())
    balance = store.call_sync(ledger.balance, "acme", NOW)
    store.close()
    assert sum(charged) == balance.spent_micros <= 5_000_000
    assert balance.reserved_micros == 0
