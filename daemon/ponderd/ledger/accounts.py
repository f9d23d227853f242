"""The ledger's admin seams: tenants, API keys, spend reports, feedback, and the maintenance jobs (Protocols).

The Admin service, the Ponder service's Feedback and the scheduled jobs use
these; the request path's own seams are `Budgets` (budgets.py) and
`Idempotency` (idempotency.py). SQLite implements all of them today
(ledger/sqlite/accounts.py); a second backend implements the same Protocols.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Protocol

from ponderd.ledger.types import BalanceView


class Accounts(Protocol):
    """Tenants, keys, spend and feedback; every change that touches keys or tenants refreshes the keyring."""

    async def create_tenant(self, name: str, budget_micros: int, window: str) -> tuple[BalanceView, str, str]:
        """Create the tenant and its first key in one transaction; return (balance, key_id, token)."""

    async def balances(self) -> list[BalanceView]:
        """Every tenant's balance in its current window."""

    async def set_enabled(self, name: str, enabled: bool) -> BalanceView:
        """Enable or disable a tenant (a disabled tenant's keys are refused)."""

    async def set_budget(self, name: str, budget_micros: int, window: str | None) -> BalanceView:
        """Change a tenant's budget, and its window when one is given."""

    async def issue_key(
        self, tenant: str | None, scope: str, label: str, expires_at: datetime | None = None,
        budget_micros: int | None = None,
    ) -> tuple[str, str]:
        """A new key for a tenant (or an admin key, tenant None), expiring at `expires_at` (None: never),
        with a cap of its own of `budget_micros` per the tenant's window (None: none);
        return (key_id, token). Only its hash is kept."""

    async def set_key_budget(self, key_id: str, budget_micros: int | None) -> dict[str, Any]:
        """Set (or, None, remove) a tenant's key's own cap; return its row as list_keys gives it."""

    async def rotate_key(self, key_id: str, overlap: timedelta, expires_at: datetime | None) -> dict[str, Any]:
        """A successor of the key (same tenant, scope, label); the old one stays valid for `overlap`, then expires.

        Returns key_id, token, expires_at (the new key's; None: never), old_key_id, old_expires_at.
        """

    async def revoke_key(self, key_id: str) -> None:
        """Revoke a key at once."""

    async def list_keys(self, tenant: str | None) -> list[dict[str, Any]]:
        """Keys (never secrets): key_id, tenant, scope, label, created_at, revoked_at, expires_at,
        last_used_at, replaced_by (instants as ISO strings or None), budget_micros (None: no cap of its own)
        and spent_micros (in the tenant's current window)."""

    async def record_key_use(self, used: dict[str, datetime]) -> int:
        """Write when keys were last used (a batch the keyring collected); return how many rows changed."""

    async def spend_totals(
        self, since: datetime, until: datetime, tenant: str | None, by_host: bool = False
    ) -> list[dict[str, Any]]:
        """Requests, tokens and cost per tenant (and host, with `by_host`: key "host") and status between two instants."""

    async def spend_records(
        self, since: datetime, until: datetime, tenant: str | None, limit: int
    ) -> list[dict[str, Any]]:
        """The spend records between two instants, newest first."""

    async def record_feedback(
        self, tenant: str, request_id: str, correct: bool | None, true_severity: str | None,
        true_needs_reasoning: bool | None, comment: str,
    ) -> str:
        """Keep feedback on the tenant's own request (with its prompt); return the feedback id."""


class Alerts(Protocol):
    """Alerts raised once per tenant, window and kind (request/alerts.py), kept in the ledger so a restart does not repeat them."""

    async def claim_alert(
        self, tenant: str, window_start: datetime, kind: str, spent_micros: int, budget_micros: int
    ) -> bool:
        """Record the alert unless the tenant's window has it already; True when this call recorded it."""

    async def recent_alerts(self, limit: int) -> list[dict[str, Any]]:
        """The latest alerts, newest first, with their delivery state."""

    async def due_alerts(self, limit: int) -> list[dict[str, Any]]:
        """Alerts the webhook has not delivered and whose next attempt is due, oldest first."""

    async def mark_alert(self, alert_id: int, error: str, next_attempt_at: datetime | None) -> None:
        """Record an attempt: delivered (error "") or failed, to try again at next_attempt_at."""


class Maintenance(Protocol):
    """What the scheduled jobs ask of the ledger."""

    async def renew_windows(self) -> list[str]:
        """Start a new window for every tenant whose window ended; return their names."""

    async def settle_orphans(self, live: set[str], created_before: datetime) -> list[str]:
        """Settle, at their reserved worst case, reservations no live request owns; return their request ids."""

    async def prune_prompts(self, cutoff: datetime) -> Any:
        """Drop prompts, feedback texts and answers older than `cutoff`; return what was dropped (with `summary`)."""
