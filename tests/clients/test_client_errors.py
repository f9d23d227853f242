"""The client's typed errors, timeouts, retry policy and asyncio client, against the real daemon."""

import asyncio
import shutil
from datetime import timezone

import grpc
import pytest

from conftest import SMALL_POLICY, DaemonThread, counted, eventually, make_settings, scrape, value
from ponder import errors
from ponder.aio import AsyncAdminClient, AsyncPonderClient
from ponder.client import PonderClient, PonderError

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def d(tmp_path_factory):
    """One daemon with its own copy of the policy (a test breaks it to get FAILED_PRECONDITION)."""
    root = tmp_path_factory.mktemp("errors")
    policy = root / "policy.toml"
    shutil.copy(SMALL_POLICY, policy)
    daemon = DaemonThread(make_settings(root / "state", policy)).start()
    yield daemon
    daemon.stop()


def raised(call, *args, **kwargs) -> PonderError:
    with pytest.raises(PonderError) as err:
        call(*args, **kwargs)
    return err.value


def test_an_exhausted_budget_is_budget_exhausted_with_the_renewal_time_and_quota_failure(d):
    with d.admin() as admin:
        token = admin.create_tenant("tiny", 0.01).token
    with d.client(token) as c:
        window_end = c.balance().window_end.ToDatetime(tzinfo=timezone.utc)
        e = raised(c.ask, "Name a colour.")
    assert isinstance(e, errors.BudgetExhausted) and e.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert e.reason == "BUDGET_EXHAUSTED" and e.error_info.domain == "ponder"
    assert e.renews_at == window_end
    assert [v.subject for v in e.violations] == ["tenant:tiny"]
    assert e.remaining == 0.01 and e.needed > e.remaining


def test_each_status_a_call_can_meet_has_its_own_class(d):
    with PonderClient(d.address, "pnd_nokey_nosecret") as c:
        e = raised(c.balance)
    assert type(e) is errors.Unauthenticated and e.reason == "UNAUTHENTICATED"
    with PonderClient(d.address, d.token("admin")) as c:
        e = raised(c.balance)
    assert type(e) is errors.PermissionDenied and e.reason == "PERMISSION_DENIED"
    with d.client() as c:
        e = raised(c.ask, "   ")
        assert type(e) is errors.InvalidArgument and e.reason == "INVALID_REQUEST" and "prompt is empty" in e.message
        e = raised(c.feedback, "no-such-request", correct=True)
        assert type(e) is errors.NotFound and e.reason == "NOT_FOUND"
        # The deadline passes in the client before any answer can come back.
        e = raised(c.ask, "Write a long story about a dragon.", timeout=0.001)
        assert type(e) is errors.DeadlineExceeded
    with d.admin() as admin:
        admin.create_tenant("tiny2", 1)
        e = raised(admin.create_tenant, "tiny2", 1)
        assert type(e) is errors.AlreadyExists and e.reason == "ALREADY_EXISTS"


def test_an_invalid_policy_reload_is_failed_precondition_with_each_problem(d):
    policy = d.settings.policy_file
    good = policy.read_text()
    policy.write_text(good.replace("samples = 1", "samples = 0", 1))
    try:
        with d.admin() as admin:
            e = raised(admin.reload_policy)
    finally:
        policy.write_text(good)
    assert type(e) is errors.FailedPrecondition and e.reason == "POLICY_INVALID"
    assert e.violations and all(v.type == "POLICY" and v.subject == str(policy) for v in e.violations)


def test_unavailable_carries_retry_info_and_is_retried_by_the_channel_retry_policy(d):
    pipeline = d.daemon.pipeline
    pipeline.inflight.draining = True  # as at shutdown: asks are refused with UNAVAILABLE
    try:
        before = value(scrape(d), "ponder_rpcs_total", method="Ask", code="UNAVAILABLE")
        with PonderClient(d.address, d.token(), retries=False) as c:
            e = raised(c.ask, "Name a colour.")
        assert type(e) is errors.Unavailable and e.reason == "UNAVAILABLE" and e.retry_delay == 1.0
        eventually(lambda: counted(scrape(d), "ponder_rpcs_total", method="Ask", code="UNAVAILABLE"))
        once = value(scrape(d), "ponder_rpcs_total", method="Ask", code="UNAVAILABLE")
        assert once == before + 1
        with d.client() as c:  # retries on (the default): gRPC tries 4 times, waiting the pushback between
            e = raised(c.ask, "Name a colour.")
        assert type(e) is errors.Unavailable
        eventually(lambda: value(scrape(d), "ponder_rpcs_total", method="Ask", code="UNAVAILABLE") == once + 4)
    finally:
        pipeline.inflight.draining = False


def test_the_asyncio_clients_have_the_same_surface(d):
    async def main():
        async with AsyncPonderClient(d.address, d.token()) as c:
            balance = await c.balance()
            quote = await c.quote("What is 2 + 2?", samples=1, thinking_tokens=0)
            answer = await c.ask("What is 2 + 2?", samples=1, thinking_tokens=0, seed=1)
            events = [e.WhichOneof("event") async for e in c.ask_stream("Say hi.", samples=1, thinking_tokens=0, seed=1)]
            with pytest.raises(errors.InvalidArgument):
                await c.ask("")
        async with AsyncAdminClient(d.address, d.token("admin")) as admin:
            tenants = await admin.list_tenants()
            with pytest.raises(errors.NotFound):
                await admin.set_budget("nobody", 1)
        async with AsyncPonderClient(d.address, "pnd_nokey_nosecret") as c:
            with pytest.raises(errors.Unauthenticated):
                await c.balance()
        return balance, quote, answer, events, tenants

    balance, quote, answer, events, tenants = asyncio.run(main())
    assert balance.tenant == "local" and quote.plan.samples == 1
    assert answer.request_id and answer.usage.samples_run == 1 and answer.balance.spent > balance.spent
    assert events[0] == "plan" and events[-1] == "result" and "delta" in events
    assert "local" in {t.name for t in tenants}
