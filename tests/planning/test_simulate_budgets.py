"""`ponder policy simulate` replays the tenants' budgets and windows, and plans on the daemon's n_ctx."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from conftest import SMALL_POLICY
from ponderd.engine import EngineLimits
from ponderd.planning.policy_file import load_policy
from ponderd.planning.simulate import Budget, Record, plans_for, simulate

PONDER = str(Path(sys.executable).parent / "ponder")
LIMITS = EngineLimits(n_ctx=8192, n_ctx_seq=8192, n_seq_max=16)
T0 = datetime(2026, 11, 29, 10, 0, tzinfo=timezone.utc)


def _record(at: datetime, severity: str = "low", nr: bool = False, tenant: str = "acme") -> Record:
    return Record(tenant, severity, nr, "direct", 0, 1, 20, 0, 10, 0, 0.04, "ok", "", at)


def test_the_replay_refuses_what_the_window_cannot_cover_and_renews_at_the_next_window():
    policy = load_policy(SMALL_POLICY)
    direct = plans_for(_record(T0), policy, LIMITS)[0]
    # Room for two requests' worst case in a day, not three.
    budgets = {"acme": Budget(2.5 * direct.worst_case_micros / 1e6, "day")}
    records = [_record(T0 + timedelta(minutes=i)) for i in range(3)] + [_record(T0 + timedelta(days=1))]
    (g,) = simulate(records, policy, LIMITS, None, budgets)
    # Each replayed request costs its own tokens (exact): 0.04; the third finds less than a worst case left.
    assert g.requests == 4 and sum(g.refused.values()) == 1 and g.levels == {"direct": 3}
    assert "budget" in next(iter(g.refused))
    # Without budgets, as before: nothing refused.
    (g,) = simulate(records, policy, LIMITS, None)
    assert sum(g.refused.values()) == 0


def test_the_replay_degrades_to_a_cheaper_plan_as_the_daemon_does():
    policy = load_policy(SMALL_POLICY)
    rec = _record(T0, severity="medium", nr=True)  # routed to careful, with direct (the floor) below it
    plans = plans_for(rec, policy, LIMITS)
    assert [p.level for p in plans][:1] == ["careful"] and len(plans) > 1
    budgets = {"acme": Budget((plans[0].worst_case_micros - 1) / 1e6, "day")}
    (g,) = simulate([rec], policy, LIMITS, None, budgets)
    assert g.degraded == 1 and g.levels == {plans[1].level: 1}


@pytest.mark.model
def test_simulate_against_the_daemon_refuses_what_the_daemon_refused(daemon, cli_env, tmp_path):
    with daemon.admin() as admin:
        token = admin.create_tenant("thin", 100).token
    with daemon.client(token) as c:
        first = c.ask("Name a colour.", seed=1)
    worst = first.plan.worst_case_cost
    with daemon.admin() as admin:  # room for this ask and one more worst case, not a third
        admin.set_budget("thin", first.cost + worst + first.cost / 2)
    with daemon.client(token) as c:
        c.ask("Name a colour.", seed=1)
        with pytest.raises(Exception, match="RESOURCE_EXHAUSTED"):
            c.ask("Name a colour.", seed=1)
    config = tmp_path / "ponder.toml"
    # The daemon runs with its defaults: the config says so explicitly (n_ctx 8192, 16 sequences).
    config.write_text("[model]\nn_ctx = 8192\nn_seq_max = 16\n")
    run = subprocess.run(
        [PONDER, "policy", "simulate", str(SMALL_POLICY), "--since", "1h", "--tenant", "thin", "--json",
         "--config", str(config), "--address", daemon.address, "--token", daemon.token("admin")],
        env=cli_env, capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert report["n_ctx"] == 8192 and report["budgets_replayed"] is True
    (g,) = report["groups"]
    assert g["requests"] == 3 and sum(g["refused"].values()) == 1
    assert g["projected_spend"] == pytest.approx(g["actual_spend"], abs=1e-5)
