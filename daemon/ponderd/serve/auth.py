"""The auth interceptor: `authorization: Bearer <token>` -> a Principal, before any handler runs.

Ponder methods need a tenant key, Admin methods an admin key; health checks
and reflection need none. The principal reaches the handler through a context
variable set in the same task that runs it.

With mutual TLS, `[tls] identities` may map a client certificate's CN or SAN to
a tenant. How the two credentials compose:

- a bearer token, when sent, decides who calls, as without TLS; but a tenant
  key of another tenant than the certificate's mapping is refused
  (PERMISSION_DENIED), so a leaked key is no use from another service's host.
  An admin key works from any certificate: the certificate is transport, the
  key is the admin's authority;
- no token, and the certificate maps to a tenant: the call is that tenant's
  (principal key id `cert:<identity>`). Admin methods always need an admin key;
- no token and no mapping: UNAUTHENTICATED, as without TLS.
"""

from __future__ import annotations

import contextvars
import logging
from typing import Any, Callable, Mapping

import grpc

from ponderd.errors import PermissionDenied, PonderError
from ponderd.ledger.keys import Keyring, Principal
from ponderd.serve import boundary
from ponderd.serve.transport import peer_identities

log = logging.getLogger("ponder.auth")

_principal: contextvars.ContextVar[Principal] = contextvars.ContextVar("ponder_principal")

OPEN_SERVICES = ("/grpc.health.v1.Health/", "/grpc.reflection.")
ADMIN_SERVICE = "/ponder.v1.AdminService/"


def principal() -> Principal:
    """The caller of the RPC being handled."""
    return _principal.get()


def current_principal() -> Principal | None:
    """The caller of the RPC being handled, or None before (or without) authentication."""
    return _principal.get(None)


def certificate_tenant(identities: Mapping[str, str], peer: list[str]) -> tuple[str, str] | None:
    """(identity, tenant) of a verified client certificate (its CN and SANs: `peer`) [tls] identities maps, or None."""
    if not identities:
        return None
    mapped = {(i, identities[i]) for i in peer if i in identities}
    if len({tenant for _, tenant in mapped}) > 1:
        raise PermissionDenied(
            f"the client certificate maps to several tenants ({', '.join(sorted(f'{i}={t}' for i, t in mapped))}); "
            "make [tls] identities name one tenant per certificate"
        )
    return min(mapped) if mapped else None


def caller(
    keyring: Keyring, identities: Mapping[str, str], token: str | None, peer: list[str], *, admin: bool = False,
    method: str = "",
) -> Principal:
    """Who calls: the bearer token, or a mapped client certificate (see the module's rules); gRPC and HTTP alike."""
    cert = certificate_tenant(identities, peer)
    if cert is not None and not token:
        who = keyring.certificate(*cert)
    else:
        who = keyring.authenticate(token)
        if cert is not None and who.tenant is not None and who.tenant != cert[1]:
            raise PermissionDenied(
                f"this key is tenant {who.tenant!r}'s but the client certificate {cert[0]!r} is mapped to "
                f"tenant {cert[1]!r}; send that tenant's key, or none"
            )
    if admin and who.scope != "admin":
        if cert is not None and not token:
            # No key came: the caller is its certificate, which [tls] identities maps to a tenant.
            raise PermissionDenied(
                f"{method} needs an admin key; the call came with no key, and its client certificate "
                f"{cert[0]!r} stands for tenant {who.tenant!r} ([tls] identities), which a certificate "
                "never makes an admin: send an admin key (--token, PONDER_ADMIN_TOKEN)"
            )
        raise PermissionDenied(
            f"{method} needs an admin key; this is tenant {who.tenant!r}'s key: send an admin key "
            "(--token, PONDER_ADMIN_TOKEN)"
        )
    return who


class AuthInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, keyring: Keyring, identities: Mapping[str, str] | None = None) -> None:
        self.keyring = keyring
        # Client-certificate identity -> tenant ([tls] identities).
        self.identities = dict(identities or {})

    async def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails], Any], details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        method = details.method
        if handler is None or method.startswith(OPEN_SERVICES):
            return handler
        metadata = dict(details.invocation_metadata or ())
        admin = method.startswith(ADMIN_SERVICE)

        def authorize(context: grpc.aio.ServicerContext) -> Principal:
            peer = peer_identities(context) if self.identities else []
            return caller(self.keyring, self.identities, metadata.get("authorization"), peer, admin=admin, method=method)

        async def admit(context: grpc.aio.ServicerContext) -> None:
            try:
                _principal.set(authorize(context))
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
