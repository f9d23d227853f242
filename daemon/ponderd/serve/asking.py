"""Asking, whatever the transport: idempotency claim -> pipeline -> the reply, for gRPC and HTTP alike.

The gRPC PonderService (service.py) and the HTTP API (ponderd/http/) both call
`Asking`: a request arrives as an AskRequest/AskStreamRequest/QuoteRequest
message (HTTP builds one from its JSON body), and leaves as the AskResponse or
the AskStreamResponse events gRPC sends. So one request is one pipeline run,
one claim on its idempotency key and one spend record, on either transport;
and a key's stored reply replays on both.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from typing import Any, AsyncIterator, Awaitable, Callable

from ponder.v1 import ponder_pb2
from ponderd.engine import ANSWER
from ponderd.errors import DeadlineExceeded
from ponderd.ledger.idempotency import Attempt, Idempotency, fingerprint
from ponderd.ledger.keys import Principal
from ponderd.request import validate
from ponderd.request.inflight import DEADLINE_SLACK
from ponderd.request.pipeline import AskInput, Outcome, Pipeline, Quote
from ponderd.serve import convert
from ponderd.serve.boundary import request_id as call_request_id
from ponderd.serve.logs import hold, note

# Ask, AskStream and Quote each have their own request message (buf's rule), with the same fields.
AnyAskRequest = ponder_pb2.AskRequest | ponder_pb2.AskStreamRequest | ponder_pb2.QuoteRequest


class Asking:
    def __init__(self, pipeline: Pipeline, keys: Idempotency) -> None:
        self.pipeline = pipeline
        # Idempotency keys: a repeated Ask/AskStream gets its stored answer (idempotency.py).
        self.keys = keys

    async def ask(
        self, who: Principal, request: ponder_pb2.AskRequest | ponder_pb2.AskStreamRequest, timeout: float | None,
    ) -> ponder_pb2.AskResponse:
        """Answer one request (or replay its key's answer); `timeout`: the seconds the caller allows."""
        ask = to_input(request, timeout)
        attempt = await self._claim(who, request)
        if attempt is not None and attempt.reply is not None:
            reply = _replayed(attempt.reply)
            note(request_id=reply.request_id, cost=0.0)  # the answer again, nothing charged
            return reply
        claim = _Ended.of(self.keys, attempt)
        outcome = await _before_deadline(lambda deadline: self._ask(who, replace(ask, deadline=deadline), claim),
                                         timeout, claim)
        _note(outcome)
        return response(outcome)

    async def stream(
        self, who: Principal, request: ponder_pb2.AskRequest | ponder_pb2.AskStreamRequest, timeout: float | None,
    ) -> AsyncIterator[ponder_pb2.AskStreamResponse]:
        """The plan, the text deltas, then the result; a replay yields only the stored result.

        Closing the iterator early (the caller left) stops the request, which is charged for what ran.
        """
        ask = to_input(request, timeout)
        attempt = await self._claim(who, request)
        if attempt is not None and attempt.reply is not None:
            # A replay has no plan or text to stream: only the stored result.
            reply = _replayed(attempt.reply)
            note(request_id=reply.request_id, cost=0.0)
            yield ponder_pb2.AskStreamResponse(result=reply, request_id=reply.request_id)
            return
        events: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        ended = _Ended.of(self.keys, attempt)
        task = asyncio.ensure_future(self._ask(who, ask, ended, lambda kind, data: events.put_nowait((kind, data))))
        task.add_done_callback(lambda _: events.put_nowait(("done", None)))
        request_id = ""
        try:
            while True:
                kind, data = await events.get()
                if kind == "plan":
                    request_id, q = data
                    note(request_id=request_id, level=q.plan.level)
                    yield ponder_pb2.AskStreamResponse(plan=quote(q), request_id=request_id)
                elif kind == "delta":
                    sample, phase, text, refine_round = data
                    pb_phase = ponder_pb2.TextDelta.PHASE_ANSWER if phase == ANSWER else ponder_pb2.TextDelta.PHASE_THINKING
                    delta = ponder_pb2.TextDelta(sample=sample, phase=pb_phase, text=text, refine_round=refine_round)
                    yield ponder_pb2.AskStreamResponse(delta=delta, request_id=request_id)
                else:
                    break
            outcome = await task
            _note(outcome)
            yield ponder_pb2.AskStreamResponse(result=response(outcome), request_id=outcome.request_id)
        finally:
            if not task.done():
                # The client went away mid-stream: cancelling the pipeline settles what was used.
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
            if ended is not None and not ended.started:
                await ended(None)  # cancelled before the request began: nothing will end the claim but this

    async def quote(self, who: Principal, request: AnyAskRequest) -> ponder_pb2.QuoteResponse:
        return quote(await self.pipeline.quote(who, to_input(request, None)))

    async def _claim(self, who: Principal, request: ponder_pb2.AskRequest | ponder_pb2.AskStreamRequest) -> Attempt | None:
        """The request's claim on its idempotency key; None without a key (or with keys off, or an admin key)."""
        if not request.idempotency_key or who.tenant is None or not self.keys.enabled:
            return None
        # A new attempt runs under the call's request id, the one the client already has.
        return await self.keys.claim(who.tenant, request.idempotency_key, fingerprint(request), call_request_id())

    async def _ask(self, who: Principal, ask: AskInput, claim: _Ended | None, events: Any = None) -> Outcome:
        """Run the pipeline; the request itself, when it ends, keeps its answer or frees the key (under a claim)
        and lets the access line be written (with its record's outcome and charge, even after its caller left)."""
        release = hold()

        async def ended(outcome: Outcome | None) -> None:
            try:
                if claim is not None:
                    await claim(outcome)
            finally:
                release()

        if claim is not None:
            # The claim's request id is the request's (a retry gets the first attempt's); the client hears it.
            note(request_id=claim.attempt.request_id)
            ask = replace(ask, request_id=claim.attempt.request_id)
            # From here the request exists before anything can cancel this coroutine, and it ends the claim.
            claim.started = True
        ask = replace(ask, recorded=lambda status, micros: note(outcome=status, cost=micros / 1e6))
        try:
            return await self.pipeline.ask(who, ask, events, ended)
        except asyncio.CancelledError:
            raise  # the caller left; the request runs on, ends the claim and releases the line itself
        except BaseException:
            try:
                if claim is not None:
                    await claim(None)  # a no-op if the request ended it; frees the key if the request never started
            finally:
                release()
            raise


async def _before_deadline(
    ask: Callable[[float | None], Awaitable[Outcome]], remaining: float | None, claim: _Ended | None,
) -> Outcome:
    """The ask, ended by the daemon a moment before the call's deadline: the client hears DEADLINE_EXCEEDED
    from the daemon, with the request id, not from its own timer. The request is given the same deadline
    (time.monotonic()), so it stops and settles as `deadline`."""
    if remaining is None:
        return await ask(None)
    try:
        return await asyncio.wait_for(ask(time.monotonic() + remaining), max(remaining - DEADLINE_SLACK, 0.001))
    except asyncio.TimeoutError:
        if claim is not None and not claim.started:
            await claim(None)  # stopped before the request began: nothing else frees the key
        raise DeadlineExceeded(
            f"the call's deadline ({remaining:.1f}s) passed before the answer; the request was stopped and "
            "charged for what ran; give the call a longer timeout, or ask for less (a lower level, fewer samples)"
        ) from None


class _Ended:
    """Told once, inside the request, how it ended: keeps the answer for the key, or frees the key."""

    def __init__(self, keys: Idempotency, attempt: Attempt) -> None:
        self.keys, self.attempt, self.done = keys, attempt, False
        # Set once the pipeline was called: the request then ends the claim itself.
        self.started = False

    @classmethod
    def of(cls, keys: Idempotency, attempt: Attempt | None) -> _Ended | None:
        return None if attempt is None else cls(keys, attempt)

    async def __call__(self, outcome: Outcome | None) -> None:
        if self.done:
            return
        self.done = True
        if outcome is None:
            await self.keys.release(self.attempt)
        else:
            await self.keys.finish(self.attempt, response(outcome).SerializeToString())


def _replayed(reply: bytes) -> ponder_pb2.AskResponse:
    r = ponder_pb2.AskResponse.FromString(reply)
    r.replayed = True
    return r


def _note(o: Outcome) -> None:
    """The access line's request id, level and cost (never the prompt or the answer)."""
    note(request_id=o.request_id, level=o.quote.plan.level, cost=o.cost_micros / 1e6)


def to_input(request: AnyAskRequest, timeout: float | None) -> AskInput:
    """The pipeline's input from a request message, refused (InvalidRequest) if the pipeline must not see it."""
    validate.ask_request(request)
    system, history, prompt = validate.conversation(request)
    return AskInput(
        prompt=prompt,
        system=system,
        history=history,
        hints=convert.hints(request.hints),
        seed=request.seed,
        explain=request.explain,
        timeout=timeout,
        check=convert.check(request),
        temperature=_optional(request, "temperature"),
        top_p=_optional(request, "top_p"),
        stop=() if isinstance(request, ponder_pb2.QuoteRequest) else tuple(request.stop),
        choices=1 if isinstance(request, ponder_pb2.QuoteRequest) else max(request.choices, 1),
        # The call's id (sent to the client as it started) is the ledger record's.
        request_id=call_request_id(),
    )


def _optional(request: AnyAskRequest, name: str) -> float | None:
    """An optional sampling field's value; None when absent (Quote samples nothing and has none)."""
    if isinstance(request, ponder_pb2.QuoteRequest) or not request.HasField(name):
        return None
    return float(getattr(request, name))


def quote(q: Quote) -> ponder_pb2.QuoteResponse:
    return ponder_pb2.QuoteResponse(
        assessment=convert.assessment(q.assessment),
        plan=convert.plan(q.plan),
        prompt_tokens=q.prompt_tokens,
        balance=convert.balance(q.balance, q.policy.currency),
    )


def response(o: Outcome) -> ponder_pb2.AskResponse:
    r = o.result
    f = o.refined
    return ponder_pb2.AskResponse(
        request_id=o.request_id,
        text=o.text,
        answer=o.answer,
        votes=[ponder_pb2.Vote(answer=a, count=n, weight=o.weights.get(a, 0.0)) for a, n in o.votes],
        assessment=convert.assessment(o.quote.assessment),
        plan=convert.plan(o.quote.plan),
        usage=ponder_pb2.Usage(
            prompt_tokens=r.prompt_tokens + (f.prompt_tokens if f else 0),
            thinking_tokens=r.thinking_tokens,
            answer_tokens=r.answer_tokens + (f.answer_tokens if f else 0),
            forced_tokens=r.forced_tokens + (f.forced_tokens if f else 0),
            samples_run=r.samples_run,
            samples_stopped=r.samples_stopped,
            samples_pruned=r.samples_pruned,
            stop_reason=o.stop_reason,
        ),
        cost=o.cost_micros / 1e6,
        balance=convert.balance(o.balance, o.quote.policy.currency),
        samples=[convert.sample(s) for s in r.samples],
        latency_seconds=o.latency_s,
        verified=o.verified,
        voted_text=o.voted_text,
        voted_answer=o.voted_answer,
        refinements=[
            ponder_pb2.Refinement(
                round=x.number, text=x.text, answer=x.answer, kept=x.kept, prompt_tokens=x.prompt_tokens,
                answer_tokens=x.answer_tokens, finish_reason=x.finish_reason,
            )
            for x in (f.rounds if f else [])
        ],
    )
