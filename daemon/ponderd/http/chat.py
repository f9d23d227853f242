"""POST /v1/chat/completions: an OpenAI chat-completions body -> an AskRequest, and an AskResponse -> OpenAI's shapes.

Only translation and checks live here: what the request may ask is the same
AskRequest gRPC takes, so the same validation, plan and charge follow
(serve/asking.py). Every field is either honoured, refused with a 400 that
names it, or one of the documented no-ops in `NO_OPS`; docs/http.md has the table.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Callable

from google.protobuf import json_format

from ponder import cli_json
from ponder.v1 import ponder_pb2
from ponderd.errors import InvalidRequest
from ponderd.http.errors import BadParameter, UnknownModel
from ponderd.request import validate

ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
SEVERITIES = {"low": ponder_pb2.SEVERITY_LOW, "medium": ponder_pb2.SEVERITY_MEDIUM, "high": ponder_pb2.SEVERITY_HIGH}
EFFORTS = ("low", "medium", "high")
MAX_SEED = 2**64 - 1
# Fields OpenAI defines that change nothing here when sent with these values (None: any value).
NO_OPS: dict[str, tuple[Any, ...] | None] = {
    "user": None,  # an end-user id for OpenAI's abuse monitoring; Ponder has tenants
    "metadata": None,  # stored-completion tags; Ponder stores no completions
    "store": (False,),
    "logprobs": (False,),
    "frequency_penalty": (0, 0.0),
    "presence_penalty": (0, 0.0),
    "parallel_tool_calls": None,  # only with tools, which must be empty
    "tools": ([],),
    "tool_choice": ("none", "auto"),
    "response_format": ({"type": "text"},),
    "service_tier": ("auto", "default"),
}
HONOURED = {
    "model", "messages", "max_tokens", "max_completion_tokens", "reasoning_effort", "seed", "stream",
    "stream_options", "temperature", "top_p", "stop", "n", "ponder",
}
PONDER_FIELDS = {
    "severity", "level", "max_cost", "check", "explain", "samples", "thinking_tokens", "answer_format",
}
# AskRequest fields (an InvalidRequest's `field`) -> the parameter of the body that sets them.
PARAMS = {"temperature": "temperature", "top_p": "top_p", "stop": "stop", "choices": "n"}
CHECK_FIELDS = {"number", "regex", "choice", "any_of"}
MESSAGE_FIELDS = {"role", "content", "name"}


@dataclass(frozen=True)
class Chat:
    """A parsed request: the AskRequest for the pipeline and what shapes the reply."""

    request: ponder_pb2.AskRequest
    model: str
    stream: bool = False
    include_usage: bool = False
    # Choices wanted (n): the voted answer first, then the other samples' answers.
    n: int = 1


def parse(
    body: Any, models: list[str], effort: Callable[[str], str], idempotency_key: str = "",
) -> Chat:
    """The request in `body` (decoded JSON), or BadParameter naming the field to fix.

    `models`: the names `model` may take; `effort(value)`: the level a
    reasoning_effort value means for the caller's tenant.
    """
    if not isinstance(body, dict):
        raise BadParameter(f"the body must be a JSON object, not {_kind(body)}", None)
    unknown = sorted(set(body) - HONOURED - set(NO_OPS))
    if unknown:
        raise BadParameter(
            f"unknown or unsupported parameter(s): {', '.join(unknown)}; Ponder's own options go in the 'ponder' object "
            "(docs/http.md lists every parameter)", unknown[0],
        )
    for name, allowed in NO_OPS.items():
        if name in body and body[name] is not None and allowed is not None and body[name] not in allowed:
            raise BadParameter(f"{name} must be {' or '.join(_json(a) for a in allowed)} here, not {_json(body[name])}", name)
    if "user" in body and body["user"] is not None and not isinstance(body["user"], str):
        raise BadParameter(f"user must be a string, not {_kind(body['user'])}", "user")
    model = body.get("model")
    if model is None:
        model = "default"
    if not isinstance(model, str):
        raise BadParameter(f"model must be a string, not {_kind(model)}", "model")
    if model not in models:
        raise UnknownModel(f"no model {model!r} here; GET /v1/models lists them ({', '.join(models)})")
    req = ponder_pb2.AskRequest(idempotency_key=idempotency_key)
    _messages(body.get("messages"), req)
    answer = _tokens(body, "max_completion_tokens")
    legacy = _tokens(body, "max_tokens")
    if answer and legacy and answer != legacy:
        raise BadParameter("max_tokens and max_completion_tokens differ: send one of them", "max_tokens")
    if answer or legacy:
        req.hints.answer_tokens = answer or legacy
    effort_value = body.get("reasoning_effort")
    if effort_value is not None:
        if effort_value not in EFFORTS:
            raise BadParameter(f"reasoning_effort must be one of {', '.join(EFFORTS)}, not {_json(effort_value)}", "reasoning_effort")
        req.hints.level = effort(effort_value)
    seed = body.get("seed")
    if seed is not None:
        if not _integer(seed) or not 0 <= seed <= MAX_SEED:
            raise BadParameter(f"seed must be an integer from 0 to {MAX_SEED}, not {_json(seed)}", "seed")
        req.seed = seed
    _sampling(body, req)
    stream = body.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise BadParameter(f"stream must be true or false, not {_json(stream)}", "stream")
    include_usage = _stream_options(body.get("stream_options"), stream)
    n = body.get("n")
    if n is None:
        n = 1
    if not _integer(n) or not 1 <= n < 2**32:
        raise BadParameter(f"n must be a positive integer (the number of choices), not {_json(n)}", "n")
    if n > 1 and stream:
        raise BadParameter(
            f"n {n} is served without stream: true (a voted answer is known only at the end): send n: 1 to stream, "
            "or drop stream for several choices", "n",
        )
    if n > 1:  # 1 is AskRequest's default (0): the same request, and idempotency key, as gRPC's without choices
        req.choices = n
    _ponder(body.get("ponder"), req)
    if "level" in (body.get("ponder") or {}) and effort_value is not None:
        raise BadParameter("send ponder.level or reasoning_effort, not both", "reasoning_effort")
    return Chat(req, model, stream, include_usage, n)


def _sampling(body: dict[str, Any], req: ponder_pb2.AskRequest) -> None:
    """temperature, top_p and stop: their JSON types here; their ranges are the one rule gRPC has too
    (validate.sampling), its error naming the parameter."""
    for name in ("temperature", "top_p"):
        value = body.get(name)
        if value is not None:
            if not isinstance(value, (int, float)) or isinstance(value, bool):  # NaN and infinities: the range rule
                raise BadParameter(f"{name} must be a number, not {_json(value)}", name)
            try:
                setattr(req, name, float(value))
            except OverflowError:  # an integer too large for a double: out of range all the same
                setattr(req, name, math.inf)
    stop = body.get("stop")
    if isinstance(stop, str):
        req.stop.append(stop)
    elif isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        req.stop.extend(stop)
    elif stop is not None:
        raise BadParameter(f"stop must be a string or a list of up to {validate.MAX_STOP} strings, not {_json(stop)}", "stop")
    try:
        validate.sampling(req)
    except InvalidRequest as exc:
        raise BadParameter(exc.message, PARAMS.get(exc.field or "", exc.field)) from None


def _messages(value: Any, req: ponder_pb2.AskRequest) -> None:
    if not isinstance(value, list):
        raise BadParameter(f"messages must be a list of {{role, content}} objects, not {_kind(value)}", "messages")
    if not value:
        raise BadParameter("messages is empty: send at least one user message", "messages")
    for i, m in enumerate(value):
        where = f"messages[{i}]"
        if not isinstance(m, dict):
            raise BadParameter(f"{where} must be an object with role and content, not {_kind(m)}", where)
        extra = sorted(set(m) - MESSAGE_FIELDS)
        if extra:
            raise BadParameter(f"{where}.{extra[0]} is not supported (only role, content and name are)", f"{where}.{extra[0]}")
        role = m.get("role")
        if role not in ROLES:
            raise BadParameter(
                f"{where}.role must be one of {', '.join(ROLES)}, not {_json(role)} (tools are not supported)", f"{where}.role",
            )
        req.messages.add(role=ROLES[role], content=_content(m.get("content"), f"{where}.content"))


def _content(value: Any, where: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        parts = []
        for j, part in enumerate(value):
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise BadParameter(f"{where}[{j}] must be a text part {{\"type\": \"text\", \"text\": ...}}; only text is supported", where)
            parts.append(part["text"])
        return "".join(parts)
    raise BadParameter(f"{where} must be a string or a list of text parts, not {_kind(value)}", where)


def _tokens(body: dict[str, Any], name: str) -> int:
    value = body.get(name)
    if value is None:
        return 0
    if not _integer(value) or not 1 <= value <= 2**31:
        raise BadParameter(f"{name} must be a positive integer, not {_json(value)}", name)
    return int(value)


def _stream_options(value: Any, stream: bool) -> bool:
    if value is None:
        return False
    if not stream:
        raise BadParameter("stream_options is only allowed with stream: true", "stream_options")
    if not isinstance(value, dict) or set(value) - {"include_usage"}:
        raise BadParameter("stream_options must be {\"include_usage\": true|false}", "stream_options")
    include = value.get("include_usage", False)
    if not isinstance(include, bool):
        raise BadParameter("stream_options.include_usage must be true or false", "stream_options.include_usage")
    return include


def _ponder(value: Any, req: ponder_pb2.AskRequest) -> None:
    """Ponder's own options: the hints and fields of AskRequest gRPC has."""
    if value is None:
        return
    if not isinstance(value, dict):
        raise BadParameter(f"ponder must be an object, not {_kind(value)}", "ponder")
    unknown = sorted(set(value) - PONDER_FIELDS)
    if unknown:
        raise BadParameter(f"ponder.{unknown[0]} is not an option; the options are {', '.join(sorted(PONDER_FIELDS))}", f"ponder.{unknown[0]}")
    h = req.hints
    if value.get("severity") is not None:
        if value["severity"] not in SEVERITIES:
            raise BadParameter(f"ponder.severity must be low, medium or high, not {_json(value['severity'])}", "ponder.severity")
        h.severity_floor = SEVERITIES[value["severity"]]
    for name in ("level", "answer_format"):
        if value.get(name) is not None:
            if not isinstance(value[name], str):
                raise BadParameter(f"ponder.{name} must be a string, not {_kind(value[name])}", f"ponder.{name}")
            setattr(h, name, value[name])
    if value.get("max_cost") is not None:
        if not _number(value["max_cost"]):
            raise BadParameter(f"ponder.max_cost must be a number of credits, not {_json(value['max_cost'])}", "ponder.max_cost")
        h.max_cost = float(value["max_cost"])
    for name in ("samples", "thinking_tokens"):
        if value.get(name) is not None:
            if not _integer(value[name]) or not 0 <= value[name] < 2**32:
                raise BadParameter(f"ponder.{name} must be a non-negative integer, not {_json(value[name])}", f"ponder.{name}")
            setattr(h, name, value[name])
    if value.get("explain") is not None:
        if not isinstance(value["explain"], bool):
            raise BadParameter("ponder.explain must be true or false", "ponder.explain")
        req.explain = value["explain"]
    check = value.get("check")
    if check is not None:
        if not isinstance(check, dict) or set(check) - CHECK_FIELDS:
            raise BadParameter(f"ponder.check must be an object with one of {', '.join(sorted(CHECK_FIELDS))}", "ponder.check")
        try:
            json_format.ParseDict(check, req.check)
        except json_format.ParseError as exc:
            raise BadParameter(f"ponder.check: {exc}", "ponder.check") from None
        req.check.SetInParent()


# -- replies -------------------------------------------------------------------


def completion_id(request_id: str) -> str:
    return f"chatcmpl-{request_id}"


def usage(r: ponder_pb2.AskResponse) -> dict[str, Any]:
    """OpenAI's usage: prompt tokens (with the template's forced ones), completion tokens (thinking and answer)."""
    u = r.usage
    prompt = u.prompt_tokens + u.forced_tokens
    completion = u.thinking_tokens + u.answer_tokens
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "completion_tokens_details": {"reasoning_tokens": u.thinking_tokens},
    }


def finish_reason(r: ponder_pb2.AskResponse) -> str:
    """"length" when the answer given was cut by its cap, else "stop"."""
    cut = any(s.finish_reason == "length" and s.text == r.text for s in r.samples)
    return "length" if cut and not r.refinements else "stop"


def ponder_object(r: ponder_pb2.AskResponse) -> dict[str, Any]:
    """What Ponder adds beside OpenAI's fields: assessment, plan, votes, cost, balance, request id."""
    # The CLI's --json rules (docs/json.md): enums as short lowercase names ("high", as the request
    # takes them), every key present, 64-bit integers as numbers.
    d = cli_json.message

    out = {
        "request_id": r.request_id,
        "assessment": d(r.assessment),
        "plan": d(r.plan),
        "votes": [d(v) for v in r.votes],
        "answer": r.answer,
        "cost": r.cost,
        "balance": d(r.balance),
        "usage": d(r.usage),
        "latency_seconds": r.latency_seconds,
        "replayed": r.replayed,
    }
    if r.HasField("verified"):
        out["verified"] = r.verified
    return out


def model_of(r: ponder_pb2.AskResponse, primary: str) -> str:
    return r.plan.model or primary


def choices(r: ponder_pb2.AskResponse, n: int = 1) -> list[tuple[str, str]]:
    """(content, finish_reason) of each choice: the answer (voted, refined) first; with n > 1, then the other
    samples' answers in sample order, each a distinct sample (the one the vote chose is choice 0's)."""
    out = [(r.text, finish_reason(r))]
    if n > 1:
        chosen = next((s.index for s in r.samples if s.text == r.voted_text and s.finish_reason in ("stop", "length")), None)
        others = [s for s in r.samples if s.index != chosen]
        out += [(s.text, "length" if s.finish_reason == "length" else "stop") for s in others[: n - 1]]
    return out


def completion(r: ponder_pb2.AskResponse, primary: str, n: int = 1) -> dict[str, Any]:
    """The chat.completion object of an answer; n > 1: n choices (see `choices`)."""
    return {
        "id": completion_id(r.request_id),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model_of(r, primary),
        "choices": [
            {
                "index": i,
                "message": {"role": "assistant", "content": content, "refusal": None},
                "logprobs": None,
                "finish_reason": finish,
            }
            for i, (content, finish) in enumerate(choices(r, n))
        ],
        "usage": usage(r),
        "ponder": ponder_object(r),
    }


def chunk(request_id: str, model: str, delta: dict[str, Any], finish: str | None = None, **more: Any) -> dict[str, Any]:
    """One chat.completion.chunk of a stream."""
    return {
        "id": completion_id(request_id),
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        **more,
    }


def _integer(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _kind(v: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(v), "a number" if isinstance(v, (int, float)) else type(v).__name__
    )


def _json(v: Any) -> str:
    import json

    try:
        return json.dumps(v)
    except (TypeError, ValueError):
        return repr(v)
