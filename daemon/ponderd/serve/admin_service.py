"""The Admin service: tenants, keys, budgets, spend, policy, risk model. Admin keys only."""

from __future__ import annotations

import asyncio
import functools
import json
import re
from datetime import datetime, timedelta
from typing import Any, Awaitable, Callable, overload
from zoneinfo import ZoneInfo

import grpc

from ponder.v1 import admin_pb2, admin_pb2_grpc
from ponderd.clock import Clock
from ponderd.errors import InvalidRequest, PonderError
from ponderd.ledger import types as ledger
from ponderd.ledger.accounts import Accounts, Alerts
from ponderd.ledger.budgets import Budgets
from ponderd.ledger.types import WINDOWS, to_credits, to_micros
from ponderd.planning.assessment import adjust
from ponderd.planning.policy import Policy
from ponderd.planning.policy_file import PolicyHolder
from ponderd.request import validate
from ponderd.risk import Classifier, ClassifierHolder
from ponderd.serve import convert
from ponderd.serve.boundary import rpc, status_code
from ponderd.serve.jobs import Jobs
from ponderd.serve.logs import audit

TENANT_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")


def _name(name: str) -> str:
    if not TENANT_NAME.fullmatch(name):
        raise InvalidRequest(
            f"tenant name {name!r} is not valid: use 1-63 lowercase letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name


def _budget(amount: float) -> int:
    if not amount >= 0 or amount > 1e12:
        raise InvalidRequest(f"budget must be a number from 0 to 1e12 credits, not {amount}")
    return to_micros(amount)


def _key(r: dict[str, Any], now: datetime) -> admin_pb2.Key:
    """A key's row (ledger/accounts.py: list_keys) as the API shows it."""
    expires = ledger.parse_iso(r["expires_at"]) if r.get("expires_at") else None
    cap = r.get("budget_micros")
    return admin_pb2.Key(
        key_id=r["key_id"], tenant=r["tenant"] or "", scope=r["scope"], label=r["label"],
        created_at=convert.timestamp(ledger.parse_iso(r["created_at"])), revoked=r["revoked_at"] is not None,
        expires_at=_maybe_timestamp(expires), last_used_at=_maybe_timestamp(r.get("last_used_at")),
        replaced_by=r.get("replaced_by") or "", expired=expires is not None and expires <= now,
        budget=to_credits(cap) if cap is not None else None, spent=to_credits(r.get("spent_micros") or 0),
    )


@overload
def _window(window: str, default: str) -> str: ...
@overload
def _window(window: str, default: None) -> str | None: ...
def _window(window: str, default: str | None) -> str | None:
    if not window:
        return default
    if window not in WINDOWS:
        raise InvalidRequest(f"window must be one of {', '.join(WINDOWS)}, not {window!r}")
    return window


# The longest key lifetime or overlap a request may ask for (about 100 years): beyond it, a datetime overflows.
MAX_SECONDS = 100 * 366 * 86400


def _seconds(value: int, name: str) -> timedelta:
    if value > MAX_SECONDS:
        raise InvalidRequest(f"{name} must be at most {MAX_SECONDS} seconds (about 100 years), not {value}")
    return timedelta(seconds=value)


def _key_expiry(request: admin_pb2.IssueKeyRequest, now: datetime) -> datetime | None:
    """When the key being issued expires: expires_in seconds from now, or expires_at, or None (never)."""
    if request.expires_in and request.HasField("expires_at"):
        raise InvalidRequest("send expires_in or expires_at, not both")
    if request.expires_in:
        return now + _seconds(request.expires_in, "expires_in")
    if request.HasField("expires_at"):
        when = validate.instant(request.expires_at, "expires_at")
        if when <= now:
            raise InvalidRequest(
                f"expires_at {ledger.iso(when)} is not in the future (now is {ledger.iso(now)}); "
                "give a later time or a duration (expires_in)"
            )
        return when
    return None


def _maybe_timestamp(value: Any) -> Any:
    when = value if isinstance(value, datetime) or value is None else ledger.parse_iso(value)
    return convert.timestamp(when) if when is not None else None


def audited(action: str, fields: Callable[[Any, Any], dict[str, Any]]) -> Callable[..., Any]:
    """Write one `ponder.audit` line per call, done or refused: action, acting key, target, outcome.

    `fields(request, response)` names the target (response is None when the
    call failed); it must never return a token.
    """

    def wrap(method: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        @functools.wraps(method)
        async def handler(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
            try:
                response = await method(self, request, context)
            except PonderError as exc:
                audit(action, status_code(exc).name, **fields(request, None))
                raise
            except Exception:
                audit(action, "INTERNAL", **fields(request, None))
                raise
            audit(action, "OK", **fields(request, response))
            return response

        return handler

    return wrap


class AdminService(admin_pb2_grpc.AdminServiceServicer):
    def __init__(
        self, *, accounts: Accounts, budgets: Budgets, policies: PolicyHolder, classifier: ClassifierHolder,
        clock: Clock, zone: ZoneInfo, jobs: Jobs, reload: Callable[[], tuple[Policy, Classifier]],
        retrains: Callable[[int], Awaitable[list[dict[str, Any]]]],
        publish_policy: Callable[[Policy], Awaitable[None]] | None = None,
    ) -> None:
        self.accounts, self.budgets, self.retrains = accounts, budgets, retrains
        # The same backend keeps the alerts (ledger/accounts.py: Alerts).
        self.alerts: Alerts = accounts  # type: ignore[assignment]
        self.policies, self.classifier, self.clock, self.jobs = policies, classifier, clock, jobs
        # Days start at midnight here (spend totals without a window).
        self.zone = zone
        # Re-reads the policy and the risk model, both or neither (Daemon.reload).
        self.reload = reload
        # A fleet host: stores a reloaded policy as the fleet's newest version (Daemon.publish_policy).
        self.publish_policy = publish_policy

    @property
    def _currency(self) -> str:
        return self.policies.current().currency

    @rpc
    @audited("create_tenant", lambda q, r: {"tenant": q.name, "budget": q.budget, "new_key_id": r.key_id if r else "-"})
    async def CreateTenant(self, request: admin_pb2.CreateTenantRequest, context: grpc.aio.ServicerContext) -> admin_pb2.CreateTenantResponse:
        name, budget, window = _name(request.name), _budget(request.budget), _window(request.window, "day")
        view, key_id, token = await self.accounts.create_tenant(name, budget, window)
        return admin_pb2.CreateTenantResponse(tenant=convert.tenant(view, self._currency), token=token, key_id=key_id)

    @rpc
    async def ListTenants(self, request: admin_pb2.ListTenantsRequest, context: grpc.aio.ServicerContext) -> admin_pb2.ListTenantsResponse:
        views = await self.accounts.balances()
        return admin_pb2.ListTenantsResponse(tenants=[convert.tenant(v, self._currency) for v in views])

    @rpc
    @audited("set_enabled", lambda q, r: {"tenant": q.name, "enabled": q.enabled})
    async def SetTenantEnabled(self, request: admin_pb2.SetTenantEnabledRequest, context: grpc.aio.ServicerContext) -> admin_pb2.SetTenantEnabledResponse:
        view = await self.accounts.set_enabled(request.name, request.enabled)
        return admin_pb2.SetTenantEnabledResponse(tenant=convert.tenant(view, self._currency))

    @rpc
    @audited("set_budget", lambda q, r: {"tenant": q.name, "budget": q.budget, "window": q.window or "-"})
    async def SetBudget(self, request: admin_pb2.SetBudgetRequest, context: grpc.aio.ServicerContext) -> admin_pb2.SetBudgetResponse:
        view = await self.accounts.set_budget(request.name, _budget(request.budget), _window(request.window, None))
        return admin_pb2.SetBudgetResponse(tenant=convert.tenant(view, self._currency))

    @rpc
    @audited("issue_key", lambda q, r: {"tenant": q.tenant or "-", "scope": q.scope,
                                        "budget": q.budget if q.HasField("budget") else "-",
                                        "new_key_id": r.key_id if r else "-"})
    async def IssueKey(self, request: admin_pb2.IssueKeyRequest, context: grpc.aio.ServicerContext) -> admin_pb2.IssueKeyResponse:
        scope = request.scope or "tenant"
        if scope not in ("tenant", "admin"):
            raise InvalidRequest(f"scope must be 'tenant' or 'admin', not {scope!r}")
        if scope == "tenant" and not request.tenant:
            raise InvalidRequest("name the tenant the key is for (or use scope 'admin')")
        expires_at = _key_expiry(request, self.clock.now())
        cap = _budget(request.budget) if request.HasField("budget") else None
        if cap is not None and scope != "tenant":
            raise InvalidRequest("only a tenant's key can have a budget cap; drop budget for an admin key")
        key_id, token = await self.accounts.issue_key(request.tenant or None, scope, request.label, expires_at, cap)
        return admin_pb2.IssueKeyResponse(key_id=key_id, token=token, expires_at=_maybe_timestamp(expires_at))

    @rpc
    @audited("rotate_key", lambda q, r: {"rotated_key_id": q.key_id, "overlap_seconds": q.overlap_seconds,
                                         "new_key_id": r.key_id if r else "-"})
    async def RotateKey(self, request: admin_pb2.RotateKeyRequest, context: grpc.aio.ServicerContext) -> admin_pb2.RotateKeyResponse:
        if not request.key_id:
            raise InvalidRequest("name the key to rotate (key_id; 'ponder admin key list' shows them)")
        overlap = _seconds(request.overlap_seconds, "overlap_seconds")
        expires_at = self.clock.now() + _seconds(request.expires_in, "expires_in") if request.expires_in else None
        r = await self.accounts.rotate_key(request.key_id, overlap, expires_at)
        return admin_pb2.RotateKeyResponse(
            key_id=r["key_id"], token=r["token"], expires_at=_maybe_timestamp(r["expires_at"]),
            old_key_id=r["old_key_id"], old_expires_at=_maybe_timestamp(r["old_expires_at"]),
        )

    @rpc
    @audited("revoke_key", lambda q, r: {"revoked_key_id": q.key_id})
    async def RevokeKey(self, request: admin_pb2.RevokeKeyRequest, context: grpc.aio.ServicerContext) -> admin_pb2.RevokeKeyResponse:
        await self.accounts.revoke_key(request.key_id)
        return admin_pb2.RevokeKeyResponse()

    @rpc
    async def ListKeys(self, request: admin_pb2.ListKeysRequest, context: grpc.aio.ServicerContext) -> admin_pb2.ListKeysResponse:
        rows = await self.accounts.list_keys(request.tenant or None)
        now = self.clock.now()
        return admin_pb2.ListKeysResponse(keys=[_key(r, now) for r in rows])

    @rpc
    @audited("set_key_budget", lambda q, r: {"key_id": q.key_id, "budget": q.budget if q.HasField("budget") else "none"})
    async def SetKeyBudget(self, request: admin_pb2.SetKeyBudgetRequest, context: grpc.aio.ServicerContext) -> admin_pb2.SetKeyBudgetResponse:
        if not request.key_id:
            raise InvalidRequest("name the key (key_id; 'ponder admin key list' shows them)")
        cap = _budget(request.budget) if request.HasField("budget") else None
        row = await self.accounts.set_key_budget(request.key_id, cap)
        return admin_pb2.SetKeyBudgetResponse(key=_key(row, self.clock.now()))

    @rpc
    async def SpendReport(self, request: admin_pb2.SpendReportRequest, context: grpc.aio.ServicerContext) -> admin_pb2.SpendReportResponse:
        now = self.clock.now()
        tenant = request.tenant or None
        until = validate.instant(request.until, "until") if request.HasField("until") else now
        if request.HasField("since"):
            since = validate.instant(request.since, "since")
        elif tenant:
            since = (await self.budgets.balance(tenant)).window_start
        else:
            since = ledger.window_start(now, "day", self.zone)
        if since >= until:
            raise InvalidRequest("since must be before until")
        totals = await self.accounts.spend_totals(since, until, tenant, request.by_host)
        lines: dict[str, admin_pb2.SpendLine] = {}
        for row in totals:
            host = row.get("host", "") if request.by_host else ""
            line = lines.setdefault(f"{row['tenant']}\0{host}", admin_pb2.SpendLine(tenant=row["tenant"], host=host))
            line.requests += row["requests"]
            line.prompt_tokens += row["prompt_tokens"]
            line.thinking_tokens += row["thinking_tokens"]
            line.answer_tokens += row["answer_tokens"]
            line.cost += to_credits(row["cost_micros"])
            line.by_status[row["status"]] = row["requests"]
        records = []
        if request.records:
            rows = await self.accounts.spend_records(since, until, tenant, request.limit or 100)
            records = [convert.spend_record(r) for r in rows]
        return admin_pb2.SpendReportResponse(
            lines=list(lines.values()), records=records, since=convert.timestamp(since), until=convert.timestamp(until)
        )

    @rpc
    @audited("reload", lambda q, r: {"policy": r.policy_version if r else "-", "risk_model": r.model_version if r else "-"})
    async def ReloadPolicy(self, request: admin_pb2.ReloadPolicyRequest, context: grpc.aio.ServicerContext) -> admin_pb2.ReloadPolicyResponse:
        policy, model = await asyncio.to_thread(self.reload)
        if self.publish_policy is not None:
            await self.publish_policy(policy)
        return admin_pb2.ReloadPolicyResponse(policy_version=policy.version, path=policy.path, model_version=model.version)

    @rpc
    async def Explain(self, request: admin_pb2.ExplainRequest, context: grpc.aio.ServicerContext) -> admin_pb2.ExplainResponse:
        if not request.text.strip():
            raise InvalidRequest("text is empty: send the query to explain")
        score = self.classifier.current().score(request.text, explain=True)
        assessment = adjust(score, self.policies.current(), request.tenant or None, request.text, None)
        return admin_pb2.ExplainResponse(assessment=convert.assessment(assessment))

    @rpc
    @audited("run_job", lambda q, r: {"job": q.name})
    async def RunJob(self, request: admin_pb2.RunJobRequest, context: grpc.aio.ServicerContext) -> admin_pb2.RunJobResponse:
        return admin_pb2.RunJobResponse(summary=await self.jobs.run(request.name))

    @rpc
    async def ListAlerts(self, request: admin_pb2.ListAlertsRequest, context: grpc.aio.ServicerContext) -> admin_pb2.ListAlertsResponse:
        rows = await self.alerts.recent_alerts(min(request.limit or 50, 1000))
        return admin_pb2.ListAlertsResponse(alerts=[_alert(r) for r in rows])

    @rpc
    async def RiskStatus(self, request: admin_pb2.RiskStatusRequest, context: grpc.aio.ServicerContext) -> admin_pb2.RiskStatusResponse:
        model = self.classifier.current()
        rows = await self.retrains(50)
        return admin_pb2.RiskStatusResponse(
            model_version=model.version,
            metrics=_floats(getattr(model, "manifest", {}).get("metrics", {})),
            retrains=[
                admin_pb2.Retrain(
                    at=convert.timestamp(datetime.fromisoformat(r["at"])),
                    candidate_version=r["candidate_version"],
                    accepted=bool(r["accepted"]),
                    reason=r["reason"],
                    candidate_metrics=_floats(json.loads(r["candidate_metrics"])),
                    incumbent_metrics=_floats(json.loads(r["incumbent_metrics"])),
                    feedback_used=r["feedback_used"],
                )
                for r in rows
            ],
        )


def _alert(r: dict[str, Any]) -> admin_pb2.Alert:
    return admin_pb2.Alert(
        id=f"{r['tenant']}/{r['window_start']}/{r['kind']}", kind=r["kind"], tenant=r["tenant"],
        window_start=_maybe_timestamp(r["window_start"]), at=_maybe_timestamp(r["at"]),
        spent=to_credits(r["spent_micros"]), budget=to_credits(r["budget_micros"]),
        delivered=r["delivered_at"] is not None, delivered_at=_maybe_timestamp(r["delivered_at"]),
        attempts=r["attempts"], next_attempt_at=_maybe_timestamp(r["next_attempt_at"]), last_error=r["last_error"],
    )


def _floats(d: dict) -> dict[str, float]:
    return {k: float(v) for k, v in d.items() if isinstance(v, (int, float))}
