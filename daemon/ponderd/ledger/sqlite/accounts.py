"""Accounts and Maintenance on the store's owner thread (ledger/accounts.py's Protocols), time from the clock."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Callable, TypeVar

from sqlite_utils import Database

from ponderd.clock import Clock
from ponderd.ledger.keys import Keyring
from ponderd.ledger.sqlite import alerts, feedback, keys, retention, spend
from ponderd.ledger.sqlite.ledger import Ledger
from ponderd.ledger.sqlite.store import Store
from ponderd.ledger.types import BalanceView

T = TypeVar("T")


class SqliteAccounts:
    """Tenants, keys, spend, feedback and the maintenance jobs' SQL, one transaction each."""

    def __init__(self, store: Store, ledger: Ledger, keyring: Keyring, clock: Clock, host: str = "") -> None:
        self.store, self.ledger, self.keyring, self.clock = store, ledger, keyring, clock
        # This host's name, for spend lines by host (one host: all of them).
        self.host = host

    async def _mutate(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a change on the store thread, then refresh the in-memory keyring there too."""

        def both(db: Database) -> T:
            out = fn(db, *args)
            keys.refresh(self.keyring, db)
            return out

        return await self.store.call(both)

    def refresh_keyring(self) -> None:
        """Load the keyring now (start-up, before serving)."""
        self.store.call_sync(keys.refresh, self.keyring)

    async def create_tenant(self, name: str, budget_micros: int, window: str) -> tuple[BalanceView, str, str]:
        now = self.clock.now()

        def create(db: Database) -> tuple[BalanceView, str, str]:
            with db.atomic():
                view = self.ledger.create_tenant(db, name, budget_micros, window, now)
                key_id, token = keys.issue_key(db, name, "tenant", "created with the tenant", now)
            return view, key_id, token

        return await self._mutate(create)

    async def balances(self) -> list[BalanceView]:
        return await self.store.call(self.ledger.balances, self.clock.now())

    async def set_enabled(self, name: str, enabled: bool) -> BalanceView:
        return await self._mutate(self.ledger.set_enabled, name, enabled, self.clock.now())

    async def set_budget(self, name: str, budget_micros: int, window: str | None) -> BalanceView:
        return await self.store.call(self.ledger.set_budget, name, budget_micros, window, self.clock.now())

    async def issue_key(
        self, tenant: str | None, scope: str, label: str, expires_at: datetime | None = None,
        budget_micros: int | None = None,
    ) -> tuple[str, str]:
        return await self._mutate(keys.issue_key, tenant, scope, label, self.clock.now(), expires_at, budget_micros)

    async def set_key_budget(self, key_id: str, budget_micros: int | None) -> dict[str, Any]:
        return await self.store.call(keys.set_key_budget, key_id, budget_micros)

    async def rotate_key(self, key_id: str, overlap: timedelta, expires_at: datetime | None) -> dict[str, Any]:
        return await self._mutate(keys.rotate_key, key_id, overlap, expires_at, self.clock.now())

    async def record_key_use(self, used: dict[str, datetime]) -> int:
        return await self.store.call(keys.record_use, used)

    async def revoke_key(self, key_id: str) -> None:
        await self._mutate(keys.revoke_key, key_id, self.clock.now())

    async def list_keys(self, tenant: str | None) -> list[dict[str, Any]]:
        now = self.clock.now()

        def current(db: Database) -> list[dict[str, Any]]:
            self.ledger.renew_windows(db, now)  # what a key spent is this window's, even before the renewal job ran
            return keys.list_keys(db, tenant)

        return await self.store.call(current)

    async def spend_totals(
        self, since: datetime, until: datetime, tenant: str | None, by_host: bool = False
    ) -> list[dict[str, Any]]:
        rows = await self.store.call(spend.spend_totals, since, until, tenant)
        return [r | {"host": self.host} for r in rows] if by_host else rows

    async def spend_records(
        self, since: datetime, until: datetime, tenant: str | None, limit: int
    ) -> list[dict[str, Any]]:
        return list(await self.store.call(spend.spend_records, since, until, tenant, limit))

    async def record_feedback(
        self, tenant: str, request_id: str, correct: bool | None, true_severity: str | None,
        true_needs_reasoning: bool | None, comment: str,
    ) -> str:
        return await self.store.call(
            feedback.record, tenant, request_id, correct, true_severity, true_needs_reasoning, comment, self.clock.now()
        )

    async def claim_alert(
        self, tenant: str, window_start: datetime, kind: str, spent_micros: int, budget_micros: int
    ) -> bool:
        return await self.store.call(
            alerts.claim, tenant, window_start, kind, self.clock.now(), spent_micros, budget_micros
        )

    async def recent_alerts(self, limit: int) -> list[dict[str, Any]]:
        return await self.store.call(alerts.recent, limit)

    async def due_alerts(self, limit: int) -> list[dict[str, Any]]:
        return await self.store.call(alerts.due, self.clock.now(), limit)

    async def mark_alert(self, alert_id: int, error: str, next_attempt_at: datetime | None) -> None:
        await self.store.call(alerts.mark, alert_id, self.clock.now(), error, next_attempt_at)

    async def renew_windows(self) -> list[str]:
        return await self.store.call(self.ledger.renew_windows, self.clock.now())

    async def settle_orphans(self, live: set[str], created_before: datetime) -> list[str]:
        return await self.store.call(self.ledger.settle_orphans, live, created_before, self.clock.now())

    async def prune_prompts(self, cutoff: datetime) -> retention.Pruned:
        return await self.store.call(retention.prune, cutoff)
