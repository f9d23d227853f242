"""Domain errors. Each says what to change; the gRPC boundary maps the class to a status code."""

from __future__ import annotations

from dataclasses import dataclass


class PonderError(Exception):
    """Base of every error a caller may see.

    `reason` is the ErrorInfo reason the caller receives (the table in
    protos/ponder/v1/ponder.proto and docs/errors.md): stable, UPPER_SNAKE,
    one per class, for programs to branch on instead of the message.
    """

    reason = "INTERNAL"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidRequest(PonderError):
    """The request itself is malformed: fix the request."""

    reason = "INVALID_REQUEST"

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        # The request field at fault, when it is one (the HTTP API names its parameter after it).
        self.field = field


class Unauthenticated(PonderError):
    """No valid credential came with the call."""

    reason = "UNAUTHENTICATED"


class KeyExpired(Unauthenticated):
    """The key was valid but its lifetime has ended (or its rotation's overlap has passed)."""

    reason = "KEY_EXPIRED"


class PermissionDenied(PonderError):
    """The credential is valid but may not do this."""

    reason = "PERMISSION_DENIED"


class NotFound(PonderError):
    """The named thing does not exist (or is not the caller's)."""

    reason = "NOT_FOUND"


class AlreadyExists(PonderError):
    """The named thing exists already."""

    reason = "ALREADY_EXISTS"


class FailedPrecondition(PonderError):
    """The system is not in a state that allows this; change the state, not the call."""

    reason = "FAILED_PRECONDITION"


class PolicyError(FailedPrecondition):
    """A policy file failed validation; the old policy stays in force."""

    reason = "POLICY_INVALID"

    def __init__(self, path: str, problems: list[str]) -> None:
        self.path = path
        self.problems = problems
        super().__init__(f"{path}: " + "; ".join(problems))


class ReplyLost(FailedPrecondition):
    """The request with this idempotency key was answered and charged, but its reply was not kept."""

    reason = "IDEMPOTENCY_REPLY_LOST"

    def __init__(self, message: str, key: str, request_id: str) -> None:
        super().__init__(message)
        self.key = key
        self.request_id = request_id


class ArtifactError(FailedPrecondition):
    """A risk-model artifact was refused; the model in service stays."""

    reason = "RISK_MODEL_REFUSED"


@dataclass(frozen=True)
class QuotaDetail:
    tenant: str
    needed_micros: int
    remaining_micros: int
    window_end: str


class BudgetExhausted(PonderError):
    """Even the cheapest allowed plan costs more than the tenant has left."""

    reason = "BUDGET_EXHAUSTED"

    def __init__(self, message: str, detail: QuotaDetail) -> None:
        super().__init__(message)
        self.detail = detail


class KeyBudgetExhausted(BudgetExhausted):
    """The calling key's own cap (inside its tenant's budget) has too little left; the tenant may have more.

    The same reason (BUDGET_EXHAUSTED) as the tenant's; its QuotaFailure's subject is "key:<key id>".
    """

    def __init__(self, message: str, detail: QuotaDetail, key_id: str) -> None:
        super().__init__(message, detail)
        self.key_id = key_id


class RateLimited(PonderError):
    """The tenant is at one of its rate or concurrency limits (request/limits.py); nothing was charged."""

    reason = "RATE_LIMITED"

    def __init__(
        self, message: str, tenant: str, limit: str, value: int, retry_after_seconds: float, retryable: bool = True
    ) -> None:
        super().__init__(message)
        self.tenant = tenant
        self.limit = limit  # requests_per_minute, tokens_per_minute or max_concurrent
        self.value = value
        # When a retry can pass. Not retryable: an ask larger than the whole bucket, which no wait helps.
        self.retry_after_seconds = retry_after_seconds
        self.retryable = retryable


class Unavailable(PonderError):
    """The daemon cannot take the call now (draining, overloaded); retry later."""

    reason = "UNAVAILABLE"
    # Sent as RetryInfo: the clients' retry policy backs off on its own; this tells others when.
    retry_after_seconds = 1.0


class StorageUnavailable(Unavailable):
    """The database cannot be written (disk full, I/O error): nothing was charged; retry when it recovers."""

    reason = "STORAGE_UNAVAILABLE"
    retry_after_seconds = 5.0


class DeadlineExceeded(PonderError):
    """The call's deadline came before its answer: the request was stopped and charged for what ran."""

    reason = "DEADLINE_EXCEEDED"


class KeyInUse(PonderError):
    """A request with the same idempotency key is still running: wait for it, or use a new key."""

    reason = "IDEMPOTENCY_KEY_IN_USE"

    def __init__(self, message: str, key: str) -> None:
        super().__init__(message)
        self.key = key


class Cancelled(PonderError):
    """The caller went away or the request was stopped."""

    reason = "CANCELLED"


class EngineFailure(PonderError):
    """The model failed while generating; what it used is still settled."""

    reason = "ENGINE_FAILURE"
