"""The HTTP API's routes: a Starlette app over the same Asking gRPC uses (serve/asking.py).

    POST /v1/chat/completions   plain, or stream: true as server-sent events
    GET  /v1/models             "default" and the models the policy routes to
    GET  /healthz, /readyz      the daemon's health, as gRPC health reports it

Everything it needs is handed in (`Backend`): this package sits below serve/
in the import rule, so serve/server.py wires it and starts it (http/server.py).
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from dataclasses import dataclass
from functools import partial
from typing import Any, AsyncIterator, Callable, Protocol

import anyio
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from ponder.v1 import ponder_pb2
from ponderd.errors import Cancelled, InvalidRequest, PonderError, Unauthenticated
from ponderd.http import chat
from ponderd.http.errors import BadParameter, DeadlineExceeded, HttpError, StatusOf, http_error
from ponderd.ledger.keys import Principal

log = logging.getLogger("ponder.http")

# The largest request body read, as gRPC's largest message.
MAX_BODY = 8 * 1024 * 1024
METHOD = "ChatCompletions"


class Asker(Protocol):
    async def ask(self, who: Principal, request: Any, timeout: float | None) -> ponder_pb2.AskResponse: ...

    def stream(self, who: Principal, request: Any, timeout: float | None) -> AsyncIterator[ponder_pb2.AskStreamResponse]: ...


@dataclass
class Backend:
    """The daemon's parts the HTTP API uses, handed in by serve/server.py."""

    asking: Asker
    # The Authorization header's value and the client certificate's identities -> the caller
    # (serve/auth.py's rules: the same keys, hashes and [tls] identities as gRPC).
    authenticate: Callable[[str | None, list[str]], Principal]
    # A domain error's gRPC status code name: serve/boundary.py's one table.
    status_of: StatusOf
    # The policy in force (planning.policy_file.PolicyHolder).
    policies: Any
    # The primary model's name.
    primary: str
    # The health states gRPC health reports, by service name ("": overall); ready: asks are taken.
    health: Callable[[], dict[str, bool]]
    ready: Callable[[], bool]
    # Metrics and the access log (serve/telemetry.py, serve/logs.py).
    count: Callable[[str, str, float], None]
    begin: Callable[[str], dict[str, Any]]
    access: Callable[..., None]


def create_app(backend: Backend) -> Starlette:
    api = _Api(backend)
    routes = [
        Route("/v1/chat/completions", api.chat_completions, methods=["POST"]),
        Route("/v1/models", api.models, methods=["GET"]),
        Route("/healthz", api.healthz, methods=["GET"]),
        Route("/readyz", api.readyz, methods=["GET"]),
    ]
    app = Starlette(routes=routes, exception_handlers={HTTPException: _http_exception})  # type: ignore[dict-item]
    app.state.api = api
    return app


async def _http_exception(request: Request, exc: HTTPException) -> Response:
    kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
    message = (
        f"no route {request.method} {request.url.path}: the API serves POST /v1/chat/completions, GET /v1/models, "
        "GET /healthz and GET /readyz" if exc.status_code in (404, 405) else str(exc.detail)
    )
    body = {"error": {"message": message, "type": kind, "param": None, "code": None}}
    return JSONResponse(body, exc.status_code, headers=exc.headers)


class _Api:
    def __init__(self, backend: Backend) -> None:
        self.b = backend
        # Streams' producers: asyncio holds only weak references to tasks.
        self._tasks: set[asyncio.Task[Any]] = set()

    # -- routes --------------------------------------------------------------

    async def chat_completions(self, request: Request) -> Response:
        started = time.perf_counter()
        record = self.b.begin(_peer(request))
        who: Principal | None = None
        code, status = "OK", 200
        try:
            who = self._authenticate(request)
            body = await _read_json(request)
            parsed = chat.parse(
                body, self.model_names(), partial(self._effort, who),
                request.headers.get("idempotency-key", ""),
            )
            timeout = _timeout(request)
            if parsed.stream:
                return await self._stream(request, who, parsed, timeout, record, started)
            reply = await self._until_disconnect(request, self.b.asking.ask(who, parsed.request, timeout), timeout)
            if reply is None:
                code, status = "CANCELLED", 499
                return Response(status_code=499)
            headers = {"x-request-id": reply.request_id}
            if reply.replayed:
                headers["x-ponder-replayed"] = "true"
            return JSONResponse(chat.completion(reply, self.b.primary, parsed.n), headers=headers)
        except PonderError as exc:
            error = self._error(exc, record)
            code, status = self.b.status_of(exc) if not isinstance(exc, DeadlineExceeded) else "DEADLINE_EXCEEDED", error.status
            return _error_response(error)
        except Exception:
            log.exception("unhandled error in %s", METHOD)
            code, status = "INTERNAL", 500
            error = self._error(PonderError("internal error; the daemon's log has the details"), record)
            return _error_response(error)
        finally:
            if status != 200 or not record.get("streaming"):
                self._end(record, code, status, started, who)

    async def models(self, request: Request) -> Response:
        record, started = self.b.begin(_peer(request)), time.perf_counter()
        who: Principal | None = None
        try:
            who = self._authenticate(request)
        except PonderError as exc:
            error = self._error(exc, record)
            self._end(record, self.b.status_of(exc), error.status, started, who, method="ListModels")
            return _error_response(error)
        created = int(time.time())
        data = [{"id": name, "object": "model", "created": created, "owned_by": "ponder"} for name in self.model_names()]
        self._end(record, "OK", 200, started, who, method="ListModels")
        return JSONResponse({"object": "list", "data": data})

    async def healthz(self, request: Request) -> Response:
        states = self.b.health()
        ok = states.get("", False)
        return JSONResponse({"status": _serving(ok), "services": {k or "(overall)": _serving(v) for k, v in states.items()}}, 200 if ok else 503)

    async def readyz(self, request: Request) -> Response:
        ok = self.b.ready()
        return JSONResponse({"status": _serving(ok)}, 200 if ok else 503)

    # -- helpers -------------------------------------------------------------

    def model_names(self) -> list[str]:
        """"default" (the policy routes) and each model a level of the policy routes to, by its [models] name."""
        policy = self.b.policies.current()
        routed = {lvl.model or self.b.primary for lvl in policy.levels}
        return ["default", *sorted(routed - {"default"})]

    def _effort(self, who: Principal, effort: str) -> str:
        """The level reasoning_effort means for this caller: the lowest, middle or highest of its tenant's range."""
        policy = self.b.policies.current()
        rules = policy.rules_for(who.tenant)
        levels = [lvl.name for lvl in policy.levels][policy.rank(rules.min_level): policy.rank(rules.max_level) + 1]
        return {"low": levels[0], "medium": levels[(len(levels) - 1) // 2], "high": levels[-1]}[effort]

    def _authenticate(self, request: Request) -> Principal:
        header = request.headers.get("authorization") or None
        peer = request.scope.get("extensions", {}).get("tls", {}).get("peer_identities", [])
        try:
            return self.b.authenticate(header, peer)
        except Unauthenticated:
            if header:
                raise
            raise Unauthenticated(
                "missing credentials: send the header 'Authorization: Bearer <tenant key>' "
                "(the openai SDK sends its api_key so; 'ponder admin key issue' makes a key)"
            ) from None

    def _error(self, exc: PonderError, record: dict[str, Any]) -> HttpError:
        request_id = record.get("request_id") or secrets.token_hex(12)
        record["request_id"] = request_id
        grpc_code = self.b.status_of(exc)
        if isinstance(exc, InvalidRequest) and getattr(exc, "param", None) is None and exc.field:
            # A rule of the shared request path (request/validate.py, the pipeline) named its field: name the parameter.
            exc = BadParameter(exc.message, chat.PARAMS.get(exc.field, exc.field))
        if grpc_code == "INTERNAL" and not exc.message:
            exc = PonderError("internal error; the daemon's log has the details")
        return http_error(exc, grpc_code, request_id)

    def _end(
        self, record: dict[str, Any], code: str, status: int, started: float, who: Principal | None, method: str = METHOD,
    ) -> None:
        seconds = time.perf_counter() - started
        self.b.count(method, code, seconds)
        self.b.access(method, record, code, seconds, who, transport="http", http_status=status)

    async def _until_disconnect(self, request: Request, work: Any, timeout: float | None) -> Any:
        """Run `work` to its end; None if the client left first (the request is then stopped, charged for what ran)."""
        task = asyncio.ensure_future(work)
        gone = asyncio.ensure_future(_disconnected(request))
        try:
            done, _ = await asyncio.wait({task, gone}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
        if task in done:
            return task.result()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        if gone not in done:  # the timeout passed
            raise DeadlineExceeded(
                f"the request's timeout ({timeout:g}s, from X-Stainless-Timeout) passed; it was stopped and charged "
                "for what ran: allow more time, or lower max_tokens or the level"
            )
        return None

    async def _stream(
        self, request: Request, who: Principal, parsed: chat.Chat, timeout: float | None, record: dict[str, Any], started: float,
    ) -> Response:
        """Server-sent events: errors before the first event are a plain error response; later ones an error event."""
        events: asyncio.Queue[Any] = asyncio.Queue()
        done = object()

        async def produce() -> None:
            stream = self.b.asking.stream(who, parsed.request, timeout)
            try:
                async for event in stream:
                    events.put_nowait(event)
            except BaseException as exc:  # handed to the consumer; CancelledError: the client left
                events.put_nowait(exc)
                if not isinstance(exc, Exception):
                    raise
            finally:
                await stream.aclose()  # type: ignore[attr-defined]
                events.put_nowait(done)

        producer = asyncio.ensure_future(produce())
        self._tasks.add(producer)
        producer.add_done_callback(self._tasks.discard)
        first = await events.get()
        if isinstance(first, BaseException):
            await asyncio.gather(producer, return_exceptions=True)
            raise first
        record["streaming"] = True
        return _SseResponse(
            self._sse(first, events, done, producer, parsed, who, record, started),
            headers={"x-request-id": first.request_id},
        )

    async def _sse(
        self, first: ponder_pb2.AskStreamResponse, events: asyncio.Queue[Any], done: object, producer: asyncio.Task[Any],
        parsed: chat.Chat, who: Principal, record: dict[str, Any], started: float,
    ) -> AsyncIterator[str]:
        code, status = "CANCELLED", 499
        request_id, model = first.request_id, self.b.primary
        live = False  # whether sample 0's text is the answer, so it streams as it comes
        try:
            event: Any = first
            opened = False
            while event is not done:
                if isinstance(event, BaseException):
                    if not isinstance(event, PonderError):
                        log.error("unhandled error in a %s stream", METHOD, exc_info=event)
                        event = PonderError("internal error; the daemon's log has the details")
                    error = self._error(event, record)
                    code, status = self.b.status_of(event), error.status
                    yield _data(error.body)
                    return
                if not opened:
                    opened = True
                    yield _data(chat.chunk(request_id, model, {"role": "assistant", "content": ""}))
                kind = event.WhichOneof("event")
                if kind == "plan":
                    plan = event.plan.plan
                    model = plan.model or self.b.primary
                    live = plan.samples == 1 and not plan.refine
                elif kind == "delta":
                    d = event.delta
                    if live and d.sample == 0 and d.refine_round == 0 and d.text:
                        key = "content" if d.phase == ponder_pb2.TextDelta.PHASE_ANSWER else "reasoning_content"
                        yield _data(chat.chunk(request_id, model, {key: d.text}))
                elif kind == "result":
                    r = event.result
                    model = chat.model_of(r, self.b.primary)
                    if not live:  # a voted or refined answer is known only now
                        yield _data(chat.chunk(request_id, model, {"content": r.text}))
                    yield _data(chat.chunk(request_id, model, {}, chat.finish_reason(r), ponder=chat.ponder_object(r)))
                    if parsed.include_usage:
                        final = chat.chunk(request_id, model, {}, usage=chat.usage(r))
                        final["choices"] = []
                        yield _data(final)
                    code, status = "OK", 200
                event = await events.get()
            yield "data: [DONE]\n\n"
        finally:
            if not producer.done():
                producer.cancel()  # the client left: the request stops and is charged for what ran
            self._end(record, code, status, started, who)


class _SseResponse(StreamingResponse):
    """Server-sent events that end (and stop the request) as soon as the client disconnects, even between writes."""

    media_type = "text/event-stream"

    def __init__(self, content: AsyncIterator[str], headers: dict[str, str]) -> None:
        super().__init__(content, headers={"cache-control": "no-cache", "x-accel-buffering": "no", **headers})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async with anyio.create_task_group() as group:
            async def run_then_cancel(func: Callable[[], Any]) -> None:
                await func()
                group.cancel_scope.cancel()

            group.start_soon(run_then_cancel, partial(self.stream_response, send))
            await run_then_cancel(partial(self.listen_for_disconnect, receive))


async def _disconnected(request: Request) -> None:
    """Returns when the client has gone away (the body was read before)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def _read_json(request: Request) -> Any:
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/json":
        raise BadParameter(
            f"the body must be JSON with 'Content-Type: application/json', not {kind or 'no content type'!r}", None,
        )
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > MAX_BODY:
        raise BadParameter(f"the body is {int(length)} bytes; send at most {MAX_BODY} (8 MiB)", None)
    data = bytearray()
    try:
        async for part in request.stream():
            data += part
            if len(data) > MAX_BODY:
                raise BadParameter(f"the body is over {MAX_BODY} bytes (8 MiB): send less", None)
    except ClientDisconnect:
        raise Cancelled("the client went away before it had sent the whole body; nothing ran") from None
    if not data:
        raise BadParameter("the body is empty: send a JSON object with model and messages", None)
    try:
        return json.loads(bytes(data))
    except UnicodeDecodeError as exc:
        raise BadParameter(f"the body is not UTF-8 ({exc.reason} at byte {exc.start}): send UTF-8 JSON", None) from None
    except json.JSONDecodeError as exc:
        raise BadParameter(f"the body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}", None) from None
    except RecursionError:
        raise BadParameter("the body's JSON is nested too deeply", None) from None


def _timeout(request: Request) -> float | None:
    """The seconds the client waits (the openai SDKs send X-Stainless-Timeout); None: no deadline."""
    raw = request.headers.get("x-stainless-timeout")
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        raise InvalidRequest(f"X-Stainless-Timeout must be a number of seconds, not {raw!r}") from None
    return value if value > 0 and value < float("inf") else None


def _peer(request: Request) -> str:
    c = request.client
    return f"ipv4:{c.host}:{c.port}" if c else "-"


def _serving(ok: bool) -> str:
    return "SERVING" if ok else "NOT_SERVING"


def _data(obj: dict[str, Any]) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"


def _error_response(error: HttpError) -> Response:
    return JSONResponse(error.body, error.status, headers=error.headers)


__all__ = ["Backend", "create_app"]
