"""Reading a `--since` value: a span back from now, a named day, or an ISO date or time (UTC unless it says)."""

from __future__ import annotations

import re
from datetime import datetime, time, timedelta, timezone

_SPAN = re.compile(r"^\s*(\d+)\s*(m|min|h|d|w)\s*$", re.IGNORECASE)
_UNITS = {"m": "minutes", "min": "minutes", "h": "hours", "d": "days", "w": "weeks"}
FORMS = "a span (30m, 24h, 7d, 2w), today, yesterday, or an ISO date or time (2026-11-01, 2026-11-01T09:00)"


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """The instant `text` names, timezone-aware; ValueError saying which forms work otherwise."""
    now = now or datetime.now(timezone.utc)
    value = text.strip().lower()
    m = _SPAN.match(value)
    if m:
        return now - timedelta(**{_UNITS[m.group(2).lower()]: int(m.group(1))})
    midnight = datetime.combine(now.astimezone(timezone.utc).date(), time(0), timezone.utc)
    if value == "today":
        return midnight
    if value == "yesterday":
        return midnight - timedelta(days=1)
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"cannot read {text!r} as a time; use {FORMS}") from None
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)
