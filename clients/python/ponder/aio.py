"""asyncio clients: the same methods, arguments, defaults and errors as ponder.client, awaited.

    from ponder.aio import AsyncPonderClient
    async with AsyncPonderClient("ponder.example.com:50051", token, tls_ca="ca.pem") as c:
        r = await c.ask("What is 17 * 23?")
        async for event in c.ask_stream("Say hello."):
            ...

Built on grpc.aio: open and use a client inside one running event loop.
"""

from __future__ import annotations

from typing import Any, AsyncIterator, Callable

import grpc

from . import channel
from .client import AdminMethods, PonderMethods, ask_request
from .v1 import ponder_pb2


class _Async:
    _channel: grpc.aio.Channel

    def _open(self, target: channel.Target) -> grpc.aio.Channel:
        return channel.open_aio_channel(target)

    async def _call(self, name: str, method: Any, request: Any, timeout: float | None, unwrap: Callable[[Any], Any]) -> Any:
        try:
            reply = await method(request, metadata=self._metadata(), timeout=self._deadline(name, timeout))  # type: ignore[attr-defined]
        except grpc.RpcError as err:
            raise self._error(err) from None  # type: ignore[attr-defined]
        return unwrap(reply)

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> Any:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()


class AsyncPonderClient(_Async, PonderMethods):
    """Calls PonderService with a tenant's key; every method is a coroutine."""

    async def ask_stream(self, prompt: str, *, timeout: float | None = None, **kwargs: Any) -> AsyncIterator[ponder_pb2.AskStreamResponse]:
        """The plan, then thinking/answer text as it is produced, then the result (kwargs as for ask).

        A replayed answer (its idempotency key was answered before) streams the result alone."""
        request = ask_request(ponder_pb2.AskStreamRequest, prompt, **kwargs)
        call = self._stub.AskStream(request, metadata=self._metadata(), timeout=self._deadline("ask_stream", timeout))
        try:
            async for event in call:
                yield event
        except grpc.RpcError as err:
            raise self._error(err) from None
        finally:
            call.cancel()  # a no-op once the stream has ended; stops it when the caller stops reading


class AsyncAdminClient(_Async, AdminMethods):
    """Calls AdminService with an admin key; every method is a coroutine."""
