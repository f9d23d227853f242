"""A fleet host's side of the central ledger: leases, shipping, keys, and the Budgets and Accounts it gives the daemon.

In the manner of Google's Doorman, a host does not ask PostgreSQL for every
request. It leases a share of each tenant's window budget, and its local
SQLite file (ledger/sqlite/, in leased mode) holds that share as the tenant's
budget there: reservations and settlements stay local transactions with the
file's invariant (spent + reserved <= leased). In the background, once every
`sync_seconds`, the host ships its spend records (idempotent by request id),
renews leases before they run low or expire, and re-reads keys; a request that
finds its lease too small asks for more at once. When PostgreSQL is
unreachable the host serves within the leases it holds, refuses beyond them
saying so, and freezes a lease that expires unrenewed; records wait in the
file and ship exactly once when it is back.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Awaitable, Callable, Sequence
from zoneinfo import ZoneInfo

import psycopg
import psycopg_pool
from psycopg.rows import dict_row

from ponderd.clock import Clock
from ponderd.errors import BudgetExhausted, FailedPrecondition, NotFound, QuotaDetail, Unavailable
from ponderd.ledger.keys import Keyring, write_credential
from ponderd.ledger.postgres import central, schema
from ponderd.ledger.sqlite.accounts import SqliteAccounts
from ponderd.ledger.sqlite.budgets import SqliteBudgets
from ponderd.ledger.sqlite.ledger import Ledger
from ponderd.ledger.sqlite.store import Store
from ponderd.ledger.types import MICROS, BalanceView, Candidate, SpendRow, iso, to_credits, to_micros
from ponderd.settings import LedgerSettings

log = logging.getLogger("ponder.fleet")

# What "the central ledger cannot be reached" looks like from here.
UNREACHABLE = (psycopg.Error, psycopg_pool.PoolTimeout, OSError)
SHIP_BATCH = 500


@dataclass
class Lease:
    granted_micros: int
    expires_at: datetime
    budget_micros: int
    window_start: datetime
    frozen: bool = False


class Fleet:
    """The host's connection to the central ledger and the leases it holds."""

    def __init__(
        self, settings: LedgerSettings, store: Store, ledger: Ledger, keyring: Keyring, clock: Clock,
        zone: ZoneInfo, timezone: str, state_dir: Any, quickstart: tuple[str, int, str] | None, pool_size: int = 4,
    ) -> None:
        """`quickstart`: (tenant, budget_micros, window) to create fleet-wide on first start, with this host's local.token."""
        self.settings, self.store, self.ledger, self.keyring, self.clock = settings, store, ledger, keyring, clock
        self.zone, self.timezone, self.state_dir, self.quickstart = zone, timezone, state_dir, quickstart
        self.host = settings.host
        self.pool: Any = psycopg_pool.AsyncConnectionPool(
            settings.dsn, min_size=1, max_size=pool_size, open=False, check=psycopg_pool.AsyncConnectionPool.check_connection,
            kwargs={"row_factory": dict_row, "autocommit": True, "connect_timeout": 5},
        )
        self.leases: dict[str, Lease] = {}
        self._locks: dict[str, asyncio.Lock] = collections.defaultdict(asyncio.Lock)
        self._spend: dict[str, collections.deque[tuple[float, int]]] = collections.defaultdict(collections.deque)
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._keys_read = 0.0
        self.reachable = True
        self._failed_at = 0.0
        self.shipped = 0
        self.grants = 0  # lease transactions sent (bench/fleet.py counts the traffic)
        # For the metrics (serve/telemetry.py), read at scrape time:
        self.synced_at = 0.0  # monotonic time of the last sync that reached the central ledger (0: none yet)
        self.unspent: dict[str, int] = {}  # per tenant, what the lease has left here, as of the last look
        self.unshipped_records = 0  # spend records in the local file the central ledger does not have yet
        self.lease_calls: collections.Counter[str] = collections.Counter()  # lease transactions answered, by kind
        # Request ids of this host's running idempotency claims (ledger/postgres/idempotency.py), kept alive each sync.
        self.heartbeats: Callable[[], set[str]] = set
        # Puts a central policy version in force here: (text, sha256, version); set by the server.
        self.on_policy: Callable[[str, str, int], Awaitable[None]] | None = None
        self.policy_seen = 0  # the newest central policy version this host has handled

    # life ----------------------------------------------------------------

    async def start(self) -> None:
        """Connect, migrate, write this host's credentials, load keys, ship what waits; then sync in the background."""
        where = schema.safe_dsn(self.settings.dsn)
        try:
            # One plain connection first: its error says why (refused, auth, TLS), where the pool's would not.
            probe = await psycopg.AsyncConnection.connect(self.settings.dsn, connect_timeout=10)
            await probe.close()
            await self.pool.open(wait=True, timeout=15)
        except UNREACHABLE as exc:
            await self.pool.close()
            raise FailedPrecondition(
                f"cannot reach the central ledger ({where}): {_reason(exc)}; check ledger.dsn (PONDER_LEDGER_DSN) "
                "and that PostgreSQL is up and lets this host in"
            ) from None
        try:
            async with self.pool.connection() as conn:
                await schema.migrate(conn, self.timezone)
                await self._bootstrap(conn)
            await self.refresh_keys()
            await self._ship()
        except BaseException:
            await self.pool.close()
            raise
        self.synced_at = time.monotonic()
        await self._count_unshipped()
        self._tasks = [asyncio.ensure_future(self._sync_loop()), asyncio.ensure_future(self._listen())]
        log.info("fleet ledger: host %r joined %s (schema %d)", self.host, where, schema.VERSION)

    async def stop(self) -> None:
        """Ship every record, give the leases back, close the pool (what cannot be shipped waits in the file)."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        try:
            await self._ship()
            async with self.pool.connection(timeout=5) as conn:
                returned = await central.give_back(conn, self.host, self.clock.now())
            log.info("fleet ledger: gave back %d lease(s)", returned)
        except UNREACHABLE as exc:
            log.warning("fleet ledger: unreachable at shutdown (%s); leases expire by themselves", _reason(exc))
        await self.pool.close()

    async def _bootstrap(self, conn: Any) -> None:
        now = self.clock.now()
        admin = self.state_dir / "admin.token"
        if not admin.exists():
            _, token = await central.issue_key(conn, None, "admin", f"admin key of host {self.host}", now)
            write_credential(admin, token)
            log.info("wrote an admin key of the fleet to %s (mode 0600)", admin)
        if self.quickstart is not None:
            name, budget, window = self.quickstart
            if await central.tenant_info(conn, name) is None:
                await central.create_tenant(conn, name, budget, window, now, self.zone, with_key=False)
            local = self.state_dir / "local.token"
            if not local.exists():
                _, token = await central.issue_key(conn, name, "tenant", f"quickstart on host {self.host}", now)
                write_credential(local, token)

    # keys ----------------------------------------------------------------

    async def refresh_keys(self) -> None:
        async with self.pool.connection(timeout=5) as conn:
            keys, tenants = await central.keyring_rows(conn)
        # Every tenant has a row in the local file (with no lease yet), for the rows that refer to it.
        await self.store.call(self.ledger.ensure_tenants, tenants, self.clock.now())
        self.keyring.load(keys, {t["name"]: t["enabled"] for t in tenants})
        self._keys_read = time.monotonic()

    async def _listen(self) -> None:
        """Re-read keys when any host changes them (NOTIFY); the sync loop's poll is the fallback."""
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(self.settings.dsn, autocommit=True, connect_timeout=5)
                async with conn:
                    await conn.execute(f"LISTEN {central.NOTIFY_CHANNEL}")
                    await conn.execute(f"LISTEN {central.POLICY_CHANNEL}")
                    await self.refresh_keys()
                    await self.check_policy()
                    async for note in conn.notifies():
                        if note.channel == central.POLICY_CHANNEL:
                            await self.check_policy()
                        else:
                            await self.refresh_keys()
            except UNREACHABLE:
                await asyncio.sleep(self.settings.keys_poll_seconds)

    # policy versions -----------------------------------------------------

    async def publish_policy(self, text: str, sha256: str) -> int:
        """Store this host's policy (just reloaded) as the fleet's newest version; every host picks it up."""
        try:
            async with self.pool.connection(timeout=5) as conn:
                version = await central.publish_policy(conn, text, sha256, self.host, self.clock.now())
        except UNREACHABLE as exc:
            raise Unavailable(
                f"the policy is in force on this host, but the central ledger ({schema.safe_dsn(self.settings.dsn)}) "
                f"is unreachable ({_reason(exc)}), so the other hosts do not have it; reload again once it is back"
            ) from None
        self.policy_seen = max(self.policy_seen, version)
        log.info("fleet ledger: policy %s stored as central version %d", sha256[:12], version)
        return version

    async def check_policy(self) -> None:
        """Put the newest central policy version in force here, if this host has not handled it yet."""
        async with self.pool.connection(timeout=5) as conn:
            latest = await central.latest_policy(conn)
        if latest is None or latest["version"] <= self.policy_seen:
            return
        self.policy_seen = latest["version"]
        if self.on_policy is not None:
            await self.on_policy(latest["text"], latest["sha256"], latest["version"])

    # leases --------------------------------------------------------------

    def _target(self, tenant: str, budget_micros: int) -> int:
        """The lease to hold: the recent rate's worth of `lease_horizon_seconds`, at least `min_lease`,
        at most `max_lease_fraction` of the budget (a request that needs more still gets what it needs)."""
        s = self.settings
        spent = self._spend[tenant]
        horizon = time.monotonic() - s.lease_seconds
        while spent and spent[0][0] < horizon:
            spent.popleft()
        # Over what was seen, up to a lease's length back: a burst that began a second ago is its own rate.
        seen = time.monotonic() - spent[0][0] if spent else s.lease_seconds
        rate = sum(c for _, c in spent) / max(seen, s.sync_seconds)
        want = max(to_micros(s.min_lease), int(rate * s.lease_horizon_seconds))
        return min(want, int(budget_micros * s.max_lease_fraction))

    async def acquire(self, tenant: str, need_micros: int) -> bool:
        """Top the lease up so `need_micros` fits (and the target is held); False when the ledger is unreachable."""
        async with self._locks[tenant]:
            lease = self.leases.get(tenant)
            local = await self._local(tenant)
            if lease is not None and not lease.frozen and local is not None and local.remaining_micros >= need_micros:
                return True  # another request's grant made room meanwhile
            if not self.reachable and time.monotonic() - self._failed_at < self.settings.sync_seconds:
                return False  # it failed a moment ago: the sync loop retries; requests do not wait on it
            try:
                if lease is None:  # the first lease: learn the budget (and any share held from before a restart)
                    await self._grant(tenant, 0, kind="grant")
                    lease, local = self.leases[tenant], await self._local(tenant)
                remaining = max(local.remaining_micros, 0) if local is not None else 0
                want = max(need_micros, self._target(tenant, lease.budget_micros)) - remaining
                await self._grant(tenant, max(want, 0), need_micros - remaining, kind="grant")
            except UNREACHABLE as exc:
                self._unreachable(exc)
                return False
            return True

    async def _grant(self, tenant: str, want: int, need: int = 0, kind: str = "renewal") -> None:
        """Ask for `want` more (0: renew; < 0: give some back); make the local file hold the total the answer names.

        Giving back shrinks the local budget first, so this host can never spend what the pool has taken back.
        """
        now = self.clock.now()
        if want < 0:
            local = await self._local(tenant)
            if local is None or local.remaining_micros <= 0:
                want = 0
            else:
                want = -await self.store.call(self.ledger.shrink, tenant, min(-want, local.remaining_micros))
        # Shielded: a request cancelled mid-grant leaves a whole transaction, and the totals heal the rest.
        g = await asyncio.shield(self._grant_call(tenant, want, now, need))
        view = await self.store.call(
            self.ledger.apply_lease, tenant, g.enabled, g.window, g.window_start, g.granted_micros, g.created_at, now
        )
        self.leases[tenant] = Lease(g.granted_micros, g.expires_at, g.budget_micros, g.window_start)
        self.lease_calls[kind] += 1
        self.unspent[tenant] = max(view.remaining_micros, 0)

    async def _grant_call(self, tenant: str, want: int, now: datetime, need: int = 0) -> central.Grant:
        self.grants += 1
        async with self.pool.connection(timeout=2) as conn:
            return await central.grant(
                conn, tenant, self.host, want, self.settings.lease_seconds, now, self.zone, need_micros=max(need, 0)
            )

    async def _local(self, tenant: str) -> BalanceView | None:
        try:
            return await self.store.call(self.ledger.balance, tenant, self.clock.now())
        except NotFound:
            return None

    def spent(self, tenant: str, micros: int) -> None:
        """Note a settled charge (the lease's rate). Records ship with the next sync, in batches."""
        if micros:
            self._spend[tenant].append((time.monotonic(), micros))

    # the background sync -------------------------------------------------

    async def _sync_loop(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), self.settings.sync_seconds)
            except asyncio.TimeoutError:
                pass
            self._wake.clear()
            await self.sync_once()

    async def sync_once(self) -> None:
        """Ship, renew what runs low or expires soon, re-read keys when due; freeze leases that ran out."""
        try:
            await self._ship()
            live = self.heartbeats()
            if live:
                async with self.pool.connection(timeout=2) as conn:
                    await central.heartbeat(conn, self.host, live, self.clock.now())
            await self._renew()
            if time.monotonic() - self._keys_read >= self.settings.keys_poll_seconds:
                await self.refresh_keys()
                await self.check_policy()
            if not self.reachable:
                log.info("fleet ledger: reachable again; shipped what waited")
            self.reachable = True
            self.synced_at = time.monotonic()
        except UNREACHABLE as exc:
            self._unreachable(exc)
        except NotFound as exc:  # a tenant was removed centrally
            log.warning("fleet ledger: %s", exc)
        await self._freeze_expired()
        await self._count_unshipped()

    async def _count_unshipped(self) -> None:
        self.unshipped_records = await self.store.call(self.ledger.unshipped_count)

    async def _ship(self) -> None:
        while True:
            rows = await self.store.call(self.ledger.unshipped, SHIP_BATCH)
            if not rows:
                return
            async with self.pool.connection(timeout=2) as conn:
                new = await central.ship(conn, self.host, [_jsonable(r) for r in rows], self.clock.now())
            await self.store.call(self.ledger.mark_shipped, [r["request_id"] for r in rows])
            self.shipped += len(new)
            if len(rows) < SHIP_BATCH:
                return

    async def _renew(self) -> None:
        now = self.clock.now()
        for tenant, lease in list(self.leases.items()):
            local = await self._local(tenant)
            if local is None:
                continue
            self.unspent[tenant] = max(local.remaining_micros, 0)
            target = self._target(tenant, lease.budget_micros)
            soon = lease.expires_at - now < timedelta(seconds=self.settings.lease_seconds / 2)
            idle = local.remaining_micros > 2 * target + to_micros(self.settings.min_lease)
            if soon or local.remaining_micros < target / 2 or lease.frozen or idle:
                async with self._locks[tenant]:
                    # Top up to the target; a lease well above it (the rate fell) gives the excess back.
                    await self._grant(tenant, target - max(local.remaining_micros, 0))

    async def _freeze_expired(self) -> None:
        """Stop using a lease a little before the central ledger counts it expired (two sync periods early)."""
        margin = timedelta(seconds=2 * self.settings.sync_seconds)
        now = self.clock.now()
        for tenant, lease in self.leases.items():
            if not lease.frozen and now >= lease.expires_at - margin:
                await self.store.call(self.ledger.freeze, tenant)
                lease.frozen = True
                log.warning("fleet ledger: the lease of tenant %r expired unrenewed; this host takes no new requests "
                            "for it until the central ledger is reachable", tenant)

    def _unreachable(self, exc: BaseException) -> None:
        self._failed_at = time.monotonic()
        if self.reachable:
            log.warning("fleet ledger: the central ledger is unreachable (%s); serving within held leases", _reason(exc))
        self.reachable = False

    # what a request sees -------------------------------------------------

    async def central_balance(self, tenant: str) -> BalanceView:
        async with self.pool.connection(timeout=2) as conn:
            return await central.balance(conn, tenant, self.clock.now(), self.zone)

    def refusal(self, tenant: str, need: int, local: BudgetExhausted | None, reached: bool) -> BudgetExhausted:
        detail = local.detail if local else QuotaDetail(tenant, need, 0, iso(self.clock.now()))
        left = to_credits(max(detail.remaining_micros, 0))
        if not reached:
            return BudgetExhausted(
                f"tenant {tenant!r}: this host's lease of the fleet budget has {left:.6f} credits left, less than the "
                f"{to_credits(need):.6f} the cheapest allowed plan needs, and the central ledger (PostgreSQL, "
                "ledger.dsn) is unreachable, so no more can be leased; retry when it is back, or on another host",
                detail,
            )
        return BudgetExhausted(
            f"tenant {tenant!r}: the cheapest allowed plan needs {to_credits(need):.6f} credits and the fleet's budget "
            f"has no more to lease to this host (it is spent, or held in other hosts' leases until they renew); "
            f"the budget renews at {detail.window_end} (or ask an admin to raise it)",
            detail,
        )


class FleetBudgets:
    """Budgets (ledger/budgets.py) for a fleet host: the local file's, within the leases the fleet grants."""

    def __init__(self, local: SqliteBudgets, fleet: Fleet) -> None:
        self.local, self.fleet = local, fleet

    async def reserve(
        self, tenant: str, request_id: str, candidates: Sequence[Candidate], context: dict[str, Any],
        key_id: str | None = None,
    ) -> int:
        # Leases are per tenant: a key's own cap is not enforced fleet-wide (the fleet's accounts refuse
        # to set one), so key_id is not used here.
        need = min(c.worst_case_micros for c in candidates)
        if tenant not in self.fleet.leases:
            if not await self.fleet.acquire(tenant, need):
                raise self.fleet.refusal(tenant, need, None, False)
        try:
            return await self.local.reserve(tenant, request_id, candidates, context)
        except BudgetExhausted:
            pass
        reached = await self.fleet.acquire(tenant, need)
        try:
            return await self.local.reserve(tenant, request_id, candidates, context)
        except BudgetExhausted as exc:
            raise self.fleet.refusal(tenant, need, exc, reached) from None

    async def settle(self, row: SpendRow, prompt_text: str | None) -> int:
        charged = await self.local.settle(row, prompt_text)
        self.fleet.spent(row.tenant, charged)
        return charged

    async def refuse(self, row: SpendRow) -> None:
        try:
            await self.local.refuse(row)
        except NotFound:  # refused before this host ever held a lease for the tenant: no local row to log against
            log.info("fleet ledger: refusal of %s for tenant %r not logged here (no lease held)", row.request_id, row.tenant)

    async def balance(self, tenant: str) -> BalanceView:
        try:
            return await self.fleet.central_balance(tenant)
        except UNREACHABLE:
            return await self.local.balance(tenant)  # this host's share, while the fleet's is out of reach

    def unsettled(self) -> set[str]:
        return self.local.unsettled()

    async def retry_unsettled(self) -> int:
        return await self.local.retry_unsettled()


KEY_CAPS_LOCAL_ONLY = (
    "a key's own budget cap is enforced on a single host's ledger only, for now: with [ledger] backend = "
    "\"postgres\" leases are per tenant, so cap the tenant instead ('ponder admin budget set') or run the "
    "key's service on a host with the SQLite ledger"
)


class PostgresAccounts:
    """Accounts (ledger/accounts.py) on the central ledger; feedback stays with the host that answered."""

    def __init__(self, fleet: Fleet, local: SqliteAccounts) -> None:
        self.fleet, self.local = fleet, local

    def _conn(self) -> Any:
        return self.fleet.pool.connection(timeout=5)

    async def _changed(self) -> None:
        await self.fleet.refresh_keys()

    async def create_tenant(self, name: str, budget_micros: int, window: str) -> tuple[BalanceView, str, str]:
        now = self.fleet.clock.now()
        async with self._conn() as conn:
            key_id, token = await central.create_tenant(conn, name, budget_micros, window, now, self.fleet.zone)
            view = await central.balance(conn, name, now, self.fleet.zone)
        await self._changed()
        return view, key_id, token

    async def balances(self) -> list[BalanceView]:
        async with self._conn() as conn:
            return await central.balances(conn, self.fleet.clock.now(), self.fleet.zone)

    async def set_enabled(self, name: str, enabled: bool) -> BalanceView:
        async with self._conn() as conn:
            await central.set_enabled(conn, name, enabled)
            view = await central.balance(conn, name, self.fleet.clock.now(), self.fleet.zone)
        await self._changed()
        return view

    async def set_budget(self, name: str, budget_micros: int, window: str | None) -> BalanceView:
        now = self.fleet.clock.now()
        async with self._conn() as conn:
            await central.set_budget(conn, name, budget_micros, window, now, self.fleet.zone)
            return await central.balance(conn, name, now, self.fleet.zone)

    async def issue_key(
        self, tenant: str | None, scope: str, label: str, expires_at: datetime | None = None,
        budget_micros: int | None = None,
    ) -> tuple[str, str]:
        if budget_micros is not None:
            raise FailedPrecondition(KEY_CAPS_LOCAL_ONLY)
        async with self._conn() as conn:
            key = await central.issue_key(conn, tenant, scope, label, self.fleet.clock.now(), expires_at)
        await self._changed()
        return key

    async def set_key_budget(self, key_id: str, budget_micros: int | None) -> dict[str, Any]:
        raise FailedPrecondition(KEY_CAPS_LOCAL_ONLY)

    async def rotate_key(self, key_id: str, overlap: timedelta, expires_at: datetime | None) -> dict[str, Any]:
        async with self._conn() as conn:
            out = await central.rotate_key(conn, key_id, overlap, expires_at, self.fleet.clock.now())
        await self._changed()
        return out

    async def record_key_use(self, used: dict[str, datetime]) -> int:
        async with self._conn() as conn:
            return await central.record_key_use(conn, used)

    async def revoke_key(self, key_id: str) -> None:
        async with self._conn() as conn:
            await central.revoke_key(conn, key_id, self.fleet.clock.now())
        await self._changed()

    async def list_keys(self, tenant: str | None) -> list[dict[str, Any]]:
        async with self._conn() as conn:
            return await central.list_keys(conn, tenant)

    async def spend_totals(
        self, since: datetime, until: datetime, tenant: str | None, by_host: bool = False
    ) -> list[dict[str, Any]]:
        async with self._conn() as conn:
            return await central.spend_totals(conn, since, until, tenant, by_host)

    async def spend_records(
        self, since: datetime, until: datetime, tenant: str | None, limit: int
    ) -> list[dict[str, Any]]:
        async with self._conn() as conn:
            return await central.spend_records(conn, since, until, tenant, limit)

    async def claim_alert(
        self, tenant: str, window_start: datetime, kind: str, spent_micros: int, budget_micros: int
    ) -> bool:
        # Kept in this host's file: each host alerts once per window for what it sees.
        return await self.local.claim_alert(tenant, window_start, kind, spent_micros, budget_micros)

    async def recent_alerts(self, limit: int) -> list[dict[str, Any]]:
        return await self.local.recent_alerts(limit)

    async def due_alerts(self, limit: int) -> list[dict[str, Any]]:
        return await self.local.due_alerts(limit)

    async def mark_alert(self, alert_id: int, error: str, next_attempt_at: datetime | None) -> None:
        await self.local.mark_alert(alert_id, error, next_attempt_at)

    async def record_feedback(
        self, tenant: str, request_id: str, correct: bool | None, true_severity: str | None,
        true_needs_reasoning: bool | None, comment: str,
    ) -> str:
        return await self.local.record_feedback(tenant, request_id, correct, true_severity, true_needs_reasoning, comment)


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k != "shipped"}


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


__all__ = ["Fleet", "FleetBudgets", "PostgresAccounts", "MICROS"]
