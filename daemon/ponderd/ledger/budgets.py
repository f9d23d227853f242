"""The budgets seam of the request path: reserve, settle, refuse, read balances (a Protocol).

SQLite implements it today (ledger/sqlite/budgets.py); a shared backend for
fleets is a second implementation of the same Protocol.
"""

from __future__ import annotations

from typing import Any, Protocol, Sequence

from ponderd.ledger.types import BalanceView, Candidate, SpendRow


class Budgets(Protocol):
    """The ledger seam the request path uses; SQLite today, a shared backend next."""

    async def reserve(
        self, tenant: str, request_id: str, candidates: Sequence[Candidate], context: dict[str, Any],
        key_id: str | None = None,
    ) -> int:
        """Reserve the first candidate that fits the tenant's budget (and the calling key's own cap, if it
        has one: KeyBudgetExhausted when only that is short); return its index."""

    async def settle(self, row: SpendRow, prompt_text: str | None) -> int:
        """Release the request's reservation, charge its actual cost, log it; return the charge.

        If the backend cannot be written, the settlement is kept and retried
        (the reservation stays held meanwhile) and StorageUnavailable is raised.
        """

    async def refuse(self, row: SpendRow) -> None:
        """Log a request refused before reserving anything (kept and retried like a settle)."""

    async def balance(self, tenant: str) -> BalanceView:
        """The tenant's budget in its current window."""

    def unsettled(self) -> set[str]:
        """Requests whose settlement is waiting for the backend to take writes again."""

    async def retry_unsettled(self) -> int:
        """Write what is waiting; return how many went through."""
