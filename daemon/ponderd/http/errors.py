"""Errors in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}`, with the HTTP status and headers.

Which status a domain error gets is decided once, by serve/boundary.py's table
(domain error -> gRPC status code): the HTTP API is handed that table's answer
(`status_of`) and maps the gRPC code to an HTTP status here, the way Google's
own HTTP/gRPC mapping does, with OpenAI's error types so the `openai` SDKs raise
their matching exception class (400 BadRequestError, 401 AuthenticationError,
403 PermissionDeniedError, 404 NotFoundError, 409 ConflictError, 429
RateLimitError, 5xx InternalServerError). docs/http.md has the table.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

from ponderd.errors import (
    BudgetExhausted,
    InvalidRequest,
    KeyBudgetExhausted,
    NotFound,
    PonderError,
    RateLimited,
    Unavailable,
)

# gRPC status code name -> (HTTP status, OpenAI error type).
HTTP_STATUS: dict[str, tuple[int, str]] = {
    "INVALID_ARGUMENT": (400, "invalid_request_error"),
    "FAILED_PRECONDITION": (400, "invalid_request_error"),
    "UNAUTHENTICATED": (401, "authentication_error"),
    "PERMISSION_DENIED": (403, "permission_error"),
    "NOT_FOUND": (404, "not_found_error"),
    "ALREADY_EXISTS": (409, "conflict_error"),
    "ABORTED": (409, "conflict_error"),
    "RESOURCE_EXHAUSTED": (429, "insufficient_quota"),
    "CANCELLED": (499, "request_cancelled"),
    "INTERNAL": (500, "server_error"),
    "UNAVAILABLE": (503, "service_unavailable"),
    "DEADLINE_EXCEEDED": (504, "timeout"),
}
SERVER_ERROR = (500, "server_error")

# ErrorInfo reasons whose OpenAI `code` is a name OpenAI's own API uses; the others are the reason, lowercased.
OPENAI_CODES = {
    "BUDGET_EXHAUSTED": "insufficient_quota",
    "RATE_LIMITED": "rate_limit_exceeded",
    "UNAUTHENTICATED": "invalid_api_key",
}


class BadParameter(InvalidRequest):
    """A request body field the HTTP API cannot take: the error's `param` names it."""

    def __init__(self, message: str, param: str | None) -> None:
        super().__init__(message)
        self.param = param


class UnknownModel(NotFound):
    """`model` names no model this daemon serves."""

    param = "model"
    openai_code = "model_not_found"


class DeadlineExceeded(PonderError):
    """The request's own timeout (X-Stainless-Timeout, which the openai SDK sends) passed; it was stopped."""

    reason = "DEADLINE_EXCEEDED"


@dataclass(frozen=True)
class HttpError:
    status: int
    body: dict[str, Any]
    headers: dict[str, str]


def http_error(exc: PonderError, grpc_code: str, request_id: str) -> HttpError:
    """The HTTP status, OpenAI-shaped body and headers of a domain error whose gRPC status is `grpc_code`."""
    if isinstance(exc, DeadlineExceeded):
        grpc_code = "DEADLINE_EXCEEDED"
    status, kind = HTTP_STATUS.get(grpc_code, SERVER_ERROR)
    headers = {"x-request-id": request_id}
    if isinstance(exc, Unavailable) or (isinstance(exc, RateLimited) and exc.retryable):
        # A rate limit's RetryInfo delay too: the openai SDK waits it and retries a 429.
        headers["retry-after"] = str(max(1, math.ceil(exc.retry_after_seconds)))
    elif isinstance(exc, RateLimited):
        headers["x-should-retry"] = "false"  # larger than the whole bucket: no wait helps
    if isinstance(exc, BudgetExhausted):
        # Retrying does not help before the window renews: the openai SDK reads this and does not retry.
        headers["x-should-retry"] = "false"
    error: dict[str, Any] = {
        "message": exc.message,
        "type": kind,
        "param": getattr(exc, "param", None),
        "code": getattr(exc, "openai_code", None) or OPENAI_CODES.get(exc.reason, exc.reason.lower()),
        "request_id": request_id,
    }
    if isinstance(exc, BudgetExhausted):
        d = exc.detail
        error["ponder"] = {
            "tenant": d.tenant, "needed": d.needed_micros / 1e6, "remaining": d.remaining_micros / 1e6,
            "window_end": d.window_end,
        }
        if isinstance(exc, KeyBudgetExhausted):  # the calling key's own cap, not the tenant's budget
            error["ponder"]["key_id"] = exc.key_id
    return HttpError(status, {"error": error}, headers)


StatusOf = Callable[[PonderError], str]
