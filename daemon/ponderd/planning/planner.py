"""Planning, a pure function: (assessment, policy, tenant rules, hints, prompt size, engine limits)
-> the plans to try, best first. The ledger reserves the first that the budget covers.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, replace
from typing import Any, Callable, Mapping

from ponderd.answers import ANSWER_FORMATS
from ponderd.engine import EngineLimits
from ponderd.errors import FailedPrecondition, InvalidRequest, PermissionDenied, Unavailable
from ponderd.ledger.types import to_credits, to_micros
from ponderd.planning.assessment import Assessment
from ponderd.planning.expected_loss import Choice, choose
from ponderd.planning.policy import SEVERITIES, Level, Policy, TenantRules


@dataclass(frozen=True)
class Hints:
    """What the client asked for; each field None when not sent."""

    severity_floor: str | None = None
    max_cost: float | None = None
    samples: int | None = None
    thinking_tokens: int | None = None
    level: str | None = None
    # What kind of answer to vote on (answers.ANSWER_FORMATS), instead of the level's.
    answer_format: str | None = None
    # A cap on the answer's tokens per sample; it only lowers the level's, so no policy needs to allow it.
    answer_tokens: int | None = None

    def sent(self) -> list[str]:
        return [name for name, value in vars(self).items() if value is not None]


@dataclass(frozen=True)
class Served:
    """A model other than the primary one, as the planner sees it for one prompt."""

    limits: EngineLimits
    # The prompt's length in this model's tokens (each model has its own tokenizer).
    prompt_tokens: int
    # Why the model cannot serve now ("" when it can): failed to load, stopped.
    down: str = ""


@dataclass(frozen=True)
class Plan:
    level: str
    thinking_tokens: int
    samples: int
    answer_tokens: int
    prompt_tokens: int
    forced_tokens: int
    worst_case_micros: int
    policy_version: str
    reasons: tuple[str, ...] = ()
    answer_format: str = "auto"
    vote: str = "majority"
    # The served model that runs the plan (its name in the settings).
    model: str = ""
    # Expected-loss mode: the plan's expected cost plus expected loss, in credits.
    expected_loss: float | None = None
    # Self-refinement rounds after the vote, and each round's answer cap (refine.py).
    refine: int = 0
    refine_tokens: int = 0
    # Expected-loss mode: every level weighed, lowest expected total first (expected_loss.Choice).
    choices: tuple[Choice, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "level": self.level,
            "model": self.model,
            "thinking_tokens": self.thinking_tokens,
            "samples": self.samples,
            "answer_tokens": self.answer_tokens,
            "worst_case_micros": self.worst_case_micros,
            "policy_version": self.policy_version,
            "answer_format": self.answer_format,
            "vote": self.vote,
        }


# Hints every tenant may send: they can only make a plan cheaper.
ALWAYS_ALLOWED = frozenset({"answer_tokens"})


def most_samples(rules: TenantRules, limits: EngineLimits) -> int:
    """The most samples a tenant's request may ask for: its policy's max_samples, within what the engine holds at once."""
    return min(rules.max_samples, limits.n_seq_max)


def check_hints(hints: Hints, rules: TenantRules, policy: Policy, tenant: str, limits: EngineLimits) -> None:
    """Refuse hints the tenant's rules do not allow, or values outside its limits."""
    refused = [h for h in hints.sent() if h not in rules.hints and h not in ALWAYS_ALLOWED]
    if refused:
        allowed = ", ".join(sorted(rules.hints)) or "none"
        raise PermissionDenied(
            f"tenant {tenant!r} may not send the {', '.join(refused)} hint(s); its policy allows: {allowed}"
        )
    if hints.severity_floor is not None and hints.severity_floor not in SEVERITIES:
        raise InvalidRequest(f"severity_floor must be one of {', '.join(SEVERITIES)}")
    if hints.max_cost is not None and hints.max_cost < 0:
        raise InvalidRequest("max_cost must be >= 0 (0 means no limit)")
    if hints.samples is not None:
        most = most_samples(rules, limits)
        if not 1 <= hints.samples <= most:
            raise InvalidRequest(f"samples must be from 1 to {most} for tenant {tenant!r}, not {hints.samples}")
    if hints.thinking_tokens is not None and hints.thinking_tokens > rules.max_thinking_tokens:
        raise InvalidRequest(
            f"thinking_tokens must be at most {rules.max_thinking_tokens} for tenant {tenant!r}, "
            f"not {hints.thinking_tokens}"
        )
    if hints.answer_format is not None:
        if hints.answer_format not in ANSWER_FORMATS:
            near = difflib.get_close_matches(hints.answer_format, ANSWER_FORMATS, n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            raise InvalidRequest(f"answer_format must be one of {', '.join(ANSWER_FORMATS)}, not {hints.answer_format!r}{hint}")
        if hints.answer_format == "free" and (hints.samples or 1) > 1:
            raise InvalidRequest("answer_format 'free' is not voted, so it takes one sample: drop the samples hint or pick another format")
    if hints.level is not None:
        names = [lvl.name for lvl in policy.levels]
        if hints.level not in names:
            raise InvalidRequest(f"no level {hints.level!r}; the policy's levels are {', '.join(names)}")
        if not policy.rank(rules.min_level) <= policy.rank(hints.level) <= policy.rank(rules.max_level):
            raise PermissionDenied(
                f"level {hints.level!r} is outside tenant {tenant!r}'s range "
                f"{rules.min_level}..{rules.max_level}"
            )


def plan_candidates(
    assessment: Assessment,
    policy: Policy,
    rules: TenantRules,
    hints: Hints,
    prompt_tokens: int,
    limits: EngineLimits,
    *,
    primary: str = "",
    others: Mapping[str, Served] | None = None,
    accuracy: Any = None,
) -> list[Plan]:
    """The plans to try, best first: the chosen level, then down the ladder to the floor.

    `prompt_tokens` and `limits` are the primary model's (named `primary`);
    `others` has every other served model. `accuracy` (profile.Profile, or the
    learned estimates over it) replaces the policy's profile in expected_loss mode.
    """
    served: dict[str, Served] = {"": Served(limits, prompt_tokens), **(others or {})}
    if primary:
        served[primary] = served[""]

    def down(level: Level) -> str:
        s = served.get(level.model)
        return f"model {level.model!r} is not served" if s is None else s.down

    route = policy.routing[assessment.severity]
    reasons: list[str] = []
    lo, hi = policy.rank(rules.min_level), policy.rank(rules.max_level)
    if hints.level is not None:
        target = hints.level
        floor = target
        reasons.append(f"client asked for level {target}")
        if down(policy.level(target)):
            raise Unavailable(f"level {target} cannot run now: {down(policy.level(target))}; retry later or ask for another level")
    else:
        target = route.reasoning if assessment.needs_reasoning else route.direct
        kind = "needs reasoning" if assessment.needs_reasoning else "direct"
        reasons.append(f"routing: severity {assessment.severity}, {kind} -> {target}")
        if policy.rank(target) < lo:
            target = rules.min_level
            reasons.append(f"raised to the tenant's min_level {target}")
        elif policy.rank(target) > hi:
            target = rules.max_level
            reasons.append(f"capped at the tenant's max_level {target}")
        floor_rank = max(policy.rank(route.floor), lo)
        if assessment.unsure_cues and rules.unsure_floor:
            # Never above the tenant's max_level: the floor protects, it does not bill past the cap.
            unsure_rank = min(policy.rank(rules.unsure_floor), hi)
            floor_rank = max(floor_rank, unsure_rank)
            raised = policy.rank(target) < unsure_rank
            if raised:
                target = policy.levels[unsure_rank].name
            reasons.append(
                f"unsure: classifier confidence {assessment.confidence:.2f} < {rules.unsure_confidence:g} and the query "
                f"carries {', '.join(assessment.unsure_cues)} -> no lower than {policy.levels[unsure_rank].name}"
                + (f" (raised to {target})" if raised else "")
            )
        floor_rank = min(floor_rank, policy.rank(target))
        floor = policy.levels[floor_rank].name

    exact = hints.samples is not None or hints.thinking_tokens is not None
    if exact or hints.level is not None:
        ladder = [policy.level(target)]
    else:
        ladder = [policy.levels[r] for r in range(policy.rank(target), policy.rank(floor) - 1, -1)]
        ladder = _around_unavailable(ladder, policy, hi, down, reasons)

    def fit(level: Level, why: list[str]) -> Plan:
        level_served = served[level.model]
        return _fit(
            _apply_hints(level, hints, why), level_served.prompt_tokens, level_served.limits, policy, why,
            level.model or primary,
        )

    plans: list[Plan] = []
    if policy.planning.mode == "expected_loss" and hints.level is None and not exact:
        plans = _by_expected_loss(
            assessment, policy, accuracy if accuracy is not None else policy.profile,
            [policy.levels[r] for r in range(policy.rank(floor), hi + 1) if not down(policy.levels[r])],
            fit, reasons,
        )
    if not plans:
        shapes: set[tuple[str, int, int, int, str, str]] = set()
        for i, level in enumerate(ladder):
            why = list(reasons)
            if i:
                why.append(f"budget: degraded from {ladder[0].name} to {level.name}")
            plan = fit(level, why)
            shape = (plan.model, plan.thinking_tokens, plan.samples, plan.answer_tokens, plan.answer_format, plan.vote)
            if shape not in shapes:
                shapes.add(shape)
                plans.append(plan)
    if others:
        # Several models: say which one runs each plan.
        plans = [replace(p, reasons=p.reasons + (f"level {p.level} runs on model {p.model}",)) for p in plans]

    if hints.max_cost:
        cap = to_micros(hints.max_cost)
        within = [replace(p, reasons=p.reasons + (f"within client max_cost {hints.max_cost:g}",)) for p in plans if p.worst_case_micros <= cap]
        if not within:
            cheapest = min(plans, key=lambda p: p.worst_case_micros)
            raise FailedPrecondition(
                f"no allowed plan fits max_cost {hints.max_cost:g}: the cheapest ({cheapest.level}) "
                f"costs up to {to_credits(cheapest.worst_case_micros):.6f}; raise max_cost or shorten the prompt"
            )
        plans = within
    return plans


def _around_unavailable(ladder: list[Level], policy: Policy, hi: int, down: Any, reasons: list[str]) -> list[Level]:
    """Drop levels whose model cannot serve; with none left, step up to the nearest that can (if the policy allows)."""
    gone = [lvl for lvl in ladder if down(lvl)]
    if not gone:
        return ladder
    for lvl in gone:
        reasons.append(f"level {lvl.name} skipped: {down(lvl)}")
    left = [lvl for lvl in ladder if not down(lvl)]
    if left:
        return left
    why = "; ".join(f"{lvl.name}: {down(lvl)}" for lvl in gone)
    if policy.planning.unavailable == "route_around":
        for r in range(policy.rank(ladder[0].name) + 1, hi + 1):
            if not down(policy.levels[r]):
                reasons.append(f"stepped up to {policy.levels[r].name}: no level at or below {ladder[0].name} can run")
                return [policy.levels[r]]
    raise Unavailable(f"no level this request may use can run now ({why}); retry later")


def _by_expected_loss(
    assessment: Assessment, policy: Policy, accuracy: Any, levels: list[Level], fit: Any, reasons: list[str],
) -> list[Plan]:
    """Expected-loss mode: the chosen plan, then cheaper ones by expected total; [] falls back to routing."""
    if accuracy is None:
        reasons.append(policy.profile_note or "expected loss: no accuracy profile loaded, so the routing table decided")
        return []
    # The routing table did not decide here: keep only the reasons that still hold (unsure floor, skipped levels).
    kept = [r for r in reasons if r.startswith(("unsure", "level "))]
    plans = {lvl.name: fit(lvl, list(kept)) for lvl in levels}
    ranked: list[Choice] = choose(assessment, policy, accuracy, list(plans.values()))
    if not ranked:
        reasons.append("expected loss: no allowed level is in the accuracy profile, so the routing table decided")
        return []
    best = ranked[0]
    chosen = plans[best.level]
    said = [best.reason(policy.currency)] + ([f"next best {ranked[1].reason(policy.currency)}"] if len(ranked) > 1 else [])
    weighed = tuple(ranked)
    out = [replace(chosen, reasons=chosen.reasons + tuple(said), expected_loss=best.total, choices=weighed)]
    for c in ranked[1:]:
        p = plans[c.level]
        if p.worst_case_micros < chosen.worst_case_micros:
            why = (f"budget: degraded from {chosen.level} to {p.level}, the next lowest expected total", c.reason(policy.currency))
            out.append(replace(p, reasons=p.reasons + why, expected_loss=c.total, choices=weighed))
    return out


def _apply_hints(level: Level, hints: Hints, why: list[str]) -> Level:
    if hints.samples is not None and hints.samples != level.samples:
        why.append(f"client asked for {hints.samples} samples")
        level = replace(level, samples=hints.samples)
    if hints.thinking_tokens is not None and hints.thinking_tokens != level.thinking_tokens:
        why.append(f"client asked for a thinking cap of {hints.thinking_tokens}")
        level = replace(level, thinking_tokens=hints.thinking_tokens)
    if hints.answer_format is not None and hints.answer_format != level.answer_format:
        why.append(f"client asked for answer_format {hints.answer_format}")
        level = replace(level, answer_format=hints.answer_format)
    if hints.answer_tokens is not None and hints.answer_tokens < level.answer_tokens:
        why.append(f"client capped the answer at {hints.answer_tokens} tokens")
        level = replace(level, answer_tokens=hints.answer_tokens)
    if level.answer_format == "free" and level.samples > 1:
        why.append("answer_format free: free text is not voted, so one sample")
        level = replace(level, samples=1)
    return level


def _fit(level: Level, prompt: int, limits: EngineLimits, policy: Policy, why: list[str], model: str = "") -> Plan:
    """Shrink a level to what the context can hold; refuse a prompt that leaves no room to answer."""
    thinking, answer, samples = level.thinking_tokens, level.answer_tokens, level.samples
    shared = limits.forced_open if thinking else limits.forced_skip
    close = limits.forced_close if thinking else 0
    room = limits.n_ctx_seq - prompt - shared - close
    if room < 1:
        raise InvalidRequest(
            f"the prompt is {prompt} tokens and the model's context holds {limits.n_ctx_seq}; "
            f"shorten the prompt by at least {1 - room} tokens"
        )
    if thinking + answer > room:
        answer = min(answer, room)
        thinking = min(thinking, room - answer)
        why.append(f"context: thinking cap {thinking}, answer cap {answer} to fit {limits.n_ctx_seq} tokens")
        if not thinking:
            shared, close = limits.forced_skip, 0
    per_sample = thinking + answer + close
    fit = min(limits.n_seq_max, (limits.n_ctx - prompt - shared) // per_sample)
    if fit < samples:
        if fit < 1:
            raise InvalidRequest(
                f"the prompt is {prompt} tokens; with its answer it does not fit the model's "
                f"{limits.n_ctx}-token context: shorten the prompt"
            )
        why.append(f"context: {fit} samples fit at once, not {samples}")
        samples = fit
    forced = shared + samples * close
    cost = policy.prices_for(level.model).micros(prompt + forced, samples * thinking, samples * answer)
    cost += refinement_micros(level, prompt, answer, limits, policy)
    return Plan(
        level=level.name,
        thinking_tokens=thinking,
        samples=samples,
        answer_tokens=answer,
        prompt_tokens=prompt,
        forced_tokens=forced,
        worst_case_micros=cost,
        policy_version=policy.version,
        reasons=tuple(why),
        answer_format=level.answer_format,
        vote=level.vote,
        model=model,
        refine=level.refine,
        refine_tokens=level.refine_tokens,
    )


def refinement_prompt_bound(prompt: int, answer: int, refine_tokens: int, limits: EngineLimits) -> int:
    """The most prompt tokens one refinement round reads: the question, the framing, the answer it
    revises (a voted sample's, with its wrap-up, or the previous round's). refine.py truncates to it."""
    return prompt + limits.refine_overhead + max(answer + limits.forced_close, refine_tokens)


def refinement_micros(level: Level, prompt: int, answer: int, limits: EngineLimits, policy: Policy) -> int:
    """The worst case of a level's refinement rounds: each reads at most the bound and writes refine_tokens."""
    if not level.refine:
        return 0
    read = refinement_prompt_bound(prompt, answer, level.refine_tokens, limits) + limits.forced_skip
    return level.refine * policy.prices_for(level.model).micros(read, 0, level.refine_tokens)


def level_fit(level: Level, limits: EngineLimits, policy: Policy, prompt: int = 0) -> str:
    """What runs instead of `level` when it cannot run as configured on a model with `limits`; "" when it can.

    Planned as for a `prompt`-token prompt (0: the shortest), with the same
    fitting every request gets (_fit): fewer samples at once, or lower caps.
    """
    try:
        plan = _fit(level, prompt, limits, policy, [], level.model)
    except InvalidRequest as exc:
        return f"level {level.name} cannot run on a {limits.n_ctx}-token context ({exc.message})"
    changed = []
    if plan.samples < level.samples:
        changed.append(f"{plan.samples} sample(s) at once, not {level.samples}")
    if plan.thinking_tokens < level.thinking_tokens:
        changed.append(f"a thinking cap of {plan.thinking_tokens}, not {level.thinking_tokens}")
    if plan.answer_tokens < level.answer_tokens:
        changed.append(f"an answer cap of {plan.answer_tokens}, not {level.answer_tokens}")
    if not changed:
        return ""
    where = f"model {level.model}'s" if level.model else "the model's"
    return (
        f"level {level.name} does not fit {where} context (n_ctx {limits.n_ctx}, n_seq_max {limits.n_seq_max}) "
        f"as configured and runs with {' and '.join(changed)}; lower its samples or caps, or raise n_ctx"
    )


def fit_warnings(policy: Policy, limits: Callable[[str], EngineLimits | None]) -> list[str]:
    """One warning per level that cannot run as configured (`limits(model)`: the model's limits; None: not served)."""
    out = []
    for level in policy.levels:
        model_limits = limits(level.model)
        if model_limits is not None and (warning := level_fit(level, model_limits, policy)):
            out.append(warning)
    return out
