"""Python client for the Ponder daemon.

    from ponder.client import PonderClient
    with PonderClient() as c:                  # finds a local daemon and its quickstart key
        r = c.ask("What is 17 * 23?")
        print(r.text, r.cost, r.balance.remaining)

Where it connects: `address`, else PONDER_ADDRESS, else the `endpoint` file the
daemon writes in its state directory, else PONDER_LISTEN, else 127.0.0.1:50051.
Which key it sends: `token`, else PONDER_TOKEN (PONDER_ADMIN_TOKEN for admin
calls), else `local.token` (`admin.token`) in the state directory
(PONDER_STATE_DIR, default ~/.local/state/ponder).
"""

from __future__ import annotations

import os
import pathlib
from datetime import datetime
from typing import Any, Iterator

import grpc
from google.rpc import error_details_pb2, status_pb2

from .v1 import admin_pb2, admin_pb2_grpc, ponder_pb2, ponder_pb2_grpc

DEFAULT_ADDRESS = "127.0.0.1:50051"
SEVERITIES = {"low": ponder_pb2.SEVERITY_LOW, "medium": ponder_pb2.SEVERITY_MEDIUM, "high": ponder_pb2.SEVERITY_HIGH}


class PonderError(Exception):
    """A failed call: the gRPC status code, the daemon's message, and decoded error details."""

    def __init__(self, code: grpc.StatusCode, message: str, details: list[Any]) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message
        self.details = details

    @property
    def quota_failure(self) -> error_details_pb2.QuotaFailure | None:
        return next((d for d in self.details if isinstance(d, error_details_pb2.QuotaFailure)), None)


def state_dir() -> pathlib.Path:
    if os.environ.get("PONDER_STATE_DIR"):
        return pathlib.Path(os.environ["PONDER_STATE_DIR"]).expanduser()
    base = os.environ.get("XDG_STATE_HOME") or str(pathlib.Path.home() / ".local" / "state")
    return pathlib.Path(base) / "ponder"


def resolve_address(address: str | None = None) -> str:
    if address:
        return address
    if os.environ.get("PONDER_ADDRESS"):
        return os.environ["PONDER_ADDRESS"]
    endpoint = state_dir() / "endpoint"
    if endpoint.is_file():
        return endpoint.read_text().strip()
    return os.environ.get("PONDER_LISTEN") or DEFAULT_ADDRESS


def resolve_token(token: str | None, env: str, filename: str) -> str:
    if token:
        return token
    if os.environ.get(env):
        return os.environ[env]
    path = state_dir() / filename
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        raise PonderError(
            grpc.StatusCode.UNAUTHENTICATED,
            f"no credentials: pass a token, set {env}, or run on the daemon's host where {path} exists",
            [],
        ) from None
    except PermissionError:
        raise PonderError(grpc.StatusCode.UNAUTHENTICATED, f"cannot read {path}: it is readable by its owner only", []) from None


def _decode(err: grpc.RpcError) -> PonderError:
    details: list[Any] = []
    for key, value in err.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            status = status_pb2.Status.FromString(value)
            for packed in status.details:
                for cls in (error_details_pb2.QuotaFailure, error_details_pb2.ErrorInfo, error_details_pb2.PreconditionFailure):
                    if packed.Is(cls.DESCRIPTOR):
                        msg = cls()
                        packed.Unpack(msg)
                        details.append(msg)
    return PonderError(err.code(), err.details() or "", details)


class _Base:
    _env, _file = "PONDER_TOKEN", "local.token"

    def __init__(self, address: str | None = None, token: str | None = None, timeout: float | None = None) -> None:
        self.address = resolve_address(address)
        self._token = token
        self.timeout = timeout
        self._channel = grpc.insecure_channel(self.address)

    def _metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {resolve_token(self._token, self._env, self._file)}"),)

    def _call(self, method: Any, request: Any, timeout: float | None = None) -> Any:
        try:
            return method(request, metadata=self._metadata(), timeout=timeout or self.timeout)
        except grpc.RpcError as err:
            raise _decode(err) from None

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _hints(
    samples: int | None = None,
    thinking_tokens: int | None = None,
    severity_floor: str | None = None,
    max_cost: float | None = None,
    level: str | None = None,
    answer_format: str | None = None,
) -> ponder_pb2.Hints:
    h = ponder_pb2.Hints(
        samples=samples or 0, max_cost=max_cost or 0.0, level=level or "", answer_format=answer_format or ""
    )
    if thinking_tokens is not None:
        h.thinking_tokens = thinking_tokens
    if severity_floor:
        h.severity_floor = SEVERITIES[severity_floor]
    return h


class PonderClient(_Base):
    """Calls the Ponder service with a tenant's key."""

    def __init__(self, address: str | None = None, token: str | None = None, timeout: float | None = None) -> None:
        super().__init__(address, token, timeout)
        self._stub = ponder_pb2_grpc.PonderStub(self._channel)

    def _request(self, prompt: str, system: str = "", seed: int = 0, explain: bool = False, **hints: Any) -> ponder_pb2.AskRequest:
        return ponder_pb2.AskRequest(prompt=prompt, system=system, seed=seed, explain=explain, hints=_hints(**hints))

    def ask(self, prompt: str, **kwargs: Any) -> ponder_pb2.AskResponse:
        """Ask and wait for the voted answer. kwargs: system, seed, explain and the hints
        samples, thinking_tokens, severity_floor ("low"|"medium"|"high"), max_cost, level,
        answer_format ("number"|"choice"|"phrase"|"free"|"auto")."""
        timeout = kwargs.pop("timeout", None)
        return self._call(self._stub.Ask, self._request(prompt, **kwargs), timeout)

    def ask_stream(self, prompt: str, **kwargs: Any) -> Iterator[ponder_pb2.AskEvent]:
        """The plan, then thinking/answer text as it is produced, then the result."""
        timeout = kwargs.pop("timeout", None)
        try:
            yield from self._stub.AskStream(self._request(prompt, **kwargs), metadata=self._metadata(), timeout=timeout or self.timeout)
        except grpc.RpcError as err:
            raise _decode(err) from None

    def quote(self, prompt: str, **kwargs: Any) -> ponder_pb2.QuoteResponse:
        return self._call(self._stub.Quote, self._request(prompt, **kwargs))

    def balance(self) -> ponder_pb2.Balance:
        return self._call(self._stub.GetBalance, ponder_pb2.GetBalanceRequest())

    def feedback(
        self,
        request_id: str,
        correct: bool | None = None,
        true_severity: str | None = None,
        true_needs_reasoning: bool | None = None,
        comment: str = "",
    ) -> str:
        req = ponder_pb2.FeedbackRequest(request_id=request_id, comment=comment)
        if correct is not None:
            req.correct = correct
        if true_severity:
            req.true_severity = SEVERITIES[true_severity]
        if true_needs_reasoning is not None:
            req.true_needs_reasoning = true_needs_reasoning
        return self._call(self._stub.Feedback, req).feedback_id


class AdminClient(_Base):
    """Calls the Admin service with an admin key."""

    _env, _file = "PONDER_ADMIN_TOKEN", "admin.token"

    def __init__(self, address: str | None = None, token: str | None = None, timeout: float | None = None) -> None:
        super().__init__(address, token, timeout)
        self._stub = admin_pb2_grpc.AdminStub(self._channel)

    def create_tenant(self, name: str, budget: float, window: str = "day") -> admin_pb2.CreateTenantResponse:
        return self._call(self._stub.CreateTenant, admin_pb2.CreateTenantRequest(name=name, budget=budget, window=window))

    def list_tenants(self) -> list[admin_pb2.Tenant]:
        return list(self._call(self._stub.ListTenants, admin_pb2.ListTenantsRequest()).tenants)

    def set_enabled(self, name: str, enabled: bool) -> admin_pb2.Tenant:
        return self._call(self._stub.SetTenantEnabled, admin_pb2.SetTenantEnabledRequest(name=name, enabled=enabled))

    def set_budget(self, name: str, budget: float, window: str = "") -> admin_pb2.Tenant:
        return self._call(self._stub.SetBudget, admin_pb2.SetBudgetRequest(name=name, budget=budget, window=window))

    def issue_key(self, tenant: str = "", scope: str = "tenant", label: str = "") -> admin_pb2.IssueKeyResponse:
        return self._call(self._stub.IssueKey, admin_pb2.IssueKeyRequest(tenant=tenant, scope=scope, label=label))

    def revoke_key(self, key_id: str) -> None:
        self._call(self._stub.RevokeKey, admin_pb2.RevokeKeyRequest(key_id=key_id))

    def list_keys(self, tenant: str = "") -> list[admin_pb2.Key]:
        return list(self._call(self._stub.ListKeys, admin_pb2.ListKeysRequest(tenant=tenant)).keys)

    def spend(
        self, tenant: str = "", since: datetime | None = None, until: datetime | None = None, records: int = 0
    ) -> admin_pb2.SpendReportResponse:
        req = admin_pb2.SpendReportRequest(tenant=tenant, records=records > 0, limit=records)
        if since:
            req.since.FromDatetime(since)
        if until:
            req.until.FromDatetime(until)
        return self._call(self._stub.SpendReport, req)

    def reload_policy(self) -> admin_pb2.ReloadPolicyResponse:
        return self._call(self._stub.ReloadPolicy, admin_pb2.ReloadPolicyRequest())

    def explain(self, text: str, tenant: str = "") -> ponder_pb2.Assessment:
        return self._call(self._stub.Explain, admin_pb2.ExplainRequest(text=text, tenant=tenant))

    def run_job(self, name: str, timeout: float | None = None) -> str:
        return self._call(self._stub.RunJob, admin_pb2.RunJobRequest(name=name), timeout).summary

    def risk_status(self) -> admin_pb2.RiskStatusResponse:
        return self._call(self._stub.RiskStatus, admin_pb2.RiskStatusRequest())
