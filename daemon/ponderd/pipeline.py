"""The request path: assess -> plan -> reserve -> generate -> vote -> settle.

One call per collaborator, each behind its seam. Every request works on one
policy snapshot and one classifier from start to end, and a request that got a
reservation always settles it, whether it succeeds, fails or is cancelled.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from dataclasses import dataclass, field
from typing import Any, Callable

from . import answers, voting
from .assessment import Assessment, adjust
from .clock import Clock
from .engine import Engine, GenerationJob, GenerationResult, PreparedPrompt
from .errors import BudgetExhausted, EngineFailure, InvalidRequest, PermissionDenied
from .keys import Principal
from .ledger import BalanceView, Budgets, SpendRow, iso
from .planner import Hints, Plan, check_hints, plan_candidates
from .policy import Policy, PolicyHolder
from .risk import ClassifierHolder

log = logging.getLogger("ponder.pipeline")


@dataclass(frozen=True)
class AskInput:
    prompt: str
    system: str = ""
    hints: Hints = field(default_factory=Hints)
    seed: int = 0
    explain: bool = False


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


# Events for streaming callers: ("plan", Quote) once, then ("delta", (sample, phase, text)).
EventSink = Callable[[str, Any], None]


class Pipeline:
    def __init__(
        self,
        policies: PolicyHolder,
        classifier: ClassifierHolder,
        engine: Engine,
        budgets: Budgets,
        clock: Clock,
        keep_prompts: bool = True,
    ) -> None:
        self.policies = policies
        self.classifier = classifier
        self.engine = engine
        self.budgets = budgets
        self.clock = clock
        self.keep_prompts = keep_prompts
        # Requests holding a reservation right now: the orphan sweeper leaves these alone.
        self.live: set[str] = set()

    async def quote(self, who: Principal, req: AskInput) -> Quote:
        """Assess and plan without generating or charging."""
        quote, _, _ = await self._plan(who, req)
        return quote

    async def ask(self, who: Principal, req: AskInput, events: EventSink | None = None) -> Outcome:
        started = self.clock.monotonic()
        quote, prepared, candidates = await self._plan(who, req)
        tenant = _tenant(who)
        request_id = secrets.token_hex(12)
        try:
            chosen = await self.budgets.reserve(tenant, request_id, candidates, _context(quote.assessment))
        except BudgetExhausted as exc:
            await self.budgets.refuse(self._row(request_id, tenant, quote, None, 0, started, "refused", exc.message))
            raise
        plan = candidates[chosen]
        quote = Quote(quote.assessment, plan, quote.prompt_tokens, quote.balance, quote.policy)
        self.live.add(request_id)
        if events:
            events("plan", (request_id, quote))
        loop = asyncio.get_running_loop()
        on_text = None
        if events:
            def on_text(sample: int, phase: str, text: str) -> None:
                loop.call_soon_threadsafe(events, "delta", (sample, phase, text))
        job = GenerationJob(
            prepared, plan.samples, plan.thinking_tokens, plan.answer_tokens,
            req.seed or secrets.randbits(31), answers.extract_answer, voting.vote_decided, on_text,
        )
        status, error = "ok", ""
        result: GenerationResult | None = None
        generation = asyncio.ensure_future(self.engine.generate(job))
        try:
            result = await asyncio.shield(generation)
            if result.error:
                status, error = "failed", result.error
                raise EngineFailure(f"the model failed while generating ({result.error}); the tokens it used are charged")
        except asyncio.CancelledError:
            # The caller went away: stop the samples, then charge what they used.
            job.cancel()
            result = await generation
            status, error = "cancelled", "the client cancelled the call"
            raise
        finally:
            if result is None:  # the engine refused the job (e.g. overloaded): nothing ran
                result = GenerationResult(len(prepared.tokens), 0, [])
                status, error = "failed", "the engine did not run the job"
            outcome = await self._settle(request_id, tenant, req, quote, result, started, status, error)
        return outcome

    async def _plan(self, who: Principal, req: AskInput) -> tuple[Quote, PreparedPrompt, list[Plan]]:
        tenant = _tenant(who)
        if not req.prompt.strip():
            raise InvalidRequest("the prompt is empty: put the question in 'prompt'")
        policy = self.policies.current()
        rules = policy.rules_for(tenant)
        check_hints(req.hints, rules, policy, tenant, self.engine.limits)
        prepared = await asyncio.to_thread(self.engine.prepare, req.system, req.prompt)
        score = self.classifier.current().score(req.prompt, explain=req.explain)
        assessment = adjust(score, policy, tenant, req.prompt, req.hints.severity_floor)
        candidates = plan_candidates(assessment, policy, rules, req.hints, len(prepared.tokens), self.engine.limits)
        balance = await self.budgets.balance(tenant)
        # The quote shows the plan the budget covers now; ask re-checks atomically when reserving.
        fitting = [p for p in candidates if p.worst_case_micros <= balance.remaining_micros]
        quote = Quote(assessment, (fitting or candidates)[0], len(prepared.tokens), balance, policy)
        return quote, prepared, candidates

    async def _settle(
        self, request_id: str, tenant: str, req: AskInput, quote: Quote, result: GenerationResult,
        started: float, status: str, error: str,
    ) -> Outcome:
        finished = [s.answer for s in result.samples if s.finish_reason in ("stop", "length")]
        answer, index = voting.winner(finished)
        done = [s for s in result.samples if s.finish_reason in ("stop", "length")]
        text = done[index].text if done else ""
        cost = quote.policy.prices.micros(
            result.prompt_tokens + result.forced_tokens, result.thinking_tokens, result.answer_tokens
        )
        row = self._row(request_id, tenant, quote, result, cost, started, status, error, answer)
        try:
            charged = await self.budgets.settle(row, req.prompt if self.keep_prompts else None)
        finally:
            self.live.discard(request_id)
        if charged < cost:
            log.warning("request %s used %d micros but reserved only %d", request_id, cost, charged)
        return Outcome(
            request_id, quote, result, text, answer, voting.tally(finished), charged,
            await self.budgets.balance(tenant), self.clock.monotonic() - started,
        )

    def _row(
        self, request_id: str, tenant: str, quote: Quote, result: GenerationResult | None, cost: int,
        started: float, status: str, error: str, answer: str = "",
    ) -> SpendRow:
        a, p = quote.assessment, quote.plan
        return SpendRow(
            request_id=request_id, tenant=tenant, at=iso(self.clock.now()),
            severity=a.severity, needs_reasoning=a.needs_reasoning,
            model_severity=a.score.severity, model_needs_reasoning=a.score.needs_reasoning,
            risk_model=a.score.model_version, policy_version=p.policy_version, level=p.level,
            thinking_cap=p.thinking_tokens, answer_cap=p.answer_tokens, samples_planned=p.samples,
            prompt_tokens=result.prompt_tokens if result else quote.prompt_tokens,
            thinking_tokens=result.thinking_tokens if result else 0,
            answer_tokens=result.answer_tokens if result else 0,
            forced_tokens=result.forced_tokens if result else 0,
            samples_run=result.samples_run if result else 0,
            samples_stopped=result.samples_stopped if result else 0,
            cost_micros=cost, latency_ms=int(1000 * (self.clock.monotonic() - started)),
            status=status, error=error, answer=answer,
        )


def _context(a: Assessment) -> dict[str, Any]:
    return {
        "assessment": {
            "severity": a.severity,
            "needs_reasoning": a.needs_reasoning,
            "model_severity": a.score.severity,
            "model_needs_reasoning": a.score.needs_reasoning,
            "risk_model": a.score.model_version,
        }
    }


def _tenant(who: Principal) -> str:
    if who.tenant is None:
        raise PermissionDenied("an admin key cannot ask: use a tenant's key (create one with 'ponder admin key issue')")
    return who.tenant
