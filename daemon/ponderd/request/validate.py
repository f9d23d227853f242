"""Request fields checked at the boundary, before anything acts on them.

What a message's type cannot say (a finite max_cost, no NUL in text the model
reads, a time a datetime can hold) is checked here, in one place, so every
handler refuses the same input the same way: InvalidRequest, saying what to
change. Checks that depend on the tenant's policy (which hints, how many
samples) stay with the planner (`planner.check_hints`).
"""

from __future__ import annotations

import math
from datetime import datetime, timezone

from google.protobuf.timestamp_pb2 import Timestamp

from ponder.v1 import ponder_pb2
from ponderd.errors import InvalidRequest
from ponderd.ledger.idempotency import check_key

# The range google.protobuf.Timestamp defines (0001-01-01 to 9999-12-31 UTC),
# which is also what a Python datetime can hold.
MIN_SECONDS = -62_135_596_800
MAX_SECONDS = 253_402_300_799


def ask_request(request: ponder_pb2.AskRequest | ponder_pb2.AskStreamRequest | ponder_pb2.QuoteRequest) -> None:
    """Refuse an Ask/AskStream/Quote request the pipeline must not see."""
    # The tokenizer and llama.cpp take C strings: a NUL would cut the text short
    # (and a prompt of NULs only would pass as non-empty).
    _no_nul(request.prompt, "prompt")
    _no_nul(request.system, "system")
    if request.messages:
        conversation(request)
    elif not request.prompt.strip():
        raise InvalidRequest("the prompt is empty: put the question in 'prompt'")
    max_cost = request.hints.max_cost
    if not math.isfinite(max_cost):
        raise InvalidRequest(
            f"hints.max_cost must be a finite number of credits (0 means no limit), not {max_cost}"
        )
    if max_cost < 0:
        raise InvalidRequest(f"hints.max_cost must be >= 0 (0 means no limit), not {max_cost}")
    if not isinstance(request, ponder_pb2.QuoteRequest):
        check_key(request.idempotency_key)
        sampling(request)


# OpenAI's limit on stop strings per request.
MAX_STOP = 4


def sampling(request: ponder_pb2.AskRequest | ponder_pb2.AskStreamRequest) -> None:
    """How the samples are drawn and cut, in OpenAI's ranges (the one rule; the HTTP API applies it too):
    temperature 0-2 (0: greedy) and top_p in (0, 1], absent: the model's settings; at most
    MAX_STOP stop strings, none empty. The error's `field` names the field at fault."""
    if request.HasField("temperature"):
        t = request.temperature
        if not math.isfinite(t) or not 0 <= t <= 2:
            raise InvalidRequest(
                f"temperature must be a number from 0 to 2 (0 is greedy), not {t:g}; leave it out for the model's setting",
                "temperature",
            )
    if request.HasField("top_p"):
        p = request.top_p
        if not math.isfinite(p) or not 0 < p <= 1:
            raise InvalidRequest(
                f"top_p must be a number above 0 and at most 1, not {p:g}; leave it out for the model's setting", "top_p",
            )
    if len(request.stop) > MAX_STOP:
        raise InvalidRequest(f"stop has {len(request.stop)} strings; send at most {MAX_STOP}", "stop")
    for i, s in enumerate(request.stop):
        if not s:
            raise InvalidRequest(
                f"stop[{i}] is empty: a stop string needs at least one character (send no stop strings for none)", "stop",
            )


ROLES = ("system", "user", "assistant")
# A conversation longer than this is refused before it is rendered (the context holds far fewer turns).
MAX_MESSAGES = 256


def conversation(
    request: ponder_pb2.AskRequest | ponder_pb2.AskStreamRequest | ponder_pb2.QuoteRequest,
) -> tuple[str, tuple[tuple[str, str], ...], str]:
    """(system, earlier turns, the user's last turn) of a request; without `messages`, (system, (), prompt).

    System turns come first (several are joined); the last turn is the user's.
    """
    if not request.messages:
        return request.system, (), request.prompt
    if request.prompt or request.system:
        raise InvalidRequest("set either prompt (and system) or messages, not both: put the system prompt and the question in messages")
    if len(request.messages) > MAX_MESSAGES:
        raise InvalidRequest(f"messages has {len(request.messages)} turns; send at most {MAX_MESSAGES}")
    system: list[str] = []
    turns: list[tuple[str, str]] = []
    for i, m in enumerate(request.messages):
        where = f"messages[{i}]"
        if m.role not in ROLES:
            raise InvalidRequest(f"{where}.role must be one of {', '.join(ROLES)}, not {m.role!r}")
        _no_nul(m.content, f"{where}.content")
        if m.role == "system":
            if turns:
                raise InvalidRequest(f"{where} is a system turn after the conversation began: put system turns first")
            system.append(m.content)
        else:
            turns.append((m.role, m.content))
    if not turns or turns[-1][0] != "user":
        raise InvalidRequest("the last of messages must be the user's turn (role 'user'): it is the question answered")
    if not turns[-1][1].strip():
        raise InvalidRequest(f"messages[{len(request.messages) - 1}].content is empty: put the question there")
    return "\n\n".join(system), tuple(turns[:-1]), turns[-1][1]


def instant(ts: Timestamp, name: str) -> datetime:
    """A request's Timestamp as an aware UTC datetime, refusing one outside Timestamp's range."""
    if not MIN_SECONDS <= ts.seconds <= MAX_SECONDS:
        raise InvalidRequest(
            f"{name} must be between 0001-01-01 and 9999-12-31 UTC (seconds from "
            f"{MIN_SECONDS} to {MAX_SECONDS}), not seconds={ts.seconds}"
        )
    if not 0 <= ts.nanos < 1_000_000_000:
        raise InvalidRequest(f"{name}.nanos must be from 0 to 999999999, not {ts.nanos}")
    return ts.ToDatetime(tzinfo=timezone.utc)


def _no_nul(text: str, name: str) -> None:
    at = text.find("\0")
    if at >= 0:
        raise InvalidRequest(f"{name} contains a NUL byte (\\x00) at character {at}: remove it")
