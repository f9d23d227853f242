"""Alert delivery: POST each alert in the outbox (the ledger's alerts table) to `[alerts] webhook`, signed.

The `deliver_alerts` job (every 10 s, and `ponder admin job run deliver_alerts`)
takes the alerts not yet delivered whose next attempt is due, oldest first, and
POSTs each as JSON:

    {"id": "…", "kind": "soft_limit", "tenant": "…", "window_start": "…", "spent": 1.6,
     "budget": 2.0, "at": "…"}

with `X-Ponder-Signature: sha256=<hex HMAC-SHA256 of the body, keyed by the
secret file's content>` and `X-Ponder-Event-Id` (the same id: a receiver that
keeps ids drops a repeat). A 2xx answer marks it delivered; anything else (or
no answer in 10 s) is tried again after a backoff that doubles from 5 s to an
hour. The outbox is in the ledger file, so an alert raised before a crash or a
restart is delivered after it. Delivery is at least once: a crash between the
receiver's 2xx and the mark repeats that one POST, with the same event id.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import urllib.error
import urllib.request
from datetime import timedelta
from typing import Any

from ponderd.clock import Clock
from ponderd.ledger.accounts import Alerts
from ponderd.ledger.types import to_credits
from ponderd.planning.policy_file import PolicyHolder

log = logging.getLogger("ponder.alerts")

BATCH = 50
TIMEOUT = 10.0
FIRST_BACKOFF, MAX_BACKOFF = 5.0, 3600.0


def backoff(attempts: int) -> timedelta:
    """The wait before the next try after `attempts` failed ones (1, 2, …)."""
    return timedelta(seconds=min(FIRST_BACKOFF * 2 ** max(attempts - 1, 0), MAX_BACKOFF))


def event(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": f"{row['tenant']}/{row['window_start']}/{row['kind']}",
        "kind": row["kind"], "tenant": row["tenant"], "window_start": row["window_start"],
        "spent": to_credits(row["spent_micros"]), "budget": to_credits(row["budget_micros"]), "at": row["at"],
    }


def sign(secret: bytes, body: bytes) -> str:
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def _post(url: str, body: bytes, headers: dict[str, str]) -> str:
    """POST; "" on a 2xx answer, else why not (never raises)."""
    request = urllib.request.Request(url, data=body, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
            return "" if 200 <= response.status < 300 else f"HTTP {response.status}"
    except urllib.error.HTTPError as exc:
        return f"HTTP {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        return str(getattr(exc, "reason", exc))


class Webhook:
    def __init__(self, policies: PolicyHolder, alerts: Alerts, clock: Clock) -> None:
        self.policies, self.alerts, self.clock = policies, alerts, clock

    async def deliver(self) -> str:
        settings = self.policies.current().alerts
        if not settings.webhook or settings.secret_file is None:
            return "no webhook configured ([alerts] webhook)"
        due = await self.alerts.due_alerts(BATCH)
        if not due:
            return "no alerts to deliver"
        try:
            secret = settings.secret_file.read_bytes().strip()
        except OSError as exc:
            return f"cannot read the webhook secret {settings.secret_file} ({exc.strerror}); {len(due)} alert(s) wait"
        delivered = 0
        for row in due:
            body = json.dumps(event(row), sort_keys=True).encode()
            headers = {
                "Content-Type": "application/json", "User-Agent": "ponderd",
                "X-Ponder-Signature": sign(secret, body), "X-Ponder-Event-Id": event(row)["id"],
            }
            error = await asyncio.to_thread(_post, settings.webhook, body, headers)
            if error:
                retry = self.clock.now() + backoff(row["attempts"] + 1)
                log.warning("alert %s for tenant %r not delivered (%s); next try at %s",
                            row["kind"], row["tenant"], error, retry.isoformat())
                await self.alerts.mark_alert(row["id"], error, retry)
            else:
                await self.alerts.mark_alert(row["id"], "", None)
                delivered += 1
        return f"delivered {delivered} of {len(due)} due alert(s)"
