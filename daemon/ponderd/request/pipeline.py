"""The request path: assess -> plan -> reserve -> generate -> vote -> settle.

One call per collaborator, each behind its seam. Every request works on one
policy snapshot and one classifier from start to end, and a request that got a
reservation always settles it, whether it succeeds, fails or is cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import secrets
import threading
from dataclasses import replace
from typing import Any, Awaitable, Callable

from ponderd import answers
from ponderd.clock import Clock
from ponderd.engine import Engine, EngineLimits, GenerationJob, GenerationResult, PreparedPrompt
from ponderd.errors import (
    BudgetExhausted,
    EngineFailure,
    InvalidRequest,
    KeyBudgetExhausted,
    PermissionDenied,
    PonderError,
    StorageUnavailable,
)
from ponderd.ledger.budgets import Budgets
from ponderd.ledger.keys import Principal
from ponderd.ledger.types import SpendRow, iso
from ponderd.planning.assessment import adjust
from ponderd.planning.planner import Plan, Served, check_hints, most_samples, plan_candidates
from ponderd.planning.policy import Level, Policy, TenantRules
from ponderd.planning.policy_file import PolicyHolder
from ponderd.request import refine, stopping, voting
from ponderd.request.alerts import SoftLimits
from ponderd.request.inflight import Inflight, Stop
from ponderd.request.limits import Admission, Limiter, worst_case_tokens
from ponderd.request.models import ServedModels
from ponderd.request.outcome import (  # noqa: F401  (AskInput, Outcome, Quote: the pipeline's types, imported from here too)
    AskInput,
    EventSink,
    Outcome,
    Quote,
    ended,
    level_of,
    reservation_context,
    spend_row,
    stop_reason,
    stopped,
    voted,
    why,
)
from ponderd.risk import ClassifierHolder, embed

log = logging.getLogger("ponder.pipeline")


class Pipeline:
    def __init__(
        self,
        policies: PolicyHolder,
        classifier: ClassifierHolder,
        engine: Engine,
        budgets: Budgets,
        clock: Clock,
        keep_prompts: bool = True,
        planned: Callable[[float], None] = lambda seconds: None,
        accuracy: Callable[[], Any] = lambda: None,
        first_token: Callable[[float], None] | None = None,
        limiter: Limiter | None = None,
        soft_limits: SoftLimits | None = None,
    ) -> None:
        self.policies = policies
        # Per-tenant rate and concurrency limits, checked before the reservation (limits.py).
        self.limiter = limiter or Limiter(clock)
        self._admissions: dict[str, Admission] = {}
        # Alerts when a tenant's spend crosses its soft limit (alerts.py); None: none.
        self.soft_limits = soft_limits
        # The learned accuracy estimates for expected-loss planning (accuracy.py); None: the policy's profile.
        self.accuracy = accuracy
        # Told how long each plan took (telemetry's planner histogram).
        self.planned = planned
        # Told, from the engine thread, the seconds from a request's arrival to its first generated text
        # (telemetry's time-to-first-token histogram); None: not measured.
        self.first_token = first_token
        self.classifier = classifier
        # One engine per served model; a lone engine is the primary model.
        self.engine = ServedModels.single(engine)
        self.budgets = budgets
        self.clock = clock
        self.keep_prompts = keep_prompts
        self.inflight = Inflight()
        # Requests that hold, or are about to take, a reservation: the sweeper leaves these alone.
        self.live: set[str] = set()

    async def quote(self, who: Principal, req: AskInput) -> Quote:
        """Assess and plan without generating or charging."""

        async def body(stop: Stop) -> Quote:
            return (await self._plan(who, req, stop, generates=False))[0]

        return await self.inflight.run(body)

    async def ask(
        self, who: Principal, req: AskInput, events: EventSink | None = None,
        ended: Callable[[Outcome | None], Awaitable[None]] | None = None,
    ) -> Outcome:
        """Plan, reserve, generate, settle. Runs to its end even if the caller goes away (see inflight.py).

        `ended` is told the outcome (None: no answer) inside the request, so it
        hears even when the caller has left (an idempotency key's claim).
        """
        deadline = req.deadline
        if deadline is None and req.timeout is not None:
            deadline = self.clock.monotonic() + req.timeout
        if ended is None:
            return await self.inflight.run(lambda stop: self._ask(who, req, events, stop), deadline)

        async def body(stop: Stop) -> Outcome:
            try:
                outcome = await self._ask(who, req, events, stop)
            except BaseException:
                await ended(None)
                raise
            await ended(outcome)
            return outcome

        return await self.inflight.run(body, deadline)

    async def _ask(self, who: Principal, req: AskInput, events: EventSink | None, stop: Stop) -> Outcome:
        started = self.clock.monotonic()
        quote, prepared, candidates = await self._plan(who, req, stop)
        if stop.reason:
            raise stopped(stop.reason, 0)
        tenant = _tenant(who)
        request_id = req.request_id or secrets.token_hex(12)
        # Before anything is reserved: a refusal (RateLimited) charges nothing and writes no record.
        # The tokens counted are the preferred plan's worst case, corrected when the request settles.
        admission = self.limiter.admit(tenant, quote.policy.rules_for(tenant), worst_case_tokens(candidates[0]))
        self._admissions[request_id] = admission
        # Live before the reservation exists: the sweeper must never settle a
        # reservation whose request is about to learn it holds it.
        self.live.add(request_id)
        try:
            try:
                chosen = await self.budgets.reserve(
                    tenant, request_id, candidates, reservation_context(quote.assessment), who.key_id
                )
            except BudgetExhausted as exc:
                admission.settle(0)  # nothing ran
                row = self._row(request_id, tenant, quote, None, 0, started, "refused", exc.message)
                with contextlib.suppress(StorageUnavailable):  # the refusal's record waits in Budgets
                    await self.budgets.refuse(row)
                _recorded(req, "refused", 0)
                if self.soft_limits is not None and not isinstance(exc, KeyBudgetExhausted):  # the tenant's, not a key's
                    await self.soft_limits.exhausted(quote.balance, quote.policy.rules_for(tenant))
                raise
            # From here the reservation is this request's: every path below settles it exactly once.
            quote = replace(quote, plan=candidates[chosen])
            return await self._generate(request_id, tenant, req, quote, prepared, events, stop, started)
        finally:
            self.live.discard(request_id)
            self._admissions.pop(request_id, None)
            admission.release()

    async def _generate(
        self, request_id: str, tenant: str, req: AskInput, quote: Quote, prepared: dict[str, PreparedPrompt],
        events: EventSink | None, stop: Stop, started: float,
    ) -> Outcome:
        nothing = GenerationResult(0, 0, [])
        if stop.reason:
            return await self._settle(request_id, tenant, req, quote, nothing, started, stop.reason, why(stop.reason))
        if events:
            events("plan", (request_id, quote))
        plan = quote.plan
        model = plan.model or self.engine.primary
        job = GenerationJob(
            prepared[model], plan.samples, plan.thinking_tokens, plan.answer_tokens,
            req.seed or secrets.randbits(31), answers.extractor(plan.answer_format),
            voting.vote_decided if plan.vote == "majority" else voting.never_decided,
            self._timed(_text_sink(events), started),
        )
        if req.choices > 1:
            job.vote_decided = voting.never_decided  # every sample runs to its end: each is a full answer
        else:
            _adaptive(job, level_of(quote))
        job.tenant = tenant
        job.temperature, job.top_p, job.stop = req.temperature, req.top_p, req.stop
        stop.on_stop(job.cancel)
        try:
            result = await self.engine.get(model).generate(job)
        except PonderError as exc:
            # The engine refused the job (queue full, shutting down): nothing ran, nothing is charged.
            await self._settle(request_id, tenant, req, quote, nothing, started, "refused", exc.message)
            raise
        except Exception as exc:
            log.exception("the engine failed request %s before running it", request_id)
            await self._settle(request_id, tenant, req, quote, nothing, started, "failed", str(exc))
            raise EngineFailure(f"the model could not run the request ({exc}); nothing was charged")
        if result.fatal:
            status, error = "failed", f"the model engine stopped: {result.error}"
        elif stop.reason:
            status, error = stop.reason, why(stop.reason)
        elif result.error:
            status, error = "failed", result.error
        else:
            status, error = "ok", ""
        refined = None
        if status == "ok" and plan.refine:
            refined = await self._refine(tenant, req, quote, result, job.seed, events, stop)
            if stop.reason:
                status, error = stop.reason, why(stop.reason)
            elif refined.error:
                status, error = "failed", refined.error
        return await self._settle(request_id, tenant, req, quote, result, started, status, error, refined)

    async def _refine(
        self, tenant: str, req: AskInput, quote: Quote, result: GenerationResult, seed: int,
        events: EventSink | None, stop: Stop,
    ) -> refine.Refined:
        """Critique and revise the voted answer, the plan's rounds (refine.py); failures end it with what ran."""
        vote = voted(quote, result)
        level = level_of(quote)
        reason = stop_reason(quote, result)
        decided = reason in ("decided", "beta", "agreed") or stopping.p_leader(vote.counts) >= level.stop_confidence

        def started(job: GenerationJob) -> None:
            stop.on_stop(job.cancel)

        try:
            return await refine.refine(
                self.engine.get(quote.plan.model), quote.plan, level.refine_keep, decided, req.system, req.prompt, vote.text, vote.answer,
                seed, tenant, _round_sink(events), started, stop=req.stop,
            )
        except Exception as exc:  # preparing a round failed: settle what ran before it
            log.exception("refinement failed")
            return refine.Refined(vote.text, vote.answer, error=f"refinement failed: {exc}")

    async def _plan(
        self, who: Principal, req: AskInput, stop: Stop, generates: bool = True,
    ) -> tuple[Quote, dict[str, PreparedPrompt], list[Plan]]:
        tenant = _tenant(who)
        if not req.prompt.strip():
            raise InvalidRequest("the prompt is empty: put the question in 'prompt'")
        policy = self.policies.current()
        rules = policy.rules_for(tenant)
        req = _with_choices(req, rules, tenant, self.engine.limits)
        check_hints(req.hints, rules, policy, tenant, self.engine.limits)
        prepared = await asyncio.to_thread(self._prepare, policy, req)
        # Assess, and match override rules against, everything the model will read.
        # (a conversation's earlier turns too: the risk is in what was asked before as well).
        text = "\n".join([req.system] * bool(req.system.strip()) + [content for _, content in req.history] + [req.prompt])
        score = await _score(self.classifier.current(), text, req.explain, stop, generates)
        assessment = adjust(score, policy, tenant, text, req.hints.severity_floor)
        began = self.clock.monotonic()
        models = self.engine
        others = {
            name: Served(models.get(name).limits, len(prepared[name].tokens) if name in prepared else 0, models.down(name))
            for name in models.others()
        }
        candidates = plan_candidates(
            assessment, policy, rules, req.hints, len(prepared[models.primary].tokens), models.limits,
            primary=models.primary, others=others, accuracy=self.accuracy(),
        )
        short = [p for p in candidates if p.samples < req.choices]
        if short:
            raise InvalidRequest(
                f"choices (n) {req.choices} cannot be served: the plan can run only {short[0].samples} sample(s) at once "
                "(the model's context, or answer_format free, which takes one); ask for fewer choices",
                "choices",
            )
        self.planned(self.clock.monotonic() - began)
        balance = await self.budgets.balance(tenant)
        # The quote shows the plan the budget covers now; ask re-checks atomically when reserving.
        fitting = [p for p in candidates if p.worst_case_micros <= balance.remaining_micros]
        chosen = (fitting or candidates)[0]
        quote = Quote(assessment, chosen, chosen.prompt_tokens, balance, policy)
        return quote, prepared, candidates

    def _prepare(self, policy: Policy, req: AskInput) -> dict[str, PreparedPrompt]:
        """The prompt in each model's own template and tokens: the primary's, and any other model's that a level uses and that serves."""
        models = self.engine
        used = {lvl.model for lvl in policy.levels} - {""}
        names = [models.primary] + [n for n in models.others() if n in used and not models.down(n)]
        return {name: models.get(name).prepare(req.system, req.prompt, req.history) for name in names}

    def _timed(self, sink: Callable[[int, str, str], None] | None, started: float) -> Callable[[int, str, str], None] | None:
        """The text sink, telling `first_token` when the request's first text comes (once, on the engine thread)."""
        if self.first_token is None:
            return sink
        report, told = self.first_token, threading.Event()

        def on_text(sample: int, phase: str, text: str) -> None:
            if not told.is_set():
                told.set()
                report(self.clock.monotonic() - started)
            if sink is not None:
                sink(sample, phase, text)

        return on_text

    def _row(
        self, request_id: str, tenant: str, quote: Quote, result: GenerationResult | None, cost: int,
        started: float, status: str, error: str, answer: str = "",
    ) -> SpendRow:
        return spend_row(
            request_id, tenant, quote, result, cost, iso(self.clock.now()), self.clock.monotonic() - started,
            status, error, answer,
        )

    async def _settle(
        self, request_id: str, tenant: str, req: AskInput, quote: Quote, result: GenerationResult,
        started: float, status: str, error: str, refined: refine.Refined | None = None,
    ) -> Outcome:
        """Charge what ran and write the record; then return the outcome, or raise what the status means."""
        vote = voted(quote, result)
        text, answer = vote.text, vote.answer
        # A job the engine never started decoded nothing, not even its prompt.
        ran = bool(result.samples)
        cost = quote.policy.prices_for(quote.plan.model).micros(
            result.prompt_tokens + result.forced_tokens, result.thinking_tokens, result.answer_tokens
        ) if ran else 0
        if refined is not None:
            cost += refined.micros(quote.policy.prices_for(quote.plan.model))
            text, answer = refined.text, refined.answer
        # Only a finished request's answer is judged: a cut-short one says nothing about its level.
        verified = req.check.verify(answer) if req.check is not None and status == "ok" else None
        row = self._row(request_id, tenant, quote, result if ran else None, cost, started, status, error, answer)
        row = replace(row, verified=verified)
        if refined is not None and refined.rounds:
            # Refinement rounds read and write tokens like any others: the record counts them.
            row = replace(
                row, prompt_tokens=row.prompt_tokens + refined.prompt_tokens,
                answer_tokens=row.answer_tokens + refined.answer_tokens,
                forced_tokens=row.forced_tokens + refined.forced_tokens,
            )
        if not ran:
            row = replace(row, prompt_tokens=0)
        admission = self._admissions.get(request_id)
        if admission is not None:  # tokens_per_minute counts what ran, not the worst case
            admission.settle(row.prompt_tokens + row.forced_tokens + row.thinking_tokens + row.answer_tokens)
        balance = quote.balance
        try:
            charged = await self.budgets.settle(row, req.prompt if self.keep_prompts else None)
            balance = await self.budgets.balance(tenant)
            if self.soft_limits is not None:
                await self.soft_limits.settled(balance, quote.policy.rules_for(tenant))
        except StorageUnavailable as exc:
            # The settlement waits in Budgets and is written when the database
            # takes writes again; the reservation covers it until then.
            log.warning("request %s: its charge waits for the database: %s", request_id, exc.message)
            charged = cost
        if charged < cost:
            log.warning("request %s used %d micros but reserved only %d", request_id, cost, charged)
        _recorded(req, status, charged)
        if status != "ok":
            raise ended(status, error, charged, fatal=result.fatal)
        return Outcome(
            request_id, quote, result, text, answer, vote.votes, charged,
            balance, self.clock.monotonic() - started, vote.weights, verified,
            stop_reason(quote, result), vote.text, vote.answer, refined,
        )


def _recorded(req: AskInput, status: str, charged: int) -> None:
    """Tell the caller its record was written (status, charged micros); a failing listener never fails the request."""
    if req.recorded is not None:
        try:
            req.recorded(status, charged)
        except Exception:
            log.exception("the request's record listener failed")


def _with_choices(req: AskInput, rules: TenantRules, tenant: str, limits: EngineLimits) -> AskInput:
    """A request for several full answers (choices, OpenAI's n) as the samples hint it implies, or InvalidRequest
    naming choices when the tenant's policy cannot give that many samples."""
    n = req.choices
    if n <= 1:
        return req
    if "samples" not in rules.hints:
        raise InvalidRequest(
            f"choices (n) {n} needs {n} samples, and tenant {tenant!r}'s policy does not let it ask for samples "
            "(its hints do not include samples): ask for one choice, or have an admin allow the samples hint", "choices",
        )
    most = most_samples(rules, limits)
    if n > most:
        raise InvalidRequest(f"choices (n) must be at most {most} for tenant {tenant!r} (its max_samples), not {n}", "choices")
    samples = req.hints.samples
    if samples is not None and samples < n:
        raise InvalidRequest(f"choices (n) {n} needs at least {n} samples, but the samples hint asks for {samples}: raise it or drop it", "choices")
    return replace(req, hints=replace(req.hints, samples=samples or n))


def _adaptive(job: GenerationJob, level: Level) -> None:
    """Give the job the level's stop rule, escalation and pruning (stopping.py)."""
    if job.samples < 2:
        return
    job.vote_decided = stopping.stop_rule(level.stop, level.vote, level.stop_confidence)
    job.first_samples = level.first_samples
    job.agreed = stopping.agreed
    if level.prune_percentile:
        pct = level.prune_percentile
        job.prune_below = lambda confidences: stopping.prune_threshold(confidences, pct)


def _text_sink(events: EventSink | None) -> Callable[[int, str, str], None] | None:
    """Stream the samples' text from the engine thread to the caller's loop."""
    rounds = _round_sink(events)
    return None if rounds is None else (lambda sample, phase, text: rounds(0, sample, phase, text))


def _round_sink(events: EventSink | None) -> Callable[[int, int, str, str], None] | None:
    """Stream text from the engine thread to the caller's loop, with its refinement round (0: a sample's)."""
    if events is None:
        return None
    loop = asyncio.get_running_loop()

    def on_text(round_: int, sample: int, phase: str, text: str) -> None:
        loop.call_soon_threadsafe(events, "delta", (sample, phase, text, round_))

    return on_text


async def _score(model: Any, text: str, explain: bool, stop: Stop, generates: bool = False) -> Any:
    """The classifier's score. A model with the embedding view (docs/risk.md) decodes the
    prompt for the queries it embeds, up to an early layer: awaited (the engine's owner
    thread reads it between steps, or a worker thread computes it), so other requests go on. A stop while it waits cancels the scoring, which withdraws a view
    not yet run (engine/llama.py `view`), and the request ends here, before anything is
    reserved. `generates`: an ask, whose generation follows (risk/embed.py GENERATES)."""
    if getattr(model, "embedder", None) is None:
        return model.score(text, explain=explain)
    staged = getattr(model, "staged", None)
    if staged is not None:  # the cascade: a query its n-gram stage decides is scored here, no await
        pending = staged(text, explain)
        if not inspect.isawaitable(pending):
            return pending
    else:
        score_async = getattr(model, "score_async", None)
        if score_async is None:  # scored in a worker thread, which runs to its end
            return await asyncio.to_thread(model.score, text, explain)
        pending = score_async(text, explain)
    mark = embed.GENERATES.set(generates)
    try:  # the task copies the context as it is now
        scoring = asyncio.ensure_future(pending)
    finally:
        embed.GENERATES.reset(mark)
    stop.on_stop(scoring.cancel)
    try:
        return await scoring
    except asyncio.CancelledError:
        if scoring.cancelled() and stop.reason:
            raise stopped(stop.reason, 0) from None
        raise


def _tenant(who: Principal) -> str:
    if who.tenant is None:
        raise PermissionDenied("an admin key cannot ask: use a tenant's key (create one with 'ponder admin key issue')")
    return who.tenant
