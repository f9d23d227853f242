"""The gRPC boundary: the one table from domain errors to status codes, with rich details.

Servicer methods are wrapped with `rpc`, so a handler raises domain errors and
never picks a status code itself. Servicers are added with `add_servicer`, so a
request body that does not decode reaches that wrapper as `Undecodable` and is
refused with INVALID_ARGUMENT, like any other bad request.
"""

from __future__ import annotations

import contextvars
import functools
import logging
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, AsyncIterator, Awaitable, Callable, Mapping

import grpc
from google.protobuf import descriptor, duration_pb2, message
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from ponderd import errors

log = logging.getLogger("ponder.rpc")

# ErrorInfo.domain of every error the daemon sends.
ERROR_DOMAIN = "ponder"
# The metadata key that carries the RPC's request id: in the trailers (and
# ErrorInfo.metadata `request_id`) of every error the daemon sends, and in a
# stream's initial metadata. Never in a unary call's early headers: gRPC's
# retry policy stops retrying a call once headers arrived, and UNAVAILABLE
# must stay retryable. An Ask ends itself just before its deadline
# (service.py) so that its DEADLINE_EXCEEDED, too, comes from the daemon.
REQUEST_ID_HEADER = "ponder-request-id"

# The access record of the RPC being handled (serve/logs.py writes it out):
# its request id, and what handlers `note` (level, cost, the ledger's outcome).
CALL: contextvars.ContextVar[dict[str, Any]] = contextvars.ContextVar("ponder_call")


def begin_call(record: dict[str, Any]) -> str:
    """Make `record` the RPC's record, with a fresh request id (an Ask's ledger record takes it); the id."""
    record.setdefault("request_id", secrets.token_hex(12))
    CALL.set(record)
    return str(record["request_id"])


def request_id() -> str:
    """The request id of the RPC being handled ("" outside one)."""
    return str(CALL.get({}).get("request_id", ""))

STATUS: dict[type[errors.PonderError], grpc.StatusCode] = {
    errors.InvalidRequest: grpc.StatusCode.INVALID_ARGUMENT,
    errors.Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    errors.PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    errors.NotFound: grpc.StatusCode.NOT_FOUND,
    errors.AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    errors.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    errors.BudgetExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.RateLimited: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.Unavailable: grpc.StatusCode.UNAVAILABLE,
    errors.Cancelled: grpc.StatusCode.CANCELLED,
    errors.DeadlineExceeded: grpc.StatusCode.DEADLINE_EXCEEDED,
    errors.KeyInUse: grpc.StatusCode.ABORTED,
    errors.EngineFailure: grpc.StatusCode.INTERNAL,
}


def status_code(exc: errors.PonderError) -> grpc.StatusCode:
    """The status for an error: the table entry of its nearest class."""
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return grpc.StatusCode.INTERNAL


def rich_status(exc: errors.PonderError) -> status_pb2.Status:
    """The google.rpc.Status a caller receives: code, message, and always an ErrorInfo.

    The details per reason are the table in protos/ponder/v1/ponder.proto
    (and docs/errors.md): QuotaFailure for an exhausted budget,
    PreconditionFailure for an invalid policy, RetryInfo when retrying helps.
    """
    metadata: dict[str, str] = {}
    details: list[message.Message] = []
    if isinstance(exc, errors.BudgetExhausted):
        d = exc.detail
        details.append(
            error_details_pb2.QuotaFailure(
                violations=[
                    error_details_pb2.QuotaFailure.Violation(
                        subject=f"key:{exc.key_id}" if isinstance(exc, errors.KeyBudgetExhausted) else f"tenant:{d.tenant}",
                        description=(
                            f"needs {d.needed_micros / 1e6:.6f} credits, {d.remaining_micros / 1e6:.6f} left; "
                            f"renews at {d.window_end}"
                        ),
                    )
                ]
            )
        )
        metadata = {
            "tenant": d.tenant,
            "needed_micros": str(d.needed_micros),
            "remaining_micros": str(d.remaining_micros),
            "window_end": d.window_end,
        }
        if isinstance(exc, errors.KeyBudgetExhausted):
            metadata["key_id"] = exc.key_id
    elif isinstance(exc, errors.RateLimited):
        details.append(
            error_details_pb2.QuotaFailure(
                violations=[
                    error_details_pb2.QuotaFailure.Violation(
                        subject=f"tenant:{exc.tenant}", description=f"{exc.limit} = {exc.value}"
                    )
                ]
            )
        )
        delay = duration_pb2.Duration()
        delay.FromTimedelta(timedelta(seconds=exc.retry_after_seconds))
        details.append(error_details_pb2.RetryInfo(retry_delay=delay))
        metadata = {
            "tenant": exc.tenant, "limit": exc.limit, "value": str(exc.value),
            "retry_after_ms": str(int(exc.retry_after_seconds * 1000)),
        }
    elif isinstance(exc, errors.PolicyError):
        details.append(
            error_details_pb2.PreconditionFailure(
                violations=[
                    error_details_pb2.PreconditionFailure.Violation(type="POLICY", subject=exc.path, description=p)
                    for p in exc.problems
                ]
            )
        )
    elif isinstance(exc, errors.KeyInUse):
        metadata = {"idempotency_key": exc.key}
    elif isinstance(exc, errors.ReplyLost):
        metadata = {"idempotency_key": exc.key, "request_id": exc.request_id}
    elif isinstance(exc, errors.Unavailable):
        delay = duration_pb2.Duration()
        delay.FromTimedelta(timedelta(seconds=exc.retry_after_seconds))
        details.append(error_details_pb2.RetryInfo(retry_delay=delay))
    if request_id():
        metadata.setdefault("request_id", request_id())
    info = error_details_pb2.ErrorInfo(reason=exc.reason, domain=ERROR_DOMAIN, metadata=metadata)
    status = status_pb2.Status(code=status_code(exc).value[0], message=exc.message)
    for detail in (info, *details):
        status.details.add().Pack(detail)
    return status


async def abort(context: grpc.aio.ServicerContext, exc: errors.PonderError) -> None:
    status = rpc_status.to_status(rich_status(exc))
    trailers = tuple(status.trailing_metadata)
    rid = exc.request_id if isinstance(exc, errors.ReplyLost) else request_id()
    if rid:
        trailers += ((REQUEST_ID_HEADER, rid),)
    if isinstance(exc, errors.Unavailable) or (isinstance(exc, errors.RateLimited) and exc.retryable):
        # What RetryInfo says, in the form gRPC's own retry policy reads (gRFC A6 server pushback).
        trailers += (("grpc-retry-pushback-ms", str(max(int(exc.retry_after_seconds * 1000), 1))),)
    elif status.code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        # A negative pushback tells a client's retry policy not to retry: an exhausted budget
        # (or an ask larger than the whole rate bucket) does not pass by waiting a moment.
        trailers += (("grpc-retry-pushback-ms", "-1"),)
    await context.abort(status.code, status.details, trailing_metadata=trailers)


def rpc(method: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    """Wrap a unary handler: domain errors become statuses; anything else is logged and INTERNAL."""

    @functools.wraps(method)
    async def handler(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            _check_decoded(request)
            return await method(self, request, context)
        except errors.PonderError as exc:
            await abort(context, exc)
        except Exception:
            log.exception("unhandled error in %s", method.__name__)
            await abort(context, errors.PonderError("internal error; the daemon's log has the details"))

    return handler


def rpc_stream(method: Callable[..., AsyncIterator[Any]]) -> Callable[..., AsyncIterator[Any]]:
    """Like `rpc`, for server-streaming handlers."""

    @functools.wraps(method)
    async def handler(self: Any, request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        try:
            _check_decoded(request)
            async for item in method(self, request, context):
                yield item
        except errors.PonderError as exc:
            await abort(context, exc)
        except Exception:
            log.exception("unhandled error in %s", method.__name__)
            await abort(context, errors.PonderError("internal error; the daemon's log has the details"))

    return handler


@dataclass(frozen=True)
class Undecodable:
    """Stands in for a request whose bytes are not a valid message of its type."""

    message: str  # the message's full name, e.g. ponder.v1.AskRequest
    reason: str


def _check_decoded(request: Any) -> None:
    if isinstance(request, Undecodable):
        raise errors.InvalidRequest(
            f"the request is not a valid {request.message} message: {request.reason}; send a serialized "
            f"{request.message.rsplit('.', 1)[-1]} built from the service's .proto (its text fields must be UTF-8)"
        )


def _decoding(handler: grpc.RpcMethodHandler, message: str) -> grpc.RpcMethodHandler:
    """The handler, with a request that fails to decode passed on as Undecodable.

    grpc runs the deserializer before any handler, and turns an exception there
    into UNKNOWN/INTERNAL with a traceback in the log; the client sent the
    bytes, so the handler's `rpc` wrapper answers INVALID_ARGUMENT instead.
    """
    decode = handler.request_deserializer
    if decode is None or getattr(decode, "_ponder_guarded", False):
        return handler

    def guarded(data: bytes) -> Any:
        try:
            return decode(data)
        except Exception as exc:  # DecodeError, or UnicodeDecodeError in the pure-Python protobuf
            return Undecodable(message, str(exc) or type(exc).__name__)

    guarded._ponder_guarded = True  # type: ignore[attr-defined]
    return handler._replace(request_deserializer=guarded)  # type: ignore[attr-defined]


class _DecodingHandler(grpc.GenericRpcHandler):
    def __init__(self, inner: grpc.GenericRpcHandler, inputs: Mapping[str, str]) -> None:
        self.inner = inner
        self.inputs = inputs

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        handler = self.inner.service(details)
        name = details.method.rsplit("/", 1)[-1]
        return None if handler is None else _decoding(handler, self.inputs.get(name, "request"))


class _DecodingRegistrar:
    """Stands in for the server in a generated `add_*Servicer_to_server`: guards each handler it adds."""

    def __init__(self, server: grpc.aio.Server, service: descriptor.ServiceDescriptor) -> None:
        self.server = server
        self.inputs = {m.name: m.input_type.full_name for m in service.methods}

    def add_generic_rpc_handlers(self, handlers: tuple[grpc.GenericRpcHandler, ...]) -> None:
        self.server.add_generic_rpc_handlers(tuple(_DecodingHandler(h, self.inputs) for h in handlers))

    def add_registered_method_handlers(self, service: str, handlers: dict[str, grpc.RpcMethodHandler]) -> None:
        self.server.add_registered_method_handlers(
            service, {name: _decoding(h, self.inputs.get(name, "request")) for name, h in handlers.items()}
        )


def add_servicer(
    add: Callable[[Any, Any], None], servicer: Any, server: grpc.aio.Server, service: descriptor.ServiceDescriptor
) -> None:
    """Call a generated `add_*Servicer_to_server(servicer, server)` so undecodable requests reach `rpc`."""
    add(servicer, _DecodingRegistrar(server, service))
