"""The budgets seam of the request path, and its SQLite backend.

The request path only reserves, settles, refuses and reads balances through
`Budgets`; `SqliteBudgets` runs each as one transaction of the `Ledger` on
the store's owner thread. A shared backend for fleets (PostgreSQL with per-host
leases) is a second implementation of the same Protocol.
"""

from __future__ import annotations

from typing import Any, Sequence

from ponderd.clock import Clock
from ponderd.errors import StorageUnavailable
from ponderd.ledger.sqlite.ledger import Ledger
from ponderd.ledger.sqlite.store import Store
from ponderd.ledger.types import BalanceView, Candidate, SpendRow


class SqliteBudgets:
    """Budgets on the store's owner thread, with time from the injected clock."""

    def __init__(self, store: Store, ledger: Ledger, clock: Clock) -> None:
        self.store, self.ledger, self.clock = store, ledger, clock
        # Settlements and refusals the database refused (disk full): retried in
        # order by the daemon's health loop and at shutdown. Their reservations
        # stay held until then, so the sweeper never charges them a worst case.
        self._waiting: dict[str, tuple[bool, SpendRow, str | None]] = {}

    async def reserve(
        self, tenant: str, request_id: str, candidates: Sequence[Candidate], context: dict[str, Any],
        key_id: str | None = None,
    ) -> int:
        return await self.store.call(
            self.ledger.reserve_first_fitting, tenant, request_id, candidates, self.clock.now(), context, key_id
        )

    async def settle(self, row: SpendRow, prompt_text: str | None) -> int:
        return await self._write(True, row, prompt_text)

    async def refuse(self, row: SpendRow) -> None:
        await self._write(False, row, None)

    async def balance(self, tenant: str) -> BalanceView:
        return await self.store.call(self.ledger.balance, tenant, self.clock.now())

    def unsettled(self) -> set[str]:
        return set(self._waiting)

    async def retry_unsettled(self) -> int:
        done = 0
        for request_id, (settle, row, prompt) in list(self._waiting.items()):
            try:
                await self._apply(settle, row, prompt)
            except StorageUnavailable:
                break
            self._waiting.pop(request_id, None)
            done += 1
        return done

    async def _write(self, settle: bool, row: SpendRow, prompt_text: str | None) -> int:
        try:
            return await self._apply(settle, row, prompt_text)
        except StorageUnavailable:
            self._waiting[row.request_id] = (settle, row, prompt_text)
            raise

    async def _apply(self, settle: bool, row: SpendRow, prompt_text: str | None) -> int:
        if settle:
            return await self.store.call(self.ledger.settle, row, prompt_text)
        await self.store.call(self.ledger.record_refusal, row)
        return 0
