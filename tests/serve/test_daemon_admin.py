"""The Admin service through the real daemon: tenants, keys, budgets, spend, policy reload, explain."""

import shutil
from datetime import datetime, timedelta, timezone

import grpc
import pytest
from google.rpc import error_details_pb2

from conftest import REPO, SMALL_POLICY, DaemonThread, make_settings
from ponder.client import PonderError

pytestmark = pytest.mark.model


def test_tenants_keys_and_budgets(daemon):
    with daemon.admin() as admin:
        created = admin.create_tenant("team-a", 12.5, "week")
        assert created.token.startswith("pnd_") and created.tenant.balance.window == "week"
        assert [t.name for t in admin.list_tenants()] == ["local", "team-a"]
        extra = admin.issue_key("team-a", label="ci")
        keys = admin.list_keys("team-a")
        assert {k.key_id for k in keys} == {created.key_id, extra.key_id}
        assert all(created.token not in str(k) for k in keys)
        t = admin.set_budget("team-a", 20, "month")
        assert (t.balance.budget, t.balance.window) == (20, "month")
        with pytest.raises(PonderError) as err:
            admin.create_tenant("team-a", 1)
        assert err.value.code == grpc.StatusCode.ALREADY_EXISTS
        for bad, message in [("Team A", "is not valid"), ("", "is not valid")]:
            with pytest.raises(PonderError) as err:
                admin.create_tenant(bad, 1)
            assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT and message in err.value.message
        with pytest.raises(PonderError) as err:
            admin.set_budget("nobody", 1)
        assert err.value.code == grpc.StatusCode.NOT_FOUND
        with pytest.raises(PonderError) as err:
            admin.create_tenant("neg", -1)
        assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
    with daemon.client(extra.token) as c:
        assert c.balance().budget == 20


def test_spend_report_by_tenant_and_period(daemon):
    with daemon.client() as c:
        r1 = c.ask("Name a fruit.", seed=1)
        r2 = c.ask("Name a tree.", seed=2)
    with daemon.admin() as admin:
        report = admin.spend(records=10)
        (line,) = [x for x in report.lines if x.tenant == "local"]
        assert line.requests == 2 and line.by_status["ok"] == 2
        assert line.cost == pytest.approx(r1.cost + r2.cost)
        assert {r.request_id for r in report.records} == {r1.request_id, r2.request_id}
        future = datetime.now(timezone.utc) + timedelta(days=1)
        assert not admin.spend(since=future, until=future + timedelta(hours=1)).lines
        with pytest.raises(PonderError) as err:
            admin.spend(since=future, until=future - timedelta(hours=1))
        assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT


def test_policy_reload_swaps_a_good_file_and_refuses_a_bad_one(tmp_path):
    policy = tmp_path / "policy.toml"
    shutil.copy(SMALL_POLICY, policy)
    d = DaemonThread(make_settings(tmp_path / "state", policy=policy)).start()
    try:
        with d.admin() as admin:
            policy.write_text(SMALL_POLICY.read_text().replace('"test-small-1"', '"test-small-2"'))
            assert admin.reload_policy().policy_version == "test-small-2"
            shutil.copy(REPO / "tests/policies/bad/unknown_level_field.toml", policy)
            with pytest.raises(PonderError) as err:
                admin.reload_policy()
            e = err.value
            assert e.code == grpc.StatusCode.FAILED_PRECONDITION
            assert "levels.b: unknown field 'sample' (did you mean 'samples'?)" in e.message
            detail = next(x for x in e.details if isinstance(x, error_details_pb2.PreconditionFailure))
            assert detail.violations[0].subject == str(policy)
        with d.client() as c:
            assert c.ask("Say yes.", seed=1).plan.policy_version == "test-small-2"
    finally:
        d.stop()


def test_explain_shows_features_and_tenant_overrides(shared_daemon):
    with shared_daemon.admin() as admin:
        plain = admin.explain("write a haiku about autumn leaves")
        clinic = admin.explain("write a haiku about autumn leaves", tenant="clinic-north")
        with pytest.raises(PonderError) as err:
            admin.explain("  ")
    assert plain.explanation and all(c.weight > 0 for c in plain.explanation)
    assert clinic.severity == 3 and clinic.model_severity == plain.model_severity
    assert clinic.adjustments == ["override 1 (clinical tenants are never below high): severity floor high"]
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT


def test_unknown_job_lists_the_jobs(shared_daemon):
    with shared_daemon.admin() as admin, pytest.raises(PonderError) as err:
        admin.run_job("defrag")
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "renew_windows, expire_reservations, prune_prompts, retrain_risk" in err.value.message
