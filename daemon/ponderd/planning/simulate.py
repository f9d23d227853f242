"""`ponder policy simulate CANDIDATE.toml`: what logged requests would have cost (and bought) under another policy.

Each spend record in the window is planned again under the candidate with the
planner itself, from the record's own assessment and prompt size. Its projected
cost is exact when the candidate plans the same level and shape (its own tokens
at the candidate's prices: its own cost when prices did not change); otherwise it
is estimated (~): the accuracy profile's mean tokens per sample for the
candidate's level, within the plan's caps, else the plan's worst case.

Budgets are replayed as the daemon spends them: the records in the order they
were settled, each tenant's budget and window (its current ones, from the
daemon) in the daemon's timezone, each request taking the first of the
candidate's plans its window's remaining budget covers (the daemon's reserve),
so a request the budget would have degraded or refused is degraded or refused
in the replay. Only the records in the replayed span count towards a window.
The model's context (n_ctx, n_seq_max) is the daemon's config's unless
--n-ctx says otherwise. Accuracy comes from the profile (profile.estimate) for
the level each record ran at and the level the candidate picks.
"""

from __future__ import annotations

import argparse
import collections
import pathlib
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Iterable, Mapping
from zoneinfo import ZoneInfo

from ponderd.engine import EngineLimits
from ponderd.errors import PolicyError
from ponderd.errors import PonderError as DomainError
from ponderd.ledger.types import to_credits, to_micros, window_start
from ponderd.planning.assessment import Assessment
from ponderd.planning.planner import Hints, Plan, Served, plan_candidates
from ponderd.planning.policy import Policy
from ponderd.planning.policy_file import load_policy
from ponderd.planning.profile import Profile, ProfileError
from ponderd.risk.score import RiskScore

SEVERITY_NAMES = {1: "low", 2: "medium", 3: "high"}


@dataclass(frozen=True)
class Record:
    """What simulate needs from a spend record."""

    tenant: str
    severity: str
    needs_reasoning: bool
    level: str
    thinking_cap: int
    samples_planned: int
    prompt_tokens: int
    thinking_tokens: int
    answer_tokens: int
    forced_tokens: int
    cost: float
    status: str
    # The served model that ran it ("" in records from before models were named).
    model: str = ""
    # When it was settled (its budget window); None: not replayed against a budget.
    at: datetime | None = None

    @classmethod
    def from_proto(cls, r: Any) -> Record:
        u = r.usage
        return cls(r.tenant, SEVERITY_NAMES.get(r.severity, "low"), bool(r.needs_reasoning), r.level, r.thinking_cap,
                   r.samples_planned, u.prompt_tokens, u.thinking_tokens, u.answer_tokens, u.forced_tokens, r.cost,
                   r.status, getattr(r, "model", ""), r.at.ToDatetime(tzinfo=timezone.utc))


@dataclass(frozen=True)
class Budget:
    """A tenant's budget as the daemon keeps it: credits per window ("day", "week" or "month")."""

    budget: float
    window: str


def plan_for(record: Record, policy: Policy, limits: EngineLimits, profile: Profile | None = None) -> Plan:
    return plans_for(record, policy, limits, profile)[0]


def plans_for(record: Record, policy: Policy, limits: EngineLimits, profile: Profile | None = None) -> list[Plan]:
    """The candidate's first plan for a logged request: the one call into the planner.

    The record's assessment stands in for the classifier's (taken as certain:
    the record keeps the labels, not the probabilities). Every model the
    candidate's levels name is taken as serving, with the same limits and the
    prompt's recorded length (each model's tokenizer would differ a little).
    The profile, when given, replaces the candidate's own for expected-loss planning."""
    probs = {record.severity: 1.0}
    score = RiskScore(record.severity, record.needs_reasoning, probs, float(record.needs_reasoning), "spend-record")
    assessment = Assessment(record.severity, record.needs_reasoning, score)
    others = {lvl.model: Served(limits, record.prompt_tokens) for lvl in policy.levels if lvl.model}
    return plan_candidates(
        assessment, policy, policy.rules_for(record.tenant), Hints(), record.prompt_tokens, limits,
        others=others, accuracy=profile,
    )


@dataclass
class Group:
    tenant: str
    severity: str
    requests: int = 0
    actual: float = 0.0
    projected: float = 0.0
    # Records whose projected cost is an estimate: from the profile's tokens, or the plan's worst case.
    from_profile: int = 0
    worst_case: int = 0
    acc_now: list[float] = field(default_factory=list)
    acc_projected: list[float] = field(default_factory=list)
    levels: collections.Counter = field(default_factory=collections.Counter)
    refused: collections.Counter = field(default_factory=collections.Counter)
    # Requests the remaining budget moved to a cheaper plan than the candidate's first.
    degraded: int = 0

    @property
    def estimated(self) -> int:
        return self.from_profile + self.worst_case

    def to_json(self) -> dict[str, Any]:
        def mean(xs: list[float]) -> float | None:
            return round(sum(xs) / len(xs), 6) if xs else None

        return {
            "tenant": self.tenant, "severity": self.severity, "requests": self.requests,
            "actual_spend": round(self.actual, 6), "projected_spend": round(self.projected, 6),
            "projected_estimated": self.estimated, "projected_from_profile": self.from_profile,
            "projected_worst_case": self.worst_case,
            "accuracy_now": mean(self.acc_now), "accuracy_projected": mean(self.acc_projected),
            "projected_levels": dict(self.levels), "refused": dict(self.refused), "degraded": self.degraded,
        }


def project_cost(record: Record, plan: Plan, policy: Policy, profile: Profile | None) -> tuple[float, str]:
    """The record's cost under the plan, and how it was found: "exact", "profile" or "worst_case"."""
    same_model = (plan.model or "") == (record.model or plan.model or "")
    if plan.level == record.level and same_model and plan.thinking_tokens == record.thinking_cap and plan.samples == record.samples_planned:
        micros = policy.prices_for(plan.model).micros(record.prompt_tokens + record.forced_tokens, record.thinking_tokens, record.answer_tokens)
        return to_credits(micros), "exact"
    lvl = profile.levels.get(plan.level) if profile else None
    if lvl is None:
        return to_credits(plan.worst_case_micros), "worst_case"
    thinking, answer = lvl.per_sample()
    thinking, answer = min(thinking, plan.thinking_tokens), min(answer, plan.answer_tokens)
    micros = policy.prices_for(plan.model).micros(plan.prompt_tokens + plan.forced_tokens, round(plan.samples * thinking),
                                  round(plan.samples * answer))
    return to_credits(micros), "profile"


def simulate(
    records: Iterable[Record], policy: Policy, limits: EngineLimits, profile: Profile | None,
    budgets: Mapping[str, Budget] | None = None, zone: ZoneInfo | None = None,
) -> list[Group]:
    """Per (tenant, severity): the requests, their actual and projected spend and accuracy, refusals and degradations.

    With `budgets` (tenant -> Budget), the records are replayed in time order
    against each tenant's budget per window (in `zone`): see the module's doc.
    """
    groups: dict[tuple[str, str], Group] = {}
    spent: dict[tuple[str, datetime], int] = collections.defaultdict(int)
    ordered = list(records)
    if budgets is not None:
        ordered.sort(key=lambda r: r.at or datetime.min.replace(tzinfo=timezone.utc))
    for rec in ordered:
        g = groups.setdefault((rec.tenant, rec.severity), Group(rec.tenant, rec.severity))
        g.requests += 1
        g.actual += rec.cost
        if profile and (now := profile.estimate(rec.level, rec.severity, rec.needs_reasoning)):
            g.acc_now.append(now.accuracy)
        try:
            plans = plans_for(rec, policy, limits, profile)
        except DomainError as exc:
            g.refused[exc.message] += 1
            continue
        budget = budgets.get(rec.tenant) if budgets is not None and rec.at is not None else None
        window: tuple[str, datetime] | None = None
        plan = plans[0]
        if budget is not None and rec.at is not None:
            window = (rec.tenant, window_start(rec.at, budget.window, zone or ZoneInfo("UTC")))
            remaining = to_micros(budget.budget) - spent[window]
            fitting = [p for p in plans if p.worst_case_micros <= remaining]
            if not fitting:
                cheapest = min(plans, key=lambda p: p.worst_case_micros)
                g.refused[f"budget: the cheapest allowed plan ({cheapest.level}) needs more than is left in the window"] += 1
                continue
            plan = fitting[0]
            g.degraded += plan is not plans[0]
        g.levels[plan.level] += 1
        cost, how = project_cost(rec, plan, policy, profile)
        if window is not None:
            spent[window] += to_micros(cost)
        g.projected += cost
        g.from_profile += how == "profile"
        g.worst_case += how == "worst_case"
        if profile and (proj := profile.estimate(plan.level, rec.severity, rec.needs_reasoning)):
            g.acc_projected.append(proj.accuracy)
    order = {"low": 0, "medium": 1, "high": 2}
    return sorted(groups.values(), key=lambda g: (g.tenant, order.get(g.severity, 3)))


def _acc(xs: list[float], n: int) -> str:
    if not xs:
        return "-"
    partial = "*" if len(xs) < n else ""
    return f"~{sum(xs) / len(xs):.1%}{partial}"


def print_report(groups: list[Group], policy: Policy, since: str, until: str, profile_path: str | None,
                 truncated: bool, replayed: str = "") -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"requests {since} to {until} under candidate {policy.version} ({policy.path})")
    for name in ("tenant", "severity", "requests", "actual spend", "projected spend", "new levels", "accuracy now",
                 "accuracy projected", "refused"):
        t.add_column(name, justify="left" if name in ("tenant", "severity", "new levels") else "right")
    for g in groups:
        mark = "~" if g.estimated else ""
        levels = ", ".join(f"{k} {v}" for k, v in g.levels.most_common())
        t.add_row(g.tenant, g.severity, str(g.requests), f"{g.actual:.6f}", f"{mark}{g.projected:.6f}", levels,
                  _acc(g.acc_now, g.requests), _acc(g.acc_projected, g.requests - sum(g.refused.values())),
                  str(sum(g.refused.values())))
    total = Group("total", "")
    for g in groups:
        total.requests += g.requests
        total.actual += g.actual
        total.projected += g.projected
        total.from_profile += g.from_profile
        total.worst_case += g.worst_case
    t.add_row("total", "", str(total.requests), f"{total.actual:.6f}",
              f"{'~' if total.estimated else ''}{total.projected:.6f}", "", "", "",
              str(sum(sum(g.refused.values()) for g in groups)), style="bold")
    Console(soft_wrap=False, width=max(140, Console().width)).print(t)
    notes = []
    if total.estimated:
        notes.append(f"~ estimated: {total.from_profile} request(s) from the profile's mean tokens per sample for the new "
                     f"level, {total.worst_case} at the plan's worst case (no profile entry for the level); the rest "
                     "are their own tokens at the candidate's prices")
    if profile_path:
        notes.append(f"accuracy: estimates from {profile_path} for each request's level and slice; * = some levels "
                     "are not in the profile")
    else:
        notes.append("accuracy: pass --profile PROFILE.json (from `ponder calibrate`) to compare accuracy")
    if replayed:
        notes.append(f"budgets replayed: each tenant's budget and window as the daemon has them now ({replayed}); "
                     f"degraded by budget: {sum(g.degraded for g in groups)} request(s)")
    else:
        notes.append("budgets are not replayed (--no-budgets): each request gets the candidate's first plan")
    if truncated:
        notes.append("only the newest records in the window were replayed: raise --limit or narrow --since")
    for g in groups:
        for reason, n in g.refused.items():
            notes.append(f"refused {n} x {g.tenant}/{g.severity}: {reason}")
    for note in notes:
        print(note)


def main(args: argparse.Namespace) -> int:
    """The `ponder policy simulate` command (registered by ponder/cli_local.py)."""
    from ponder.cli_connect import tls_options
    from ponder.client import AdminClient
    from ponder.dates import parse_when

    try:
        policy = load_policy(pathlib.Path(args.candidate))
    except PolicyError as exc:
        for problem in exc.problems:
            print(f"{exc.path}: {problem}", file=sys.stderr)
        return 1
    try:
        since = parse_when(args.since)
    except ValueError as exc:
        print(f"ponder: --since: {exc}", file=sys.stderr)
        return 1
    # The candidate's own profile (planning.profile) unless --profile names another.
    profile = policy.profile
    if args.profile:
        try:
            profile = Profile.load(args.profile)
        except ProfileError as exc:
            print(f"ponder: {exc}", file=sys.stderr)
            return 1
    profile_path = args.profile or (str(policy.planning.profile_path) if policy.profile is not None else None)
    try:
        settings = daemon_settings(args.config)
    except ValueError as exc:  # SettingsError
        print(f"ponder: {exc}", file=sys.stderr)
        return 1
    # The daemon's model context (its config, or the defaults it runs with), unless --n-ctx says otherwise.
    n_ctx = args.n_ctx or settings.model.n_ctx
    limits = EngineLimits(n_ctx=n_ctx, n_ctx_seq=n_ctx, n_seq_max=settings.model.n_seq_max)
    with AdminClient(args.address, args.token, timeout=args.timeout, **tls_options(args)) as admin:
        report = admin.spend(args.tenant or "", since, None, records=args.limit)
        tenants = [] if args.no_budgets else admin.list_tenants()
    records = [Record.from_proto(r) for r in report.records]
    budgets = None if args.no_budgets else {t.name: Budget(t.balance.budget, t.balance.window) for t in tenants}
    groups = simulate(records, policy, limits, profile, budgets, settings.zone)
    replayed = "" if budgets is None else f"timezone {settings.timezone}, n_ctx {n_ctx}"
    window = (f"{report.since.ToDatetime():%Y-%m-%d %H:%M}", f"{report.until.ToDatetime():%Y-%m-%d %H:%M} UTC")
    truncated = len(records) >= args.limit
    if args.json:
        from ponder.cli_format import dump_json

        dump_json({"candidate": {"path": str(args.candidate), "version": policy.version},
                   "since": report.since, "until": report.until, "profile": profile_path, "truncated": truncated,
                   "n_ctx": n_ctx, "budgets_replayed": budgets is not None,
                   "groups": [g.to_json() for g in groups]})
    else:
        print_report(groups, policy, *window, profile_path, truncated, replayed)
    return 0


def daemon_settings(config: str | None) -> Any:
    """The daemon's settings: from `config` (or $PONDER_CONFIG), else the defaults it runs with."""
    import os

    from ponderd.settings import Settings, load_settings

    if config or os.environ.get("PONDER_CONFIG"):
        return load_settings(pathlib.Path(config) if config else None)
    return Settings()
