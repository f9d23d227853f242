"""Self-refinement: after the vote, the model critiques and revises the voted answer, N rounds.

Each round is one sequence that reads the question and the answer so far and
writes a revision in at most `refine_tokens`. Its prompt is held to a bound the
planner priced (planner.refinement_prompt_bound): an answer that retokenises
longer is cut from the front (its conclusion is at the end), so the reserved
worst case covers every round exactly. Rounds are charged like any tokens.

`refine_keep = "unless_decided"` keeps the voted answer when the vote was
decided (a stop rule or agreement ended it, or the Beta posterior puts the
leader at stop_confidence) and a revision says something else; a rejected
revision ends refinement. A revision with nothing extractable is not kept.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Callable

from ponderd import answers
from ponderd.engine import Engine, GenerationJob, SampleResult
from ponderd.engine.framing import frame
from ponderd.planning.planner import Plan, refinement_prompt_bound
from ponderd.planning.policy import Prices
from ponderd.request.voting import never_decided


@dataclass
class Round:
    number: int
    text: str
    answer: str
    kept: bool
    prompt_tokens: int
    answer_tokens: int
    forced_tokens: int
    finish_reason: str


@dataclass
class Refined:
    """The rounds run and the answer they leave; tokens summed for the charge."""

    text: str
    answer: str
    rounds: list[Round] = field(default_factory=list)
    error: str = ""

    @property
    def prompt_tokens(self) -> int:
        return sum(r.prompt_tokens for r in self.rounds)

    @property
    def answer_tokens(self) -> int:
        return sum(r.answer_tokens for r in self.rounds)

    @property
    def forced_tokens(self) -> int:
        return sum(r.forced_tokens for r in self.rounds)

    def micros(self, prices: Prices) -> int:
        return prices.micros(self.prompt_tokens + self.forced_tokens, 0, self.answer_tokens) if self.rounds else 0


async def refine(
    engine: Engine, plan: Plan, keep: str, decided: bool, system: str, question: str,
    text: str, answer: str, seed: int, tenant: str,
    on_text: Callable[[int, int, str, str], None] | None, started: Callable[[GenerationJob], None],
    stop: tuple[str, ...] = (),
) -> Refined:
    """Run the plan's rounds from the voted (text, answer); `started` is told each job (to cancel it),
    `on_text` each round's text as (round, sample, phase, text); `stop`: the request's stop strings,
    which end a revision as they end a sample."""
    out = Refined(text, answer)
    extract = answers.extractor(plan.answer_format)
    for number in range(1, plan.refine + 1):
        bound = refinement_prompt_bound(plan.prompt_tokens, plan.answer_tokens, plan.refine_tokens, engine.limits)
        prepared = await _bounded(engine, system, question, out.text, bound)
        sink = None if on_text is None else (lambda i, phase, t, n=number: on_text(n, i, phase, t))
        job = GenerationJob(prepared, 1, 0, plan.refine_tokens, seed + 7919 * number, extract, never_decided, sink)
        job.tenant, job.stop = tenant, stop
        started(job)
        try:
            result = await engine.generate(job)
        except Exception as exc:  # refused or failed before it ran: the rounds so far are still charged
            out.error = getattr(exc, "message", "") or f"a refinement round could not run: {exc}"
            break
        s = result.samples[0] if result.samples else SampleResult(0)
        revised = s.answer or (s.text if plan.answer_format == "free" else "")
        rejected = not revised or (keep == "unless_decided" and decided and revised != answer)
        out.rounds.append(Round(
            number, s.text, s.answer, not rejected and s.finish_reason in ("stop", "length"),
            result.prompt_tokens, s.answer_tokens, result.forced_tokens,
            s.finish_reason,
        ))
        if result.error or result.fatal:
            out.error = result.error or "the engine stopped"
            break
        if not out.rounds[-1].kept:
            break
        out.text, out.answer = s.text, s.answer
    return out


async def _bounded(engine: Engine, system: str, question: str, answer: str, bound: int):
    """The round's prompt, with the answer cut from the front until it fits the priced bound."""
    while True:
        prepared = await asyncio.to_thread(engine.prepare, system, frame(question, answer))
        if len(prepared.tokens) <= bound or not answer:
            return prepared
        answer = answer[len(answer) // 10 + 1 :]
