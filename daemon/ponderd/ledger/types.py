"""The ledger's values, whatever the backend: whole micro-credits, budget windows, balances, spend rows."""


from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Any, Protocol
from zoneinfo import ZoneInfo

MICROS = 1_000_000
WINDOWS = ("day", "week", "month")


def to_micros(amount: float) -> int:
    return round(amount * MICROS)


def to_credits(micros: int) -> float:
    return micros / MICROS


def window_start(now: datetime, window: str, zone: ZoneInfo) -> datetime:
    """Start of the window holding `now`: local midnight of the day, Monday, or 1st."""
    local = now.astimezone(zone)
    day = local.date()
    if window == "week":
        day -= timedelta(days=day.weekday())
    elif window == "month":
        day = day.replace(day=1)
    return _midnight(day, zone)


def window_end(start: datetime, window: str, zone: ZoneInfo) -> datetime:
    """The instant the window that began at `start` ends (the next one's start)."""
    day = start.astimezone(zone).date()
    if window == "day":
        day += timedelta(days=1)
    elif window == "week":
        day += timedelta(days=7)
    else:
        day = date(day.year + day.month // 12, day.month % 12 + 1, 1)
    return _midnight(day, zone)


def _midnight(day: date, zone: ZoneInfo) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=zone).astimezone(timezone.utc)


def iso(when: datetime) -> str:
    return when.astimezone(timezone.utc).isoformat(timespec="microseconds")


def parse_iso(text: str) -> datetime:
    return datetime.fromisoformat(text)


@dataclass(frozen=True)
class BalanceView:
    tenant: str
    enabled: bool
    budget_micros: int
    spent_micros: int
    reserved_micros: int
    window: str
    window_start: datetime
    window_end: datetime
    created_at: datetime

    @property
    def remaining_micros(self) -> int:
        return self.budget_micros - self.spent_micros - self.reserved_micros


class Candidate(Protocol):
    """A plan the ledger may reserve: the best first, in the caller's order."""

    @property
    def worst_case_micros(self) -> int:
        """The most the plan can cost, in micro-credits."""

    def to_json(self) -> dict[str, Any]:
        """The plan as stored with its reservation."""


@dataclass(frozen=True)
class SpendRow:
    """One request's settlement; written in the same transaction that releases its reservation."""

    request_id: str
    tenant: str
    at: str
    severity: str
    needs_reasoning: bool
    model_severity: str
    model_needs_reasoning: bool
    risk_model: str
    policy_version: str
    level: str
    thinking_cap: int
    answer_cap: int
    samples_planned: int
    prompt_tokens: int
    thinking_tokens: int
    answer_tokens: int
    forced_tokens: int
    samples_run: int
    samples_stopped: int
    cost_micros: int
    latency_ms: int
    status: str
    error: str = ""
    answer: str = ""
    # Over the samples that produced tokens; None when none did.
    confidence_mean: float | None = None
    confidence_min: float | None = None
    # The served model that ran it ("" before several models could be served).
    model: str = ""
    # Whether the answer passed the request's check; None when it sent none.
    verified: bool | None = None
    # Samples stopped for low confidence (they did not vote), and why sampling ended (stopping.py).
    samples_pruned: int = 0
    stop_reason: str = ""
