"""What a request carries and how it ends: its input, quote and outcome, its spend record, and the error a request that did not finish raises.

The pipeline (pipeline.py) runs the steps; this module is the data they pass
along and the pure functions that turn a finished or stopped request into its
record and its status, so both are table-testable without an engine.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from ponderd.checks import Check
from ponderd.engine import GenerationResult
from ponderd.errors import Cancelled, EngineFailure, PonderError, Unavailable
from ponderd.ledger.types import BalanceView, SpendRow, to_credits
from ponderd.planning.assessment import Assessment
from ponderd.planning.planner import Hints, Plan
from ponderd.planning.policy import Level, Policy
from ponderd.request import refine, stopping, voting
from ponderd.request.inflight import CANCELLED, DEADLINE, DRAINED


@dataclass(frozen=True)
class AskInput:
    prompt: str
    system: str = ""
    # Earlier turns of a conversation, (role, text), between the system prompt and `prompt` (the user's last turn).
    history: tuple[tuple[str, str], ...] = ()
    hints: Hints = field(default_factory=Hints)
    seed: int = 0
    # The caller's sampler settings (None: the model's); temperature 0 is greedy.
    temperature: float | None = None
    top_p: float | None = None
    # Stop strings: each sample's answer ends before the first of these it writes.
    stop: tuple[str, ...] = ()
    # Full answers wanted back (OpenAI's n): above 1, at least this many samples, each run to its end.
    choices: int = 1
    explain: bool = False
    # Seconds the caller allows (its gRPC deadline), to tell a deadline from a disconnect.
    timeout: float | None = None
    # The same as an instant (time.monotonic()), when the caller fixed it: wins over `timeout`.
    deadline: float | None = None
    # What a right answer looks like, when the caller knows (checks.Check): the
    # voted answer is verified and the outcome kept for accuracy learning.
    check: Check | None = None
    # The id to settle under, chosen by the caller (the RPC's id, or an idempotency key's claim); "": a fresh one.
    request_id: str = ""
    # Told (status, charged micros) once the request's ledger record is written (the access line's outcome and cost).
    recorded: Callable[[str, int], None] | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Quote:
    assessment: Assessment
    plan: Plan
    prompt_tokens: int
    balance: BalanceView
    policy: Policy


@dataclass
class Outcome:
    request_id: str
    quote: Quote
    result: GenerationResult
    text: str
    answer: str
    votes: list[tuple[str, int]]
    cost_micros: int
    balance: BalanceView
    latency_s: float
    # The summed confidence behind each answer, when the plan's vote is weighted.
    weights: dict[str, float] = field(default_factory=dict)
    # Whether the answer passed the request's check; None without one.
    verified: bool | None = None
    # Why sampling ended (stopping.stop_reason): "all", "decided", "beta", "agreed", "pruned".
    stop_reason: str = ""
    # Self-refinement: the voted text and answer, and the rounds (text/answer above are the final ones).
    voted_text: str = ""
    voted_answer: str = ""
    refined: refine.Refined | None = None


# Events for streaming callers: ("plan", (request_id, Quote)) once, then ("delta", (sample, phase, text, refine_round)).
EventSink = Callable[[str, Any], None]


def spend_row(
    request_id: str, tenant: str, quote: Quote, result: GenerationResult | None, cost: int,
    at: str, latency_s: float, status: str, error: str, answer: str = "",
) -> SpendRow:
    """The spend record of a request that ended with `status` (result None: nothing ran)."""
    a, p = quote.assessment, quote.plan
    mean, least = confidence(result)
    return SpendRow(
        request_id=request_id, tenant=tenant, at=at,
        severity=a.severity, needs_reasoning=a.needs_reasoning,
        model_severity=a.score.severity, model_needs_reasoning=a.score.needs_reasoning,
        risk_model=a.score.model_version, policy_version=p.policy_version, level=p.level, model=p.model,
        thinking_cap=p.thinking_tokens, answer_cap=p.answer_tokens, samples_planned=p.samples,
        prompt_tokens=result.prompt_tokens if result else quote.prompt_tokens,
        thinking_tokens=result.thinking_tokens if result else 0,
        answer_tokens=result.answer_tokens if result else 0,
        forced_tokens=result.forced_tokens if result else 0,
        samples_run=result.samples_run if result else 0,
        samples_stopped=result.samples_stopped if result else 0,
        cost_micros=cost, latency_ms=int(1000 * latency_s),
        status=status, error=error, answer=answer,
        confidence_mean=mean, confidence_min=least,
        samples_pruned=result.samples_pruned if result else 0,
        stop_reason=stop_reason(quote, result) if result else "",
    )




@dataclass(frozen=True)
class Vote:
    """The samples' vote: what _settle answers with and what refinement starts from."""

    text: str  # the winning sample's text ("" with no finished sample)
    answer: str
    counts: list[int]  # each answer's count of samples, most first (stopping.p_leader)
    votes: list[tuple[str, int]]  # each answer with its count; weighted: heaviest answer first
    weights: dict[str, float]  # each answer's summed confidence (weighted vote only)


def voted(quote: Quote, result: GenerationResult) -> Vote:
    """The plan's vote (plain or confidence-weighted) over the samples that finished."""
    done = [s for s in result.samples if s.finish_reason in ("stop", "length")]
    said = [s.answer for s in done]
    confidences = [s.confidence for s in done]
    weighted = quote.plan.vote == "weighted"
    answer, index = voting.weighted_winner(said, confidences) if weighted else voting.winner(said)
    tally = voting.tally(said)
    weights = dict(voting.weighted_tally(said, confidences)) if weighted else {}
    counts = dict(tally)
    votes = [(a, counts[a]) for a in weights] if weighted else list(tally)
    return Vote(done[index].text if done else "", answer, [n for _, n in tally], votes, weights)


def level_of(quote: Quote) -> Level:
    """The policy level the plan came from (its sampling settings are not in the plan)."""
    return quote.policy.level(quote.plan.level)


def stop_reason(quote: Quote, result: GenerationResult) -> str:
    if not result.samples:
        return ""
    return stopping.stop_reason(level_of(quote).stop, result.vote_stopped, result.agreed_early, result.samples_pruned)


def confidence(result: GenerationResult | None) -> tuple[float | None, float | None]:
    """Mean and lowest confidence over the samples that produced tokens; None without any."""
    ran = [s.confidence for s in result.samples if s.thinking_tokens or s.answer_tokens] if result else []
    if not ran:
        return None, None
    return sum(ran) / len(ran), min(ran)


def why(reason: str) -> str:
    return {
        CANCELLED: "the client cancelled the call",
        DEADLINE: "the call's deadline passed",
        DRAINED: "the daemon shut down before the request finished",
    }[reason]


def stopped(reason: str, charged: int) -> PonderError:
    return ended(reason, why(reason), charged)


def ended(status: str, error: str, charged: int, fatal: bool = False) -> PonderError:
    """The error a request that ended with `status` raises, after its record is written."""
    cost = f"{to_credits(charged):.6f} credits"
    if status == DRAINED or fatal:
        return Unavailable(f"{error}; it was charged {cost} for what ran; retry on another instance")
    if status in (CANCELLED, DEADLINE):
        return Cancelled(f"{error}; the request was stopped and charged {cost} for what ran")
    if status == "refused":
        return Unavailable(f"{error}; nothing was charged")
    return EngineFailure(f"the model failed while generating ({error}); it was charged {cost} for the tokens it used")


def reservation_context(a: Assessment) -> dict[str, Any]:
    return {
        "assessment": {
            "severity": a.severity,
            "needs_reasoning": a.needs_reasoning,
            "model_severity": a.score.severity,
            "model_needs_reasoning": a.score.needs_reasoning,
            "risk_model": a.score.model_version,
        }
    }
