"""The access log, the audit log and the JSON log format.

`ponder.access`: one line per RPC (health checks and reflection aside) with its
request id, tenant, acting key, method, effort level, status, outcome, cost and
latency. Every RPC gets a request id as it starts (boundary.begin_call), sent
to the client with any error (and a stream's replies); an Ask's ledger
record has the same id, and its line has the record's outcome (`ok`,
`refused`, `deadline`, ...) and cost. A request that runs on after its caller
left (a deadline, a disconnect) writes its line when it ends, with what it was
charged.
`ponder.audit`: one line per admin action with the acting key id. Neither ever
holds a prompt, an answer or a token: the fields are set by name (`note`), and
no request or response is formatted into them.

With `log_format = "json"` each line is one JSON object; the access and audit
fields are keys of their own, so a log pipeline needs no parsing of messages.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from datetime import datetime, timezone
from typing import Any, Callable

import grpc

from ponderd.serve import boundary
from ponderd.serve.auth import OPEN_SERVICES, current_principal
from ponderd.serve.telemetry import Telemetry

access_log = logging.getLogger("ponder.access")
audit_log = logging.getLogger("ponder.audit")



def note(**fields: Any) -> None:
    """Add fields (request_id, level, outcome, cost) to the access line of the RPC being handled.

    Also from the request's own task (it runs in a copy of the RPC's context), after its caller left.
    """
    record = boundary.CALL.get(None)
    if record is not None:
        record.update(fields)


def hold() -> Callable[[], None]:
    """Keep the RPC's access line until the returned `release` is called (when its request ends).

    A handler that runs a request which may outlive it (inflight.py) holds the
    line, so a cancelled call's line still tells what its request was charged.
    """
    record = boundary.CALL.get(None)
    if record is None:
        return lambda: None
    record["held"] = True

    def release() -> None:
        record["held"] = False
        write = record.pop("deferred", None)
        if write is not None:
            write()

    return release


def audit(action: str, outcome: str, **fields: Any) -> None:
    """Log one admin action by the caller of the RPC being handled."""
    who = current_principal()
    entry = {"action": action, "key_id": who.key_id if who else "-", "outcome": outcome, **fields}
    audit_log.info("%s", _pairs(entry), extra={"fields": {"audit": entry}})


def _pairs(fields: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in fields.items())


def _code(context: grpc.aio.ServicerContext, default: str) -> str:
    code = context.code()
    if code is None:
        return default
    return getattr(code, "name", str(code))


class AccessInterceptor(grpc.aio.ServerInterceptor):
    """Times every RPC, counts it in the metrics and writes its access line; outermost, so refusals count."""

    def __init__(self, telemetry: Telemetry) -> None:
        self.telemetry = telemetry

    async def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails], Any], details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None or details.method.startswith(OPEN_SERVICES):
            return handler
        method = details.method.rsplit("/", 1)[-1]

        if handler.unary_unary:
            inner = handler.unary_unary

            async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
                record, started, code = self._begin(context), time.perf_counter(), "OK"
                try:
                    return await inner(request, context)
                except asyncio.CancelledError:
                    code = "CANCELLED"
                    raise
                except BaseException:
                    code = _code(context, "UNKNOWN")
                    raise
                finally:
                    self._end(method, record, code, started)

            return grpc.unary_unary_rpc_method_handler(unary, handler.request_deserializer, handler.response_serializer)
        if handler.unary_stream:
            inner_stream = handler.unary_stream

            async def stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
                record, started, code = self._begin(context), time.perf_counter(), "OK"
                try:
                    async for item in inner_stream(request, context):
                        yield item
                except (asyncio.CancelledError, GeneratorExit):
                    code = "CANCELLED"
                    raise
                except BaseException:
                    code = _code(context, "UNKNOWN")
                    raise
                finally:
                    self._end(method, record, code, started)

            return grpc.unary_stream_rpc_method_handler(stream, handler.request_deserializer, handler.response_serializer)
        return handler

    @staticmethod
    def _begin(context: grpc.aio.ServicerContext) -> dict[str, Any]:
        # The peer is read now, while the call is alive: grpc's aio context can crash
        # the process when asked after a streaming call was cancelled.
        return begin(context.peer() or "-")

    def _end(self, method: str, record: dict[str, Any], code: str, started: float) -> None:
        seconds = time.perf_counter() - started
        self.telemetry.rpc(method, code, seconds)
        access(method, record, code, seconds, current_principal(), transport="grpc")


def begin(peer: str) -> dict[str, Any]:
    """Start the access record of the call this task handles, with its request id (`note` adds to it)."""
    record: dict[str, Any] = {"peer": peer}
    boundary.begin_call(record)
    return record


def access(method: str, record: dict[str, Any], code: str, seconds: float, who: Any, **more: Any) -> None:
    """Write one call's access line, now or, for a request that runs on (`hold`), when it ends.

    `more`: fields a transport adds (the HTTP API's transport and status).
    """

    def write() -> None:
        # A call that gRPC cut off at its deadline: what the client saw, as the record says.
        status = "DEADLINE_EXCEEDED" if code == "CANCELLED" and record.get("outcome") == "deadline" else code
        entry = {
            "request_id": record.get("request_id", "-"),
            "tenant": (who.tenant if who else None) or "-",
            "key_id": who.key_id if who else "-",
            "method": method,
            "level": record.get("level", "-"),
            "status": status,
            # The ledger record's status and charge, when the call wrote one.
            "outcome": record.get("outcome", "-"),
            "cost": f"{record['cost']:.6f}" if "cost" in record else "-",
            "latency_ms": int(seconds * 1000),
            "peer": record["peer"],
            **more,
        }
        access_log.info("%s", _pairs(entry), extra={"fields": {"access": entry}})

    if record.get("held"):
        record["deferred"] = write  # the request runs on: release() writes it
    else:
        write()


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and the access or audit fields."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        out.update(getattr(record, "fields", None) or {})
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False, default=str)
