"""The gRPC boundary: the one table from domain errors to status codes, with rich details.

Servicer methods are wrapped with `rpc`, so a handler raises domain errors and
never picks a status code itself. Servicers are added with `add_servicer`, so a
request body that does not decode reaches that wrapper as `Undecodable` and is
refused with INVALID_ARGUMENT, like any other bad request.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from typing import Any, AsyncIterator, Awaitable, Callable, Mapping

import grpc
from google.protobuf import any_pb2, descriptor
from google.rpc import code_pb2, error_details_pb2, status_pb2

from . import errors

log = logging.getLogger("ponder.rpc")

STATUS: dict[type[errors.PonderError], grpc.StatusCode] = {
    errors.InvalidRequest: grpc.StatusCode.INVALID_ARGUMENT,
    errors.Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    errors.PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    errors.NotFound: grpc.StatusCode.NOT_FOUND,
    errors.AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    errors.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    errors.BudgetExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.Unavailable: grpc.StatusCode.UNAVAILABLE,
    errors.Cancelled: grpc.StatusCode.CANCELLED,
    errors.EngineFailure: grpc.StatusCode.INTERNAL,
}


def status_code(exc: errors.PonderError) -> grpc.StatusCode:
    """The status for an error: the table entry of its nearest class."""
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return grpc.StatusCode.INTERNAL


def _details(exc: errors.PonderError) -> list[any_pb2.Any]:
    packed = []
    if isinstance(exc, errors.BudgetExhausted):
        d = exc.detail
        quota = error_details_pb2.QuotaFailure(
            violations=[
                error_details_pb2.QuotaFailure.Violation(
                    subject=f"tenant:{d.tenant}",
                    description=(
                        f"needs {d.needed_micros / 1e6:.6f} credits, {d.remaining_micros / 1e6:.6f} left; "
                        f"renews at {d.window_end}"
                    ),
                )
            ]
        )
        info = error_details_pb2.ErrorInfo(
            reason="BUDGET_EXHAUSTED",
            domain="ponder",
            metadata={
                "tenant": d.tenant,
                "needed_micros": str(d.needed_micros),
                "remaining_micros": str(d.remaining_micros),
                "window_end": d.window_end,
            },
        )
        packed += [quota, info]
    elif isinstance(exc, errors.PolicyError):
        packed.append(
            error_details_pb2.PreconditionFailure(
                violations=[
                    error_details_pb2.PreconditionFailure.Violation(type="POLICY", subject=exc.path, description=p)
                    for p in exc.problems
                ]
            )
        )
    out = []
    for message in packed:
        a = any_pb2.Any()
        a.Pack(message)
        out.append(a)
    return out


async def abort(context: grpc.aio.ServicerContext, exc: errors.PonderError) -> None:
    code = status_code(exc)
    status = status_pb2.Status(code=getattr(code_pb2, code.name), message=exc.message, details=_details(exc))
    await context.abort(
        code, exc.message, trailing_metadata=(("grpc-status-details-bin", status.SerializeToString()),)
    )


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
            await context.abort(grpc.StatusCode.INTERNAL, "internal error; the daemon's log has the details")

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
            await context.abort(grpc.StatusCode.INTERNAL, "internal error; the daemon's log has the details")

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
