"""Python client for the Ponder daemon.

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


def resolve_endpoint(address: str | None = None) -> tuple[str, bool]:
    """Where to connect, and whether the daemon's endpoint file says that address expects TLS."""
    if address:
        return address, False
    if os.environ.get("PONDER_ADDRESS"):
        return os.environ["PONDER_ADDRESS"], False
    endpoint = state_dir() / "endpoint"
    if endpoint.is_file():
        # Line 1: the address; a later line `tls`: it expects TLS (see ponderd/transport.py).
        lines = endpoint.read_text().split()
        if lines:
            return lines[0], "tls" in lines[1:]
    listen = os.environ.get("PONDER_LISTEN") or DEFAULT_ADDRESS
    return listen.split(",")[0].strip(), False


def resolve_address(address: str | None = None) -> str:
    return resolve_endpoint(address)[0]


def _read(path: str, what: str) -> bytes:
    try:
        return pathlib.Path(path).expanduser().read_bytes()
    except OSError as exc:
        raise PonderError(grpc.StatusCode.INVALID_ARGUMENT, f"cannot read the {what} {path}: {exc.strerror}", []) from None


def _channel(
    address: str, tls: bool, ca: str | None, cert: str | None, key: str | None, server_name: str | None
) -> grpc.Channel:
    if bool(cert) != bool(key):
        raise PonderError(
            grpc.StatusCode.INVALID_ARGUMENT,
            "give both a client certificate and its key (--tls-cert and --tls-key, or PONDER_TLS_CERT and PONDER_TLS_KEY)",
            [],
        )
    # A unix socket is plaintext: its file mode is its access control.
    if address.startswith("unix:") or not (tls or ca or cert):
        return grpc.insecure_channel(address)
    credentials = grpc.ssl_channel_credentials(
        root_certificates=_read(ca, "CA bundle") if ca else None,
        private_key=_read(key, "client key") if key else None,
        certificate_chain=_read(cert, "client certificate") if cert else None,
    )
    options = [("grpc.ssl_target_name_override", server_name)] if server_name else []
    return grpc.secure_channel(address, credentials, options=options)


def _truthy(value: str | None) -> bool:
    return (value or "").lower() in ("1", "true", "yes", "on")


def resolve_token(token: str | None, env: str, filename: str, optional: bool = False) -> str | None:
    """The key to send; None only when `optional` (a client certificate may stand in) and none is given."""
    if token:
        return token
    if os.environ.get(env):
        return os.environ[env]
    if optional:
        return None
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

    def __init__(
        self,
        address: str | None = None,
        token: str | None = None,
        timeout: float | None = None,
        *,
        tls: bool | None = None,
        tls_ca: str | None = None,
        tls_cert: str | None = None,
        tls_key: str | None = None,
        tls_server_name: str | None = None,
    ) -> None:
        self.address, endpoint_tls = resolve_endpoint(address)
        self._token = token
        self.timeout = timeout
        env = os.environ
        cert = tls_cert or env.get("PONDER_TLS_CERT")
        # With a client certificate, the local token files are not a fallback: the certificate is the credential.
        self._cert_auth = bool(cert)
        self._channel = _channel(
            self.address,
            tls if tls is not None else (_truthy(env.get("PONDER_TLS")) or endpoint_tls),
            tls_ca or env.get("PONDER_TLS_CA"),
            cert,
            tls_key or env.get("PONDER_TLS_KEY"),
            tls_server_name or env.get("PONDER_TLS_SERVER_NAME"),
        )

    def _metadata(self) -> tuple[tuple[str, str], ...]:
        token = resolve_token(self._token, self._env, self._file, optional=self._cert_auth)
        return (("authorization", f"Bearer {token}"),) if token else ()

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

    def __init__(self, address: str | None = None, token: str | None = None, timeout: float | None = None, **tls: Any) -> None:
        super().__init__(address, token, timeout, **tls)
        self._stub = ponder_pb2_grpc.PonderServiceStub(self._channel)

    @staticmethod
    def _request(cls: Any, prompt: str, system: str = "", seed: int = 0, explain: bool = False, **hints: Any) -> Any:
        """An AskRequest, AskStreamRequest or QuoteRequest (the same fields)."""
        return cls(prompt=prompt, system=system, seed=seed, explain=explain, hints=_hints(**hints))

    def ask(self, prompt: str, **kwargs: Any) -> ponder_pb2.AskResponse:
        """Ask and wait for the voted answer. kwargs: system, seed, explain and the hints
        samples, thinking_tokens, severity_floor ("low"|"medium"|"high"), max_cost, level,
        answer_format ("number"|"choice"|"phrase"|"free"|"auto")."""
        timeout = kwargs.pop("timeout", None)
        return self._call(self._stub.Ask, self._request(ponder_pb2.AskRequest, prompt, **kwargs), timeout)

    def ask_stream(self, prompt: str, **kwargs: Any) -> Iterator[ponder_pb2.AskStreamResponse]:
        """The plan, then thinking/answer text as it is produced, then the result."""
        timeout = kwargs.pop("timeout", None)
        try:
            yield from self._stub.AskStream(self._request(ponder_pb2.AskStreamRequest, prompt, **kwargs), metadata=self._metadata(), timeout=timeout or self.timeout)
        except grpc.RpcError as err:
            raise _decode(err) from None

    def quote(self, prompt: str, **kwargs: Any) -> ponder_pb2.QuoteResponse:
        return self._call(self._stub.Quote, self._request(ponder_pb2.QuoteRequest, prompt, **kwargs))

    def balance(self) -> ponder_pb2.Balance:
        return self._call(self._stub.GetBalance, ponder_pb2.GetBalanceRequest()).balance

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

    def __init__(self, address: str | None = None, token: str | None = None, timeout: float | None = None, **tls: Any) -> None:
        super().__init__(address, token, timeout, **tls)
        self._stub = admin_pb2_grpc.AdminServiceStub(self._channel)

    def create_tenant(self, name: str, budget: float, window: str = "day") -> admin_pb2.CreateTenantResponse:
        return self._call(self._stub.CreateTenant, admin_pb2.CreateTenantRequest(name=name, budget=budget, window=window))

    def list_tenants(self) -> list[admin_pb2.Tenant]:
        return list(self._call(self._stub.ListTenants, admin_pb2.ListTenantsRequest()).tenants)

    def set_enabled(self, name: str, enabled: bool) -> admin_pb2.Tenant:
        return self._call(self._stub.SetTenantEnabled, admin_pb2.SetTenantEnabledRequest(name=name, enabled=enabled)).tenant

    def set_budget(self, name: str, budget: float, window: str = "") -> admin_pb2.Tenant:
        return self._call(self._stub.SetBudget, admin_pb2.SetBudgetRequest(name=name, budget=budget, window=window)).tenant

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
        return self._call(self._stub.Explain, admin_pb2.ExplainRequest(text=text, tenant=tenant)).assessment

    def run_job(self, name: str, timeout: float | None = None) -> str:
        return self._call(self._stub.RunJob, admin_pb2.RunJobRequest(name=name), timeout).summary

    def risk_status(self) -> admin_pb2.RiskStatusResponse:
        return self._call(self._stub.RiskStatus, admin_pb2.RiskStatusRequest())
