"""Typed errors for failed calls, decoded from the daemon's google.rpc.Status (via grpcio-status).

Every class is a `PonderError` (catch that for "any failure") and carries the
gRPC code, the daemon's message, the decoded details and the ErrorInfo reason
(docs/errors.md lists them). Branch on the class or on `reason`, not on the
message text.

    try:
        client.ask("...")
    except BudgetExhausted as e:
        print("budget renews at", e.renews_at, [v.description for v in e.violations])
    except Unavailable as e:
        print("retry in", e.retry_delay, "seconds")   # the client already retried per its retry policy
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Sequence

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

# The metadata key of the daemon's request id (initial metadata, trailers).
REQUEST_ID_HEADER = "ponder-request-id"

# The detail messages the daemon sends (the table in protos/ponder/v1/ponder.proto).
DETAIL_TYPES = (
    error_details_pb2.ErrorInfo,
    error_details_pb2.QuotaFailure,
    error_details_pb2.PreconditionFailure,
    error_details_pb2.RetryInfo,
)


class PonderError(Exception):
    """A failed call: the gRPC status code, the daemon's message, and decoded error details."""

    def __init__(self, code: grpc.StatusCode, message: str, details: Sequence[Any] = (), request_id: str = "") -> None:
        super().__init__(f"{code.name}: {message}" + (f" (request {request_id})" if request_id else ""))
        self.code = code
        self.message = message
        self.details = list(details)
        # The daemon's id for the call (its access log line; an ask's spend record): quote it when reporting.
        # "" when the call never reached the daemon.
        self.request_id = request_id

    def _detail(self, cls: type) -> Any:
        return next((d for d in self.details if isinstance(d, cls)), None)

    @property
    def error_info(self) -> error_details_pb2.ErrorInfo | None:
        return self._detail(error_details_pb2.ErrorInfo)

    @property
    def reason(self) -> str:
        """The ErrorInfo reason (e.g. "BUDGET_EXHAUSTED"); "" when the call failed before reaching the daemon."""
        info = self.error_info
        return info.reason if info is not None else ""

    @property
    def quota_failure(self) -> error_details_pb2.QuotaFailure | None:
        return self._detail(error_details_pb2.QuotaFailure)


class InvalidArgument(PonderError):
    """INVALID_ARGUMENT: the request is malformed; fix it (retrying will not help)."""


class Unauthenticated(PonderError):
    """UNAUTHENTICATED: no valid key came with the call."""


class PermissionDenied(PonderError):
    """PERMISSION_DENIED: the key is valid but may not do this (or the policy refuses a hint)."""


class NotFound(PonderError):
    """NOT_FOUND: no such tenant, key or request (for this caller)."""


class AlreadyExists(PonderError):
    """ALREADY_EXISTS: the name is taken."""


class FailedPrecondition(PonderError):
    """FAILED_PRECONDITION: the daemon's state does not allow this (e.g. an invalid policy file)."""

    @property
    def violations(self) -> list[error_details_pb2.PreconditionFailure.Violation]:
        failure = self._detail(error_details_pb2.PreconditionFailure)
        return list(failure.violations) if failure is not None else []


class BudgetExhausted(PonderError):
    """RESOURCE_EXHAUSTED: even the cheapest allowed plan costs more than the tenant has left."""

    @property
    def violations(self) -> list[error_details_pb2.QuotaFailure.Violation]:
        quota = self.quota_failure
        return list(quota.violations) if quota is not None else []

    def _meta(self, key: str) -> str | None:
        info = self.error_info
        return info.metadata.get(key) if info is not None else None

    @property
    def renews_at(self) -> datetime | None:
        """When the tenant's budget window ends and the budget renews."""
        end = self._meta("window_end")
        return datetime.fromisoformat(end) if end else None

    @property
    def needed(self) -> float | None:
        """The cheapest plan's worst-case cost, in credits."""
        micros = self._meta("needed_micros")
        return int(micros) / 1e6 if micros else None

    @property
    def remaining(self) -> float | None:
        """What the tenant had left (or the key, when `key_id` is set), in credits."""
        micros = self._meta("remaining_micros")
        return int(micros) / 1e6 if micros else None

    @property
    def key_id(self) -> str | None:
        """The calling key, when what is short is that key's own cap rather than the tenant's budget."""
        return self._meta("key_id") or None


class RateLimited(BudgetExhausted):
    """RESOURCE_EXHAUSTED with reason RATE_LIMITED: the tenant is at a rate or concurrency limit; nothing was charged.

    `limit` names it (requests_per_minute, tokens_per_minute, max_concurrent);
    `retry_delay` is when a retry can pass (RetryInfo). The client's retry
    policy already waited that long and retried before raising this.
    """

    @property
    def limit(self) -> str | None:
        return self._meta("limit")

    @property
    def retry_delay(self) -> float | None:
        info = self._detail(error_details_pb2.RetryInfo)
        return info.retry_delay.ToTimedelta().total_seconds() if info is not None else None


class Unavailable(PonderError):
    """UNAVAILABLE: the daemon cannot take the call now (draining, overloaded, unreachable); retry later."""

    @property
    def retry_delay(self) -> float | None:
        """Seconds the daemon asked callers to wait (RetryInfo); None when it sent none (e.g. unreachable)."""
        info = self._detail(error_details_pb2.RetryInfo)
        return info.retry_delay.ToTimedelta().total_seconds() if info is not None else None


class ConnectFailed(Unavailable):
    """UNAVAILABLE before the call reached the daemon: nothing listens, or the TLS handshake failed.

    `cause` says which (one of CONNECT_CAUSES, "" when gRPC's text names none of
    them), the message says what to change, and `grpc_details` keeps gRPC's own text.
    """

    def __init__(self, message: str, cause: str, grpc_details: str) -> None:
        super().__init__(grpc.StatusCode.UNAVAILABLE, message)
        self.cause = cause
        self.grpc_details = grpc_details


# What ConnectFailed.cause can be (docs/errors.md explains each).
CONNECT_CAUSES = (
    "not_listening",            # connection refused: no daemon at the address
    "unknown_host",             # the address's host name does not resolve
    "tls_untrusted",            # the daemon's certificate is not signed by a CA the client trusts
    "tls_name_mismatch",        # the daemon's certificate does not name the host (or --tls-server-name)
    "tls_client_cert_missing",  # the daemon asks for a client certificate and the client sent none
    "tls_client_cert_refused",  # the daemon refused the client certificate the client sent
    "tls_expected",             # a plaintext client against a TLS port
    "plaintext_expected",       # a TLS client against a plaintext port
)


class DeadlineExceeded(PonderError):
    """DEADLINE_EXCEEDED: the call's timeout passed; the daemon stopped the request and charged what ran."""


class Cancelled(PonderError):
    """CANCELLED: the request was stopped."""


class Aborted(PonderError):
    """ABORTED: a request with the same idempotency key is still running; wait for it and retry, or use a new key."""

    @property
    def idempotency_key(self) -> str | None:
        info = self.error_info
        return info.metadata.get("idempotency_key") if info is not None else None


class Internal(PonderError):
    """INTERNAL (or UNKNOWN): the daemon failed; its log has the details."""


BY_CODE: dict[grpc.StatusCode, type[PonderError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.RESOURCE_EXHAUSTED: BudgetExhausted,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.CANCELLED: Cancelled,
    grpc.StatusCode.ABORTED: Aborted,
    grpc.StatusCode.INTERNAL: Internal,
    grpc.StatusCode.UNKNOWN: Internal,
}


def error(code: grpc.StatusCode, message: str, details: Sequence[Any] = (), request_id: str = "") -> PonderError:
    """The typed error for a status code (and, for RESOURCE_EXHAUSTED, its ErrorInfo reason)."""
    cls = BY_CODE.get(code, PonderError)
    if cls is BudgetExhausted and any(
        isinstance(d, error_details_pb2.ErrorInfo) and d.reason == "RATE_LIMITED" for d in details
    ):
        cls = RateLimited
    return cls(code, message, details, request_id)


def _request_id(err: grpc.RpcError, details: Sequence[Any]) -> str:
    """The daemon's request id: from its trailers or ErrorInfo, else the initial metadata (a deadline the client's timer ended)."""
    for detail in details:
        if isinstance(detail, error_details_pb2.ErrorInfo) and detail.metadata.get("request_id"):
            return str(detail.metadata["request_id"])
    for read in ("trailing_metadata", "initial_metadata"):
        try:
            pairs = getattr(err, read)() or ()
        except Exception:  # a call that never started has neither
            continue
        for key, val in pairs:
            if key == REQUEST_ID_HEADER:
                return val if isinstance(val, str) else val.decode()
    return ""


def from_rpc_error(err: grpc.RpcError) -> PonderError:
    """Decode a failed call (sync or asyncio) into its typed error, with the status details unpacked."""
    details: list[Any] = []
    try:
        status = rpc_status.from_call(err)  # type: ignore[arg-type]
    except ValueError:  # code or message disagree with the trailer: trust the call, drop the details
        status = None
    for packed in status.details if status is not None else ():
        for cls in DETAIL_TYPES:
            if packed.Is(cls.DESCRIPTOR):
                message = cls()
                packed.Unpack(message)
                details.append(message)
    return error(err.code(), err.details() or "", details, _request_id(err, details))  # type: ignore[attr-defined]
