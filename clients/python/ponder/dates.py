"""Times on the command line: ISO 8601, or relative to now (`7d`, `12h`, `30m`, `2w`, `today`, `yesterday`, `now`).

Relative times are in UTC: `today` is today's midnight UTC, `yesterday` the one
before, `7d` seven days before now. An ISO time without a zone is UTC.
"""

from __future__ import annotations

import argparse
import re
from datetime import datetime, timedelta, timezone

UNITS = {"m": timedelta(minutes=1), "h": timedelta(hours=1), "d": timedelta(days=1), "w": timedelta(weeks=1)}
_AGO = re.compile(r"^(\d+)\s*([mhdw])$")


def parse_when(text: str, now: datetime | None = None) -> datetime:
    """The moment `text` names; ValueError saying what is accepted when it names none."""
    now = now or datetime.now(timezone.utc)
    word = text.strip().lower()
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    if word == "now":
        return now
    if word == "today":
        return midnight
    if word == "yesterday":
        return midnight - timedelta(days=1)
    ago = _AGO.match(word)
    if ago:
        return now - int(ago.group(1)) * UNITS[ago.group(2)]
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"{text!r} is not a time: use ISO 8601 (2026-11-01 or 2026-11-01T09:30), "
            "or 30m, 12h, 7d, 2w (ago), today, yesterday, now"
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


def when_argument(text: str) -> datetime:
    """argparse `type=`: a bad value is a one-line usage error, not a traceback."""
    try:
        return parse_when(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


_SPAN = re.compile(r"^(\d+)\s*([smhdw])$")
SPAN_UNITS = {"s": timedelta(seconds=1), **UNITS}


def parse_duration(text: str) -> timedelta:
    """A span of time: `90s`, `30m`, `12h`, `30d`, `2w`; ValueError saying what is accepted otherwise."""
    span = _SPAN.match(text.strip().lower())
    if not span:
        raise ValueError(f"{text!r} is not a duration: use a whole number with s, m, h, d or w (90s, 30m, 12h, 30d, 2w)")
    return int(span.group(1)) * SPAN_UNITS[span.group(2)]


def duration_argument(text: str) -> timedelta:
    """argparse `type=` for a duration."""
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def future_argument(text: str) -> datetime:
    """argparse `type=` for a time to come: ISO 8601 (UTC without a zone); the daemon refuses one in the past."""
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a time: use ISO 8601, e.g. 2026-12-31 or 2026-12-31T18:00 (UTC unless a zone is given)"
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)
