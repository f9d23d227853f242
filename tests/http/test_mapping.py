"""The HTTP API's error mapping, for every entry of serve/boundary.py's table (fast: no daemon, no model)."""

from __future__ import annotations

import pytest

from ponderd import errors
from ponderd.http.errors import HTTP_STATUS, BadParameter, DeadlineExceeded, UnknownModel, http_error
from ponderd.serve.boundary import STATUS
from ponderd.serve.web import status_name

QUOTA = errors.QuotaDetail("acme", 2_000_000, 10_000, "2026-03-03T00:00:00+00:00")

# One instance of each error class a request can raise, and the HTTP status (so the openai SDK's class) it must get.
CASES = [
    (errors.InvalidRequest("bad"), 400),  # BadRequestError
    (BadParameter("bad n", "n"), 400),
    (errors.Unauthenticated("no key"), 401),  # AuthenticationError
    (errors.PermissionDenied("no"), 403),  # PermissionDeniedError
    (errors.NotFound("none"), 404),  # NotFoundError
    (UnknownModel("no model"), 404),
    (errors.AlreadyExists("twice"), 409),  # ConflictError
    (errors.FailedPrecondition("state"), 400),
    (errors.PolicyError("policy.toml", ["bad"]), 400),
    (errors.ReplyLost("lost", "k", "r"), 400),
    (errors.ArtifactError("refused"), 400),
    (errors.BudgetExhausted("spent", QUOTA), 429),  # RateLimitError
    (errors.RateLimited("slow down", "acme", "requests_per_minute", 5, 2.4), 429),
    (errors.Unavailable("busy"), 503),  # InternalServerError
    (errors.StorageUnavailable("disk"), 503),
    (errors.Cancelled("stopped"), 499),
    (errors.KeyInUse("running", "k"), 409),
    (errors.EngineFailure("model"), 500),
    (DeadlineExceeded("late"), 504),
    (errors.DeadlineExceeded("late"), 504),
    (errors.PonderError("?"), 500),
]


def test_every_boundary_entry_has_a_case_and_an_http_status():
    assert set(STATUS) <= {type(e) for e, _ in CASES}
    assert {status_name(e) for e, _ in CASES} <= set(HTTP_STATUS)


@pytest.mark.parametrize("exc, status", CASES, ids=[type(e).__name__ for e, _ in CASES])
def test_each_error_gets_its_status_in_openai_shape(exc, status):
    got = http_error(exc, status_name(exc), "rid1")
    assert got.status == status
    error = got.body["error"]
    assert set(error) >= {"message", "type", "param", "code"} and error["message"] == exc.message
    assert error["request_id"] == got.headers["x-request-id"] == "rid1"
    assert status < 500 or error["type"] in ("server_error", "service_unavailable", "timeout")


def test_the_details_a_client_acts_on():
    budget = http_error(errors.BudgetExhausted("spent", QUOTA), "RESOURCE_EXHAUSTED", "r")
    assert budget.body["error"]["code"] == budget.body["error"]["type"] == "insufficient_quota"
    assert budget.headers["x-should-retry"] == "false" and budget.body["error"]["ponder"]["remaining"] == 0.01
    assert "key_id" not in budget.body["error"]["ponder"]
    capped = http_error(errors.KeyBudgetExhausted("key cap", QUOTA, "4be1c0a9d2f3"), "RESOURCE_EXHAUSTED", "r")
    assert capped.status == 429 and capped.body["error"]["ponder"]["key_id"] == "4be1c0a9d2f3"
    busy = http_error(errors.StorageUnavailable("disk"), "UNAVAILABLE", "r")
    assert busy.headers["retry-after"] == "5"
    assert http_error(BadParameter("bad", "messages[0].role"), "INVALID_ARGUMENT", "r").body["error"]["param"] == "messages[0].role"
    assert http_error(errors.Unauthenticated("x"), "UNAUTHENTICATED", "r").body["error"]["code"] == "invalid_api_key"
    assert http_error(UnknownModel("x"), "NOT_FOUND", "r").body["error"]["code"] == "model_not_found"


def test_a_rate_limit_is_a_429_the_openai_sdk_retries_after_the_delay():
    limited = http_error(errors.RateLimited("slow down", "acme", "requests_per_minute", 5, 2.4), "RESOURCE_EXHAUSTED", "r")
    assert limited.status == 429 and limited.body["error"]["code"] == "rate_limit_exceeded"
    assert limited.headers["retry-after"] == "3" and "x-should-retry" not in limited.headers
    never = http_error(errors.RateLimited("too big", "acme", "tokens_per_minute", 10, 60.0, retryable=False),
                       "RESOURCE_EXHAUSTED", "r")
    assert never.headers["x-should-retry"] == "false" and "retry-after" not in never.headers
    expired = http_error(errors.KeyExpired("key k expired at T"), "UNAUTHENTICATED", "r")
    assert expired.status == 401 and expired.body["error"]["code"] == "key_expired"
