"""A key's own budget cap inside its tenant's: checked and reserved in the tenant's transaction (real SQLite file)."""

from __future__ import annotations

import asyncio
import random
import sqlite3
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone

import pytest

from ponderd.clock import ManualClock
from ponderd.errors import BudgetExhausted, KeyBudgetExhausted, NotFound
from ponderd.ledger.sqlite.budgets import SqliteBudgets
from ponderd.ledger.sqlite.keys import issue_key, list_keys, rotate_key, set_key_budget
from ponderd.ledger.sqlite.ledger import Ledger
from ponderd.ledger.sqlite.store import Store, connect
from ponderd.ledger.types import SpendRow, iso

UTC = timezone.utc
NOW = datetime(2026, 3, 4, 15, 30, tzinfo=UTC)


@dataclass
class Cand:
    worst_case_micros: int

    def to_json(self):
        return {"worst_case_micros": self.worst_case_micros}


def row(request_id, cost, at=NOW):
    return SpendRow(
        request_id=request_id, tenant="acme", at=iso(at), severity="low", needs_reasoning=False,
        model_severity="low", model_needs_reasoning=False, risk_model="m", policy_version="p", level="direct",
        thinking_cap=0, answer_cap=16, samples_planned=1, prompt_tokens=10, thinking_tokens=0, answer_tokens=5,
        forced_tokens=0, samples_run=1, samples_stopped=0, cost_micros=cost, latency_ms=5, status="ok",
    )


@pytest.fixture
def db(tmp_path):
    return connect(tmp_path / "ledger.db")


@pytest.fixture
def ledger(db):
    ledger = Ledger(UTC)
    ledger.create_tenant(db, "acme", 1_000_000, "day", NOW)
    return ledger


def key(db, key_id):
    return db["keys"].get(key_id)


def tenant(db):
    return db["tenants"].get("acme")


def test_a_key_at_its_cap_is_refused_while_the_tenant_has_budget(db, ledger):
    capped, _ = issue_key(db, "acme", "tenant", "batch", NOW, budget_micros=300_000)
    other, _ = issue_key(db, "acme", "tenant", "web", NOW)
    assert ledger.reserve_first_fitting(db, "acme", "r1", [Cand(200_000)], NOW, key_id=capped) == 0
    with pytest.raises(KeyBudgetExhausted) as err:
        ledger.reserve_first_fitting(db, "acme", "r2", [Cand(200_000)], NOW, key_id=capped)
    message = err.value.message
    assert f"key {capped}" in message and "0.100000 credits left of its own cap of 0.300000" in message
    assert f"ponder admin key budget {capped} AMOUNT" in message
    assert isinstance(err.value, BudgetExhausted) and err.value.key_id == capped
    assert err.value.detail.remaining_micros == 100_000
    # Nothing was reserved by the refusal; the tenant's other key still fits.
    assert (tenant(db)["reserved_micros"], key(db, capped)["reserved_micros"]) == (200_000, 200_000)
    assert ledger.reserve_first_fitting(db, "acme", "r3", [Cand(700_000)], NOW, key_id=other) == 0
    assert key(db, other)["reserved_micros"] == 0  # an uncapped key keeps no count
    # The tenant's own budget is what is short now: the tenant's message, not the key's.
    with pytest.raises(BudgetExhausted) as err:
        ledger.reserve_first_fitting(db, "acme", "r4", [Cand(150_000)], NOW, key_id=capped)
    assert not isinstance(err.value, KeyBudgetExhausted) and "tenant 'acme' has 0.100000" in err.value.message


def test_a_plan_degrades_to_fit_the_key_as_it_does_the_tenant(db, ledger):
    capped, _ = issue_key(db, "acme", "tenant", "", NOW, budget_micros=250_000)
    plans = [Cand(600_000), Cand(300_000), Cand(200_000)]
    assert ledger.reserve_first_fitting(db, "acme", "r1", plans, NOW, key_id=capped) == 2
    stored = db["reservations"].get("r1")
    assert (stored["amount_micros"], stored["key_id"]) == (200_000, capped)
    # The same plans through no cap take the best.
    assert ledger.reserve_first_fitting(db, "acme", "r2", plans, NOW) == 0


def test_settlement_corrects_the_keys_spend_as_the_tenants(db, ledger):
    capped, _ = issue_key(db, "acme", "tenant", "", NOW, budget_micros=500_000)
    ledger.reserve_first_fitting(db, "acme", "r1", [Cand(400_000)], NOW, key_id=capped)
    assert ledger.settle(db, row("r1", cost=150_000), None) == 150_000
    assert (key(db, capped)["spent_micros"], key(db, capped)["reserved_micros"]) == (150_000, 0)
    assert (tenant(db)["spent_micros"], tenant(db)["reserved_micros"]) == (150_000, 0)
    # A settle retried changes neither.
    ledger.settle(db, row("r1", cost=150_000), None)
    assert key(db, capped)["spent_micros"] == 150_000
    # Now 350_000 left on the key: 400_000 does not fit, 350_000 does.
    with pytest.raises(KeyBudgetExhausted):
        ledger.reserve_first_fitting(db, "acme", "r2", [Cand(400_000)], NOW, key_id=capped)
    assert ledger.reserve_first_fitting(db, "acme", "r2", [Cand(350_000)], NOW, key_id=capped) == 0


def test_an_orphaned_reservation_settles_against_the_key_too(db, ledger):
    capped, _ = issue_key(db, "acme", "tenant", "", NOW, budget_micros=500_000)
    ledger.reserve_first_fitting(db, "acme", "lost", [Cand(300_000)], NOW, key_id=capped)
    assert ledger.settle_orphans(db, set(), NOW + timedelta(seconds=1), NOW) == ["lost"]
    assert (key(db, capped)["spent_micros"], key(db, capped)["reserved_micros"]) == (300_000, 0)
    assert (tenant(db)["spent_micros"], tenant(db)["reserved_micros"]) == (300_000, 0)


def test_the_cap_restarts_with_the_tenants_window(db, ledger):
    capped, _ = issue_key(db, "acme", "tenant", "", NOW, budget_micros=300_000)
    ledger.reserve_first_fitting(db, "acme", "r1", [Cand(300_000)], NOW, key_id=capped)
    ledger.settle(db, row("r1", cost=300_000), None)
    ledger.reserve_first_fitting(db, "acme", "open", [Cand(0)], NOW, key_id=capped)
    with pytest.raises(KeyBudgetExhausted):
        ledger.reserve_first_fitting(db, "acme", "r2", [Cand(1)], NOW, key_id=capped)
    tomorrow = NOW + timedelta(days=1)
    assert ledger.renew_windows(db, tomorrow) == ["acme"]
    assert key(db, capped)["spent_micros"] == 0
    assert ledger.reserve_first_fitting(db, "acme", "r3", [Cand(300_000)], tomorrow, key_id=capped) == 0
    # A reservation's own rollover (no renewal job run first) restarts the key's count too.
    ledger.settle(db, row("r3", cost=300_000, at=tomorrow), None)
    later = tomorrow + timedelta(days=1)
    assert ledger.reserve_first_fitting(db, "acme", "r4", [Cand(300_000)], later, key_id=capped) == 0


def test_changing_and_removing_a_cap(db, ledger):
    capped, _ = issue_key(db, "acme", "tenant", "", NOW, budget_micros=100_000)
    ledger.reserve_first_fitting(db, "acme", "r1", [Cand(100_000)], NOW, key_id=capped)
    ledger.settle(db, row("r1", cost=100_000), None)
    assert set_key_budget(db, capped, 150_000)["budget_micros"] == 150_000
    with pytest.raises(KeyBudgetExhausted):
        ledger.reserve_first_fitting(db, "acme", "r2", [Cand(60_000)], NOW, key_id=capped)
    assert set_key_budget(db, capped, None)["budget_micros"] is None
    assert ledger.reserve_first_fitting(db, "acme", "r2", [Cand(600_000)], NOW, key_id=capped) == 0
    listed = {k["key_id"]: k for k in list_keys(db, "acme")}
    assert (listed[capped]["budget_micros"], listed[capped]["spent_micros"]) == (None, 100_000)
    with pytest.raises(NotFound):
        set_key_budget(db, "nosuchkey", 1)


def test_rotation_keeps_the_cap_and_what_was_spent(db, ledger):
    capped, _ = issue_key(db, "acme", "tenant", "", NOW, budget_micros=200_000)
    ledger.reserve_first_fitting(db, "acme", "r1", [Cand(150_000)], NOW, key_id=capped)
    ledger.settle(db, row("r1", cost=150_000), None)
    new = rotate_key(db, capped, timedelta(0), None, NOW)["key_id"]
    assert (key(db, new)["budget_micros"], key(db, new)["spent_micros"]) == (200_000, 150_000)
    with pytest.raises(KeyBudgetExhausted):
        ledger.reserve_first_fitting(db, "acme", "r2", [Cand(100_000)], NOW, key_id=new)


def test_the_schema_refuses_a_negative_cap_or_count(db, ledger):
    capped, _ = issue_key(db, "acme", "tenant", "", NOW, budget_micros=1)
    for column in ("budget_micros", "spent_micros", "reserved_micros"):
        with pytest.raises(sqlite3.IntegrityError):
            db.execute(f"UPDATE keys SET {column} = -1 WHERE key_id = ?", [capped])


def test_concurrent_requests_through_two_keys_overspend_neither_cap_nor_tenant(tmp_path):
    store = Store(tmp_path / "c.db")
    store.open()
    ledger = Ledger(UTC)
    store.call_sync(ledger.create_tenant, "acme", 5_000_000, "day", NOW)
    capped, _ = store.call_sync(issue_key, "acme", "tenant", "", NOW, None, 1_500_000)
    free, _ = store.call_sync(issue_key, "acme", "tenant", "", NOW)
    budgets = SqliteBudgets(store, ledger, ManualClock(NOW))
    rng = random.Random(11)

    async def one(i):
        key_id = capped if i % 2 else free
        cands = [Cand(rng.randrange(50_000, 600_000)) for _ in range(3)]
        try:
            index = await budgets.reserve("acme", f"r{i}", cands, {}, key_id)
        except BudgetExhausted:
            return key_id, None
        cost = rng.randrange(0, cands[index].worst_case_micros + 1)
        return key_id, await budgets.settle(replace(row(f"r{i}", cost), cost_micros=cost), None)

    async def main():
        return await asyncio.gather(*(one(i) for i in range(200)))

    results = asyncio.run(main())
    assert any(k == capped and c is None for k, c in results)  # the cap was reached
    charged = [(k, c or 0) for k, c in results]
    keys = {k["key_id"]: k for k in store.call_sync(list_keys, "acme")}
    balance = store.call_sync(ledger.balance, "acme", NOW)
    store.close()
    assert sum(c for k, c in charged if k == capped) == keys[capped]["spent_micros"] <= 1_500_000
    assert keys[capped]["reserved_micros"] == 0 and keys[free]["spent_micros"] == 0
    assert sum(c for _, c in charged) == balance.spent_micros <= 5_000_000 and balance.reserved_micros == 0
