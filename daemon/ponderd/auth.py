"""The auth interceptor: `authorization: Bearer <token>` -> a Principal, before any handler runs.

Ponder methods need a tenant key, Admin methods an admin key; health checks
and reflection need none. The principal reaches the handler through a context
variable set in the same task that runs it.
"""

from __future__ import annotations

import contextvars
import logging
from typing import Any, Callable

import grpc

from . import boundary
from .errors import PermissionDenied, PonderError
from .keys import Keyring, Principal

log = logging.getLogger("ponder.auth")

_principal: contextvars.ContextVar[Principal] = contextvars.ContextVar("ponder_principal")

OPEN_SERVICES = ("/grpc.health.v1.Health/", "/grpc.reflection.")
ADMIN_SERVICE = "/ponder.v1.Admin/"


def principal() -> Principal:
    """The caller of the RPC being handled."""
    return _principal.get()


class AuthInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, keyring: Keyring) -> None:
        self.keyring = keyring

    async def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails], Any], details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        method = details.method
        if handler is None or method.startswith(OPEN_SERVICES):
            return handler
        metadata = dict(details.invocation_metadata or ())
        admin = method.startswith(ADMIN_SERVICE)

        def authorize() -> Principal:
            who = self.keyring.authenticate(metadata.get("authorization"))
            if admin and who.scope != "admin":
                raise PermissionDenied(f"{method} needs an admin key; this is a key of tenant {who.tenant!r}")
            return who

        async def admit(context: grpc.aio.ServicerContext) -> None:
            try:
                _principal.set(authorize())
            except PonderError as exc:
                log.info("refused %s: %s", method, exc.message)
                await boundary.abort(context, exc)

        if handler.unary_unary:
            inner = handler.unary_unary

            async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
                await admit(context)
                return await inner(request, context)

            return grpc.unary_unary_rpc_method_handler(
                unary, handler.request_deserializer, handler.response_serializer
            )
        if handler.unary_stream:
            inner_stream = handler.unary_stream

            async def stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
                await admit(context)
                async for item in inner_stream(request, context):
                    yield item

            return grpc.unary_stream_rpc_method_handler(
                stream, handler.request_deserializer, handler.response_serializer
            )
        return handler
