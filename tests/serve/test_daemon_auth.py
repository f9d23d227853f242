"""Authentication and authorisation through the real daemon."""

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ponder.client import AdminClient, PonderClient, PonderError
from ponder.v1 import ponder_pb2, ponder_pb2_grpc

pytestmark = pytest.mark.model


def code_of(call):
    with pytest.raises(PonderError) as err:
        call()
    return err.value.code, err.value.message


@pytest.mark.parametrize(
    "token, message",
    [
        ("", "missing credentials"),
        ("not-a-token", "malformed credentials"),
        ("pnd_0123456789ab_forged", "unknown or revoked token"),
    ],
)
def test_unknown_or_missing_tokens_are_unauthenticated(shared_daemon, token, message):
    metadata = (("authorization", f"Bearer {token}"),) if token else ()
    with grpc.insecure_channel(shared_daemon.address) as ch:
        stub = ponder_pb2_grpc.PonderServiceStub(ch)
        with pytest.raises(grpc.RpcError) as err:
            stub.GetBalance(ponder_pb2.GetBalanceRequest(), metadata=metadata)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED and message in err.value.details()


def test_admin_methods_need_an_admin_key(shared_daemon):
    tenant_as_admin = AdminClient(shared_daemon.address, shared_daemon.token("local"))
    code, text = code_of(tenant_as_admin.list_tenants)
    assert code == grpc.StatusCode.PERMISSION_DENIED and "needs an admin key" in text


def test_an_admin_key_cannot_ask(shared_daemon):
    with PonderClient(shared_daemon.address, shared_daemon.token("admin")) as c:
        code, text = code_of(lambda: c.ask("hi"))
    assert code == grpc.StatusCode.PERMISSION_DENIED and "admin key cannot ask" in text


def test_disabled_tenant_and_revoked_key(daemon):
    with daemon.admin() as admin:
        created = admin.create_tenant("acme", 5)
        with daemon.client(created.token) as c:
            assert c.balance().tenant == "acme"
            admin.set_enabled("acme", False)
            code, text = code_of(c.balance)
            assert code == grpc.StatusCode.PERMISSION_DENIED and "tenant 'acme' is disabled" in text
            admin.set_enabled("acme", True)
            assert c.balance().tenant == "acme"
            admin.revoke_key(created.key_id)
            code, _ = code_of(c.balance)
            assert code == grpc.StatusCode.UNAUTHENTICATED


def test_a_hint_the_policy_does_not_allow_is_permission_denied(daemon):
    with daemon.admin() as admin:
        token = admin.create_tenant("plain", 5).token
    with daemon.client(token) as c:
        code, text = code_of(lambda: c.ask("hi", samples=3))
        assert code == grpc.StatusCode.PERMISSION_DENIED
        assert "may not send the samples hint" in text and "allows: max_cost, severity_floor" in text
        assert c.balance().spent == 0


def test_health_and_reflection_need_no_key(shared_daemon):
    with grpc.insecure_channel(shared_daemon.address) as ch:
        health = health_pb2_grpc.HealthStub(ch)
        for service in ("", "ponder.v1.PonderService", "ponder.v1.AdminService"):
            assert health.Check(health_pb2.HealthCheckRequest(service=service)).status == health_pb2.HealthCheckResponse.SERVING


def test_tokens_never_reach_the_log(daemon, caplog):
    caplog.set_level("DEBUG")
    with daemon.client() as c:
        c.balance()
    bad = PonderClient(daemon.address, "pnd_0123456789ab_secretsecret")
    with pytest.raises(PonderError):
        bad.balance()
    assert daemon.token("local") not in caplog.text and "secretsecret" not in caplog.text
    assert "refused /ponder.v1.PonderService/GetBalance" in caplog.text
