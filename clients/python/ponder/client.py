"""Python client for the Ponder daemon (blocking; `ponder.aio` has the same surface for asyncio).

    from ponder.client import PonderClient
    with PonderClient() as c:                  # finds a local daemon and its quickstart key
        r = c.ask("What is 17 * 23?")
        print(r.text, r.cost, r.balance.remaining)

Where it connects: `address`, else PONDER_ADDRESS, else the `endpoint` file the
daemon writes in its state directory, else PONDER_LISTEN, else 127.0.0.1:50051.
An address is HOST:PORT or unix:///PATH (a unix socket: plaintext, no TLS).
Which key it sends: `token`, else PONDER_TOKEN (PONDER_ADMIN_TOKEN for admin
calls), else `local.token` (`admin.token`) in the state directory
(PONDER_STATE_DIR, default ~/.local/state/ponder).

TLS: `tls_ca` (PONDER_TLS_CA), the CA bundle that signed the daemon's
certificate; `tls_cert` and `tls_key` (PONDER_TLS_CERT, PONDER_TLS_KEY), this
client's certificate for mutual TLS; `tls_server_name` (PONDER_TLS_SERVER_NAME),
the name to verify when the address is not one the certificate names. Any of
them, `tls=True`, PONDER_TLS=true, or an endpoint file that says `tls`, turns
TLS on (without a CA: the system's roots). With a client certificate and no
token given, no token is sent: the daemon may map the certificate to a tenant.

Timeouts: every method has a default deadline (`TIMEOUTS`); `timeout=` on the
constructor replaces them all, and `timeout=` on a call overrides both.
Retries: calls that fail with UNAVAILABLE, or RESOURCE_EXHAUSTED for a rate
limit (RATE_LIMITED), are retried by gRPC itself, with backoff or after the
daemon's RetryInfo delay (channel.RETRY_POLICY; `retries=False` turns it off). Each ask and
ask_stream carries an idempotency key (a fresh UUID unless `idempotency_key=`
is given), so a retry of an ask the daemon had already answered gets that
answer back (`replayed` set) and is not charged again. Failures raise typed
subclasses of PonderError (ponder.errors).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import (
    Any,
    Awaitable,
    Callable,
    Concatenate,
    Iterator,
    Literal,
    Mapping,
    ParamSpec,
    Sequence,
    TypeVar,
    Union,
)

import grpc

from . import channel
from .channel import DEFAULT_ADDRESS, resolve_address, resolve_endpoint, resolve_token, state_dir
from .errors import PonderError, from_rpc_error
from .v1 import admin_pb2, admin_pb2_grpc, ponder_pb2, ponder_pb2_grpc

__all__ = [
    "AdminClient", "AnswerFormat", "CheckSpec", "DEFAULT_ADDRESS", "PonderClient", "PonderError", "SEVERITIES",
    "Scope", "Severity", "TIMEOUTS", "Window", "resolve_address", "resolve_endpoint", "resolve_token", "state_dir",
]

# The values the string-typed parameters take (mypy checks them; the daemon checks them again).
Severity = Literal["low", "medium", "high"]
AnswerFormat = Literal["auto", "number", "choice", "phrase", "free"]
Window = Literal["day", "week", "month"]
Scope = Literal["tenant", "admin"]
# {"number": 42} | {"regex": "..."} | {"choice": "B"} | {"any_of": ["Paris"]}
CheckSpec = Mapping[str, Union[float, str, list[str]]]

SEVERITIES = {"low": ponder_pb2.SEVERITY_LOW, "medium": ponder_pb2.SEVERITY_MEDIUM, "high": ponder_pb2.SEVERITY_HIGH}

# Default deadline per method, in seconds: generation can take minutes on a
# CPU; bookkeeping calls answer at once; a retrain trains a model.
TIMEOUTS: dict[str, float] = {
    "ask": 600.0, "ask_stream": 600.0, "quote": 30.0, "balance": 10.0, "feedback": 10.0,
    "create_tenant": 30.0, "list_tenants": 30.0, "set_enabled": 30.0, "set_budget": 30.0, "issue_key": 30.0,
    "revoke_key": 30.0, "rotate_key": 30.0, "set_key_budget": 30.0, "list_keys": 30.0, "list_alerts": 30.0, "spend": 60.0, "reload_policy": 60.0, "explain": 30.0,
    "run_job": 1800.0, "risk_status": 30.0,
}


def _hints(
    samples: int | None = None,
    thinking_tokens: int | None = None,
    severity_floor: Severity | None = None,
    max_cost: float | None = None,
    level: str | None = None,
    answer_format: AnswerFormat | None = None,
) -> ponder_pb2.Hints:
    h = ponder_pb2.Hints(
        samples=samples or 0, max_cost=max_cost or 0.0, level=level or "", answer_format=answer_format or ""
    )
    if thinking_tokens is not None:
        h.thinking_tokens = thinking_tokens
    if severity_floor:
        h.severity_floor = SEVERITIES[severity_floor]
    return h


def _check(spec: CheckSpec | None) -> ponder_pb2.Check | None:
    """{"number": 42} | {"regex": "..."} | {"choice": "B"} | {"any_of": ["Paris"]} as a Check message."""
    if spec is None:
        return None
    check = ponder_pb2.Check()
    for key, value in spec.items():
        if key == "any_of":
            check.any_of.extend([value] if isinstance(value, str) else value)  # type: ignore[list-item]
        elif key == "number":
            check.number = float(value)  # type: ignore[arg-type]
        elif key in ("regex", "choice"):
            setattr(check, key, value)
        else:
            raise ValueError(f"unknown check {key!r}: use number, regex, choice or any_of")
    return check


def ask_request(
    cls: Any, prompt: str, system: str = "", seed: int = 0, explain: bool = False, check: CheckSpec | None = None,
    idempotency_key: str | None = None, temperature: float | None = None, top_p: float | None = None,
    stop: str | Sequence[str] | None = None, choices: int | None = None, **hints: Any,
) -> Any:
    """An AskRequest, AskStreamRequest or QuoteRequest (the same fields; a Quote has no check and no key).

    Ask and AskStream requests get `idempotency_key`, or a fresh UUID when it is
    None: built once per call, so every retry gRPC makes of that call carries
    the same key and the daemon answers and charges it once. "" sends none.
    """
    extra: dict[str, Any] = {"check": _check(check)} if check is not None else {}
    if cls is not ponder_pb2.QuoteRequest:
        extra["idempotency_key"] = str(uuid.uuid4()) if idempotency_key is None else idempotency_key
        # The sampler's settings for this request; None: the model's (a Quote samples nothing).
        extra.update({k: v for k, v in (("temperature", temperature), ("top_p", top_p)) if v is not None})
        # Stop strings (a string or up to 4): each sample's answer ends before the first it writes.
        if stop is not None:
            extra["stop"] = [stop] if isinstance(stop, str) else list(stop)
        # Full answers wanted back in AskResponse.samples (OpenAI's n): each sample runs to its end.
        if choices is not None:
            extra["choices"] = choices
    return cls(prompt=prompt, system=system, seed=seed, explain=explain, hints=_hints(**hints), **extra)


def feedback_request(
    request_id: str, correct: bool | None, true_severity: Severity | None, true_needs_reasoning: bool | None,
    comment: str,
) -> ponder_pb2.FeedbackRequest:
    req = ponder_pb2.FeedbackRequest(request_id=request_id, comment=comment)
    if correct is not None:
        req.correct = correct
    if true_severity:
        req.true_severity = SEVERITIES[true_severity]
    if true_needs_reasoning is not None:
        req.true_needs_reasoning = true_needs_reasoning
    return req


def spend_request(
    tenant: str, since: datetime | None, until: datetime | None, records: int, by_host: bool = False
) -> admin_pb2.SpendReportRequest:
    req = admin_pb2.SpendReportRequest(tenant=tenant, records=records > 0, limit=records, by_host=by_host)
    if since:
        req.since.FromDatetime(since)
    if until:
        req.until.FromDatetime(until)
    return req


class Connection:
    """Address, key, TLS, deadlines: what the blocking and the asyncio clients share."""

    _env, _file = "PONDER_TOKEN", "local.token"
    # The generated stub of the service the subclass calls.
    _stub_class: Any = None

    def __init__(
        self,
        address: str | None = None,
        token: str | None = None,
        timeout: float | None = None,
        *,
        retries: bool = True,
        tls: bool | None = None,
        tls_ca: str | None = None,
        tls_cert: str | None = None,
        tls_key: str | None = None,
        tls_server_name: str | None = None,
    ) -> None:
        self._target = channel.target(
            address, retries=retries, tls=tls, tls_ca=tls_ca, tls_cert=tls_cert, tls_key=tls_key,
            tls_server_name=tls_server_name,
        )
        self.address = self._target.address
        self._token = token
        self.timeout = timeout
        self._channel = self._open(self._target)
        self._stub = self._stub_class(self._channel)

    def _open(self, target: channel.Target) -> Any:
        return channel.open_channel(target)

    def _deadline(self, name: str, timeout: float | None) -> float:
        if timeout is not None:
            return timeout
        return self.timeout if self.timeout is not None else TIMEOUTS[name]

    def _metadata(self) -> tuple[tuple[str, str], ...]:
        token = resolve_token(self._token, self._env, self._file, optional=self._target.cert_auth)
        return (("authorization", f"Bearer {token}"),) if token else ()

    def _error(self, err: grpc.RpcError) -> PonderError:
        """The typed error for a failed call; one that never reached the daemon names its cause (ConnectFailed)."""
        return channel.explain_unreachable(from_rpc_error(err), self._target)

    def _call(self, name: str, method: Any, request: Any, timeout: float | None, unwrap: Callable[[Any], Any]) -> Any:
        try:
            return unwrap(method(request, metadata=self._metadata(), timeout=self._deadline(name, timeout)))
        except grpc.RpcError as err:
            raise self._error(err) from None


def _same(reply: Any) -> Any:
    return reply


class PonderMethods(Connection):
    """The PonderService calls. Each returns what `_call` returns: the reply (blocking) or an awaitable (asyncio)."""

    _stub_class = ponder_pb2_grpc.PonderServiceStub

    def ask(
        self,
        prompt: str,
        *,
        system: str = "",
        seed: int = 0,
        explain: bool = False,
        check: CheckSpec | None = None,
        idempotency_key: str | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        stop: str | Sequence[str] | None = None,
        choices: int | None = None,
        samples: int | None = None,
        thinking_tokens: int | None = None,
        severity_floor: Severity | None = None,
        max_cost: float | None = None,
        level: str | None = None,
        answer_format: AnswerFormat | None = None,
        timeout: float | None = None,
    ) -> ponder_pb2.AskResponse:
        """Ask and wait for the voted answer.

        `system` replaces the daemon's system prompt; `seed` fixes sampling (0: random); `explain` adds the
        features behind the assessment; `check` verifies the answer ({"number": 42}, {"regex": ...},
        {"choice": "B"}, {"any_of": [...]}); `idempotency_key` defaults to a fresh UUID per call, so retries
        are charged once (reuse one to make your own retries safe; "" sends none); `temperature` (0-2, 0 greedy)
        and `top_p` set the sampler for this call (None: the model's); `stop` (a string or up to 4) ends each
        sample's answer before the first stop string it writes (the text is cut there); `choices` (n > 1) runs at
        least n samples, each to its end, so `samples` holds n full answers. The hints, which the
        policy may refuse: `samples`, `thinking_tokens`, `severity_floor`, `max_cost`, `level`, `answer_format`."""
        request = ask_request(
            ponder_pb2.AskRequest, prompt, system=system, seed=seed, explain=explain, check=check,
            idempotency_key=idempotency_key, temperature=temperature, top_p=top_p, stop=stop, choices=choices,
            samples=samples, thinking_tokens=thinking_tokens,
            severity_floor=severity_floor, max_cost=max_cost, level=level, answer_format=answer_format,
        )
        reply: ponder_pb2.AskResponse = self._call("ask", self._stub.Ask, request, timeout, _same)
        return reply

    def quote(
        self,
        prompt: str,
        *,
        system: str = "",
        explain: bool = False,
        samples: int | None = None,
        thinking_tokens: int | None = None,
        severity_floor: Severity | None = None,
        max_cost: float | None = None,
        level: str | None = None,
        answer_format: AnswerFormat | None = None,
        timeout: float | None = None,
    ) -> ponder_pb2.QuoteResponse:
        """The assessment, plan and worst-case cost, without running or charging (the hints as for ask)."""
        request = ask_request(
            ponder_pb2.QuoteRequest, prompt, system=system, explain=explain, samples=samples,
            thinking_tokens=thinking_tokens, severity_floor=severity_floor, max_cost=max_cost, level=level,
            answer_format=answer_format,
        )
        reply: ponder_pb2.QuoteResponse = self._call("quote", self._stub.Quote, request, timeout, _same)
        return reply

    def balance(self, *, timeout: float | None = None) -> ponder_pb2.Balance:
        """This key's tenant's Balance in the current window."""
        balance: ponder_pb2.Balance = self._call(
            "balance", self._stub.GetBalance, ponder_pb2.GetBalanceRequest(), timeout, lambda r: r.balance
        )
        return balance

    def feedback(
        self,
        request_id: str,
        correct: bool | None = None,
        true_severity: Severity | None = None,
        true_needs_reasoning: bool | None = None,
        comment: str = "",
        *,
        timeout: float | None = None,
    ) -> str:
        """Report whether an answer was right; returns the feedback id.

        `request_id` is the id Ask returned, or a prefix of it (6 characters or more) that starts only
        one of this tenant's requests; an ambiguous one is InvalidArgument listing the requests it starts."""
        request = feedback_request(request_id, correct, true_severity, true_needs_reasoning, comment)
        feedback_id: str = self._call("feedback", self._stub.Feedback, request, timeout, lambda r: r.feedback_id)
        return feedback_id


class AdminMethods(Connection):
    """The AdminService calls (an admin key: PONDER_ADMIN_TOKEN or admin.token)."""

    _env, _file = "PONDER_ADMIN_TOKEN", "admin.token"

    _stub_class = admin_pb2_grpc.AdminServiceStub

    def create_tenant(
        self, name: str, budget: float, window: Window = "day", *, timeout: float | None = None
    ) -> admin_pb2.CreateTenantResponse:
        """A new tenant and its first key (the token is in the reply, once)."""
        request = admin_pb2.CreateTenantRequest(name=name, budget=budget, window=window)
        reply: admin_pb2.CreateTenantResponse = self._call("create_tenant", self._stub.CreateTenant, request, timeout, _same)
        return reply

    def list_tenants(self, *, timeout: float | None = None) -> list[admin_pb2.Tenant]:
        tenants: list[admin_pb2.Tenant] = self._call(
            "list_tenants", self._stub.ListTenants, admin_pb2.ListTenantsRequest(), timeout, lambda r: list(r.tenants)
        )
        return tenants

    def set_enabled(self, name: str, enabled: bool, *, timeout: float | None = None) -> admin_pb2.Tenant:
        request = admin_pb2.SetTenantEnabledRequest(name=name, enabled=enabled)
        tenant: admin_pb2.Tenant = self._call("set_enabled", self._stub.SetTenantEnabled, request, timeout, lambda r: r.tenant)
        return tenant

    def set_budget(
        self, name: str, budget: float, window: Window | Literal[""] = "", *, timeout: float | None = None
    ) -> admin_pb2.Tenant:
        """A tenant's new budget per window (and a new window; "" keeps it)."""
        request = admin_pb2.SetBudgetRequest(name=name, budget=budget, window=window)
        tenant: admin_pb2.Tenant = self._call("set_budget", self._stub.SetBudget, request, timeout, lambda r: r.tenant)
        return tenant

    def issue_key(
        self, tenant: str = "", scope: Scope = "tenant", label: str = "", *, expires_in: float | None = None,
        expires_at: datetime | None = None, budget: float | None = None, timeout: float | None = None,
    ) -> admin_pb2.IssueKeyResponse:
        """A new key for a tenant (or, with scope="admin" and no tenant, an admin key); its token is shown once.

        It expires `expires_in` seconds from now or at `expires_at` (an aware datetime), else never.
        `budget`: a cap of the key's own, in credits per the tenant's window (None: only the tenant's budget).
        """
        request = admin_pb2.IssueKeyRequest(tenant=tenant, scope=scope, label=label, expires_in=int(expires_in or 0))
        if expires_at is not None:
            request.expires_at.FromDatetime(expires_at)
        if budget is not None:
            request.budget = budget
        reply: admin_pb2.IssueKeyResponse = self._call("issue_key", self._stub.IssueKey, request, timeout, _same)
        return reply

    def rotate_key(
        self, key_id: str, overlap: float = 0, *, expires_in: float | None = None, timeout: float | None = None
    ) -> admin_pb2.RotateKeyResponse:
        """A successor of the key; the old one keeps working for `overlap` seconds, then expires."""
        request = admin_pb2.RotateKeyRequest(key_id=key_id, overlap_seconds=int(overlap), expires_in=int(expires_in or 0))
        reply: admin_pb2.RotateKeyResponse = self._call("rotate_key", self._stub.RotateKey, request, timeout, _same)
        return reply

    def set_key_budget(self, key_id: str, budget: float | None, *, timeout: float | None = None) -> admin_pb2.Key:
        """Give a tenant's key a cap of its own, in credits per the tenant's window (None: remove it)."""
        request = admin_pb2.SetKeyBudgetRequest(key_id=key_id)
        if budget is not None:
            request.budget = budget
        key: admin_pb2.Key = self._call("set_key_budget", self._stub.SetKeyBudget, request, timeout, lambda r: r.key)
        return key

    def revoke_key(self, key_id: str, *, timeout: float | None = None) -> None:
        # Returned, not dropped: in the asyncio client this is the awaitable.
        done: None = self._call("revoke_key", self._stub.RevokeKey, admin_pb2.RevokeKeyRequest(key_id=key_id), timeout,
                                lambda r: None)
        return done

    def list_alerts(self, limit: int = 50, *, timeout: float | None = None) -> list[admin_pb2.Alert]:
        """Recent alerts, newest first, with their webhook delivery state."""
        request = admin_pb2.ListAlertsRequest(limit=limit)
        rows: list[admin_pb2.Alert] = self._call("list_alerts", self._stub.ListAlerts, request, timeout,
                                                 lambda r: list(r.alerts))
        return rows

    def list_keys(self, tenant: str = "", *, timeout: float | None = None) -> list[admin_pb2.Key]:
        """Keys (every tenant's, or one's), never their secrets."""
        request = admin_pb2.ListKeysRequest(tenant=tenant)
        keys: list[admin_pb2.Key] = self._call("list_keys", self._stub.ListKeys, request, timeout, lambda r: list(r.keys))
        return keys

    def spend(
        self, tenant: str = "", since: datetime | None = None, until: datetime | None = None, records: int = 0,
        *, by_host: bool = False, timeout: float | None = None,
    ) -> admin_pb2.SpendReportResponse:
        """Spend by tenant (and by host, with by_host: a fleet on the shared ledger) over a period."""
        request = spend_request(tenant, since, until, records, by_host)
        reply: admin_pb2.SpendReportResponse = self._call("spend", self._stub.SpendReport, request, timeout, _same)
        return reply

    def reload_policy(self, *, timeout: float | None = None) -> admin_pb2.ReloadPolicyResponse:
        request = admin_pb2.ReloadPolicyRequest()
        reply: admin_pb2.ReloadPolicyResponse = self._call("reload_policy", self._stub.ReloadPolicy, request, timeout, _same)
        return reply

    def explain(self, text: str, tenant: str = "", *, timeout: float | None = None) -> ponder_pb2.Assessment:
        """How the daemon assesses a text (with a tenant's override rules), and why."""
        request = admin_pb2.ExplainRequest(text=text, tenant=tenant)
        assessment: ponder_pb2.Assessment = self._call(
            "explain", self._stub.Explain, request, timeout, lambda r: r.assessment
        )
        return assessment

    def run_job(self, name: str, timeout: float | None = None) -> str:
        """Run a scheduled job now; its one-line summary."""
        request = admin_pb2.RunJobRequest(name=name)
        summary: str = self._call("run_job", self._stub.RunJob, request, timeout, lambda r: r.summary)
        return summary

    def risk_status(self, *, timeout: float | None = None) -> admin_pb2.RiskStatusResponse:
        request = admin_pb2.RiskStatusRequest()
        reply: admin_pb2.RiskStatusResponse = self._call("risk_status", self._stub.RiskStatus, request, timeout, _same)
        return reply


_Self = TypeVar("_Self")
_P = ParamSpec("_P")
_R = TypeVar("_R")


def awaited(method: Callable[Concatenate[_Self, _P], _R]) -> Callable[Concatenate[_Self, _P], Awaitable[_R]]:
    """The same method, typed as the asyncio clients run it (their `_call` returns an awaitable)."""
    return method  # type: ignore[return-value]


class _Blocking:
    _channel: grpc.Channel

    def close(self) -> None:
        self._channel.close()

    def __enter__(self: _Self) -> _Self:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class PonderClient(_Blocking, PonderMethods):
    """Calls PonderService with a tenant's key; each method blocks until the reply."""

    def ask_stream(
        self,
        prompt: str,
        *,
        system: str = "",
        seed: int = 0,
        explain: bool = False,
        check: CheckSpec | None = None,
        idempotency_key: str | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        stop: str | Sequence[str] | None = None,
        choices: int | None = None,
        samples: int | None = None,
        thinking_tokens: int | None = None,
        severity_floor: Severity | None = None,
        max_cost: float | None = None,
        level: str | None = None,
        answer_format: AnswerFormat | None = None,
        timeout: float | None = None,
    ) -> Iterator[ponder_pb2.AskStreamResponse]:
        """The plan, then thinking/answer text as it is produced, then the result (parameters as for ask).

        A replayed answer (its idempotency key was answered before) streams the result alone."""
        request = ask_request(
            ponder_pb2.AskStreamRequest, prompt, system=system, seed=seed, explain=explain, check=check,
            idempotency_key=idempotency_key, temperature=temperature, top_p=top_p, stop=stop, choices=choices,
            samples=samples, thinking_tokens=thinking_tokens,
            severity_floor=severity_floor, max_cost=max_cost, level=level, answer_format=answer_format,
        )
        try:
            yield from self._stub.AskStream(request, metadata=self._metadata(), timeout=self._deadline("ask_stream", timeout))
        except grpc.RpcError as err:
            raise self._error(err) from None


class AdminClient(_Blocking, AdminMethods):
    """Calls AdminService with an admin key; each method blocks until the reply."""
