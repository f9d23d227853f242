"""The gRPC boundary: the one table from domain errors to status codes, with rich details.

Servicer methods are wrapped with `rpc`, so a handler raises domain errors and
never picks a status code itself.
"""

from __future__ import annotations

import functools
import logging
from typing import Any, AsyncIterator, Awaitable, Callable

import grpc
from google.protobuf import any_pb2
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
            async for item in method(self, request, context):
                yield item
        except errors.PonderError as exc:
            await abort(context, exc)
        except Exception:
            log.exception("unhandled error in %s", method.__name__)
            await context.abort(grpc.StatusCode.INTERNAL, "internal error; the daemon's log has the details")

    return handler
