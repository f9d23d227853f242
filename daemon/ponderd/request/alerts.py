"""Soft-limit alerts: once per tenant and window, when spend crosses `soft_limit` of the budget, or the budget runs out.

After each settlement the pipeline hands the tenant's balance here. When spent
reaches `soft_limit` (a fraction of the window's budget, from the tenant's
rules) an alert is raised once for that window: the ledger records it (its
unique key is what makes it once, across restarts too), then a structured log
line (`ponder.alerts`, JSON field `alert`) and a Prometheus counter
(`ponder_alerts_total{tenant, kind}`). A refusal for an exhausted budget raises
a `budget_exhausted` alert the same way. The ledger kept is this host's file:
on the fleet ledger each host alerts once per window for what it sees
(docs/policy.md).
"""

from __future__ import annotations

import logging
from typing import Any, Callable

from ponderd.errors import PonderError
from ponderd.ledger.accounts import Alerts
from ponderd.ledger.types import BalanceView, iso, to_credits
from ponderd.planning.policy import TenantRules

log = logging.getLogger("ponder.alerts")

SOFT_LIMIT, EXHAUSTED = "soft_limit", "budget_exhausted"


class SoftLimits:
    def __init__(self, alerts: Alerts, counted: Callable[[str, str], None] = lambda tenant, kind: None) -> None:
        self.alerts = alerts
        self.counted = counted

    async def settled(self, view: BalanceView, rules: TenantRules) -> None:
        """After a settlement: alert if spend has crossed the tenant's soft limit in this window."""
        if rules.soft_limit and view.budget_micros > 0 and view.spent_micros >= rules.soft_limit * view.budget_micros:
            await self._raise(view, SOFT_LIMIT, rules.soft_limit)

    async def exhausted(self, view: BalanceView, rules: TenantRules) -> None:
        """After a refusal for an exhausted budget (only for tenants with a soft limit: they asked to hear)."""
        if rules.soft_limit:
            await self._raise(view, EXHAUSTED, rules.soft_limit)

    async def _raise(self, view: BalanceView, kind: str, fraction: float) -> None:
        try:
            new = await self.alerts.claim_alert(view.tenant, view.window_start, kind, view.spent_micros, view.budget_micros)
        except PonderError as exc:  # an alert never fails the request; the next settlement tries again
            log.warning("could not record the %s alert of tenant %r: %s", kind, view.tenant, exc.message)
            return
        if not new:
            return
        entry: dict[str, Any] = {
            "kind": kind, "tenant": view.tenant, "window": view.window, "window_start": iso(view.window_start),
            "spent": to_credits(view.spent_micros), "budget": to_credits(view.budget_micros), "soft_limit": fraction,
        }
        log.warning(
            "alert %s: tenant %r has spent %.6f of its %.6f credit budget this %s (soft limit %.0f%%)",
            kind, view.tenant, entry["spent"], entry["budget"], view.window, fraction * 100,
            extra={"fields": {"alert": entry}},
        )
        self.counted(view.tenant, kind)
