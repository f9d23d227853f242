"""asyncio clients: the same methods, arguments, defaults and errors as ponder.client, awaited.

    from ponder.aio import AsyncPonderClient
    async with AsyncPonderClient("ponder.example.com:50051", token, tls_ca="ca.pem") as c:
        r = await c.ask("What is 17 * 23?")
        async for event in c.ask_stream("Say hello."):
            ...

Built on grpc.aio: open and use a client inside one running event loop.
"""

from __future__ import annotations

from typing import Any, AsyncIterator, Callable, Sequence, TypeVar

import grpc

from . import channel
from .client import AdminMethods, AnswerFormat, CheckSpec, PonderMethods, Severity, ask_request, awaited
from .v1 import ponder_pb2

_Self = TypeVar("_Self")


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

    async def __aenter__(self: _Self) -> _Self:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()


class AsyncPonderClient(_Async, PonderMethods):
    """Calls PonderService with a tenant's key; every method is a coroutine (the same parameters as PonderClient's)."""

    # The shared methods, typed as awaited here (at run time _Async._call makes each return a coroutine).
    ask = awaited(PonderMethods.ask)  # type: ignore[assignment]
    quote = awaited(PonderMethods.quote)  # type: ignore[assignment]
    balance = awaited(PonderMethods.balance)  # type: ignore[assignment]
    feedback = awaited(PonderMethods.feedback)  # type: ignore[assignment]

    async def ask_stream(
        self,
        prompt: str,
        *,
        system: str = "",
        seed: int = 0,
        explain: bool = False,
        check: CheckSpec | None = None,
        idempotency_key: str | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        stop: str | Sequence[str] | None = None,
        choices: int | None = None,
        samples: int | None = None,
        thinking_tokens: int | None = None,
        severity_floor: Severity | None = None,
        max_cost: float | None = None,
        level: str | None = None,
        answer_format: AnswerFormat | None = None,
        timeout: float | None = None,
    ) -> AsyncIterator[ponder_pb2.AskStreamResponse]:
        """The plan, then thinking/answer text as it is produced, then the result (parameters as for ask).

        A replayed answer (its idempotency key was answered before) streams the result alone."""
        request = ask_request(
            ponder_pb2.AskStreamRequest, prompt, system=system, seed=seed, explain=explain, check=check,
            idempotency_key=idempotency_key, temperature=temperature, top_p=top_p, stop=stop, choices=choices,
            samples=samples, thinking_tokens=thinking_tokens,
            severity_floor=severity_floor, max_cost=max_cost, level=level, answer_format=answer_format,
        )
        call = self._stub.AskStream(request, metadata=self._metadata(), timeout=self._deadline("ask_stream", timeout))
        try:
            async for event in call:
                yield event
        except grpc.RpcError as err:
            raise self._error(err) from None
        finally:
            call.cancel()  # a no-op once the stream has ended; stops it when the caller stops reading


class AsyncAdminClient(_Async, AdminMethods):
    """Calls AdminService with an admin key; every method is a coroutine (the same parameters as AdminClient's)."""

    create_tenant = awaited(AdminMethods.create_tenant)  # type: ignore[assignment]
    list_tenants = awaited(AdminMethods.list_tenants)  # type: ignore[assignment]
    set_enabled = awaited(AdminMethods.set_enabled)  # type: ignore[assignment]
    set_budget = awaited(AdminMethods.set_budget)  # type: ignore[assignment]
    issue_key = awaited(AdminMethods.issue_key)  # type: ignore[assignment]
    rotate_key = awaited(AdminMethods.rotate_key)  # type: ignore[assignment]
    revoke_key = awaited(AdminMethods.revoke_key)  # type: ignore[assignment]
    set_key_budget = awaited(AdminMethods.set_key_budget)  # type: ignore[assignment]
    list_keys = awaited(AdminMethods.list_keys)  # type: ignore[assignment]
    list_alerts = awaited(AdminMethods.list_alerts)  # type: ignore[assignment]
    spend = awaited(AdminMethods.spend)  # type: ignore[assignment]
    reload_policy = awaited(AdminMethods.reload_policy)  # type: ignore[assignment]
    explain = awaited(AdminMethods.explain)  # type: ignore[assignment]
    run_job = awaited(AdminMethods.run_job)  # type: ignore[assignment]
    risk_status = awaited(AdminMethods.risk_status)  # type: ignore[assignment]
