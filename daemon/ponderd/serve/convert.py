"""Domain objects <-> protobuf messages. No decisions here, only translation."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from ponder.v1 import admin_pb2, ponder_pb2
from ponderd.checks import Check, CheckError, parse_check
from ponderd.engine import SampleResult
from ponderd.errors import InvalidRequest
from ponderd.ledger.types import BalanceView, parse_iso, to_credits
from ponderd.planning.assessment import Assessment
from ponderd.planning.planner import Hints, Plan
from ponderd.risk.score import Contribution

SEVERITY_TO_PB = {
    "low": ponder_pb2.SEVERITY_LOW,
    "medium": ponder_pb2.SEVERITY_MEDIUM,
    "high": ponder_pb2.SEVERITY_HIGH,
}
SEVERITY_FROM_PB: dict[int, str] = {v: k for k, v in SEVERITY_TO_PB.items()}


def timestamp(when: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(when)
    return ts


def severity(value: int) -> str | None:
    """A request's Severity enum as a label; None for UNSPECIFIED."""
    if value == ponder_pb2.SEVERITY_UNSPECIFIED:
        return None
    if value not in SEVERITY_FROM_PB:
        raise InvalidRequest(f"unknown severity value {value}; use SEVERITY_LOW, _MEDIUM or _HIGH")
    return SEVERITY_FROM_PB[value]


def hints(msg: ponder_pb2.Hints) -> Hints:
    return Hints(
        severity_floor=severity(msg.severity_floor),
        max_cost=msg.max_cost or None,
        samples=msg.samples or None,
        thinking_tokens=msg.thinking_tokens if msg.HasField("thinking_tokens") else None,
        level=msg.level or None,
        answer_format=msg.answer_format or None,
        answer_tokens=msg.answer_tokens or None,
    )


def check(msg: Any) -> Check | None:
    """The request's Check as a checker, None when it sent none (a QuoteRequest has none); malformed: INVALID_ARGUMENT."""
    if "check" not in msg.DESCRIPTOR.fields_by_name or not msg.HasField("check"):
        return None
    c = msg.check
    spec: dict[str, Any] = {}
    if c.HasField("number"):
        spec["number"] = c.number
    if c.regex:
        spec["regex"] = c.regex
    if c.choice:
        spec["choice"] = c.choice
    if c.any_of:
        spec["any_of"] = list(c.any_of)
    if not spec:
        raise InvalidRequest("check is empty: set one of number, regex, choice or any_of, or leave check unset")
    try:
        return parse_check(spec)
    except CheckError as exc:
        raise InvalidRequest(f"check: {exc}") from None


def contributions(items: tuple[Contribution, ...]) -> list[ponder_pb2.Contribution]:
    return [ponder_pb2.Contribution(axis=c.axis, feature=c.feature, weight=c.weight) for c in items]


def assessment(a: Assessment) -> ponder_pb2.Assessment:
    s = a.score
    return ponder_pb2.Assessment(
        severity=SEVERITY_TO_PB[a.severity],
        needs_reasoning=a.needs_reasoning,
        severity_probs=s.severity_probs,
        needs_reasoning_prob=s.needs_reasoning_prob,
        model_version=s.model_version,
        adjustments=list(a.adjustments),
        explanation=contributions(s.explanation),
        model_severity=SEVERITY_TO_PB[s.severity],
        model_needs_reasoning=s.needs_reasoning,
    )


def plan(p: Plan) -> ponder_pb2.Plan:
    return ponder_pb2.Plan(
        level=p.level,
        thinking_tokens=p.thinking_tokens,
        samples=p.samples,
        answer_tokens=p.answer_tokens,
        worst_case_cost=to_credits(p.worst_case_micros),
        reasons=list(p.reasons),
        policy_version=p.policy_version,
        answer_format=p.answer_format,
        vote=p.vote,
        model=p.model,
        expected_loss=p.expected_loss,
        refine=p.refine,
        refine_tokens=p.refine_tokens,
        choices=[
            ponder_pb2.LevelChoice(level=c.level, expected_cost=c.cost, p_wrong=c.p_wrong, expected_wrong_loss=c.risk,
                                   expected_total=c.total)
            for c in p.choices
        ],
    )


def balance(b: BalanceView, currency: str) -> ponder_pb2.Balance:
    return ponder_pb2.Balance(
        tenant=b.tenant,
        budget=to_credits(b.budget_micros),
        spent=to_credits(b.spent_micros),
        reserved=to_credits(b.reserved_micros),
        remaining=to_credits(b.remaining_micros),
        window=b.window,
        window_start=timestamp(b.window_start),
        window_end=timestamp(b.window_end),
        currency=currency,
    )


def sample(s: SampleResult) -> ponder_pb2.Sample:
    return ponder_pb2.Sample(
        index=s.index,
        thinking=s.thinking,
        text=s.text,
        answer=s.answer,
        thinking_tokens=s.thinking_tokens,
        answer_tokens=s.answer_tokens,
        finish_reason=s.finish_reason,
        thinking_capped=s.thinking_capped,
        confidence=s.confidence,
    )


def tenant(b: BalanceView, currency: str) -> admin_pb2.Tenant:
    return admin_pb2.Tenant(
        name=b.tenant, enabled=b.enabled, balance=balance(b, currency), created_at=timestamp(b.created_at)
    )


def spend_record(row: dict[str, Any]) -> admin_pb2.SpendRecord:
    return admin_pb2.SpendRecord(
        request_id=row["request_id"],
        tenant=row["tenant"],
        at=timestamp(parse_iso(row["at"])),
        severity=SEVERITY_TO_PB[row["severity"]],
        needs_reasoning=bool(row["needs_reasoning"]),
        level=row["level"],
        thinking_cap=row["thinking_cap"],
        samples_planned=row["samples_planned"],
        usage=ponder_pb2.Usage(
            prompt_tokens=row["prompt_tokens"],
            thinking_tokens=row["thinking_tokens"],
            answer_tokens=row["answer_tokens"],
            forced_tokens=row["forced_tokens"],
            samples_run=row["samples_run"],
            samples_stopped=row["samples_stopped"],
            samples_pruned=row.get("samples_pruned") or 0,
            stop_reason=row.get("stop_reason") or "",
        ),
        reserved=to_credits(row["reserved_micros"]),
        cost=to_credits(row["cost_micros"]),
        latency_seconds=row["latency_ms"] / 1000,
        status=row["status"],
        error=row["error"],
        # Absent (None) for rows from before it was measured: the field stays unset.
        confidence_mean=row.get("confidence_mean"),
        confidence_min=row.get("confidence_min"),
        model=row.get("model") or "",
        verified=None if row.get("verified") is None else bool(row["verified"]),
    )
