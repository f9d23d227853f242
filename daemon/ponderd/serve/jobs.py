"""Scheduled jobs (APScheduler): budget windows, orphaned reservations, prompt and idempotency-key retention, retraining.

Each job is a coroutine taking no arguments and returning a one-line summary,
so the scheduler, `ponder admin job run NAME` and tests all run the same code.
Times come from the injected clock.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Awaitable, Callable
from zoneinfo import ZoneInfo

from ponderd.clock import Clock
from ponderd.errors import InvalidRequest
from ponderd.ledger.accounts import Maintenance
from ponderd.ledger.idempotency import Recoverable
from ponderd.planning.accuracy import UpdateResult
from ponderd.risk.retrain import Retrainer
from ponderd.serve.telemetry import Telemetry

log = logging.getLogger("ponder.jobs")

# A reservation this old with no live request behind it is an orphan.
ORPHAN_GRACE = timedelta(minutes=10)


@dataclass(frozen=True)
class Schedules:
    """When the configurable jobs run: cron expressions in `zone`; "" turns one off."""

    zone: ZoneInfo
    retrain_risk: str
    update_accuracy: str
    # prune_prompts removes request text older than this.
    keep_prompts_days: int


class Jobs:
    def __init__(
        self,
        schedules: Schedules,
        clock: Clock,
        ledger: Maintenance,
        owned: Callable[[], set[str]],
        retrainer: Retrainer,
        update_accuracy: Callable[[], Awaitable[UpdateResult]],
        telemetry: Telemetry,
        keys: Recoverable,
        flush_key_usage: Callable[[], Awaitable[int]] | None = None,
    ) -> None:
        """`owned`: request ids whose reservations are not orphans (running, or waiting to settle).

        `update_accuracy`: count the verified outcomes and put the estimates in force (planning/accuracy.py).
        `flush_key_usage`: write the keyring's batch of last-used times; return how many keys it wrote.
        """
        self.schedules = schedules
        self.clock = clock
        self.ledger = ledger
        self.owned = owned
        self.retrainer = retrainer
        self._update_accuracy = update_accuracy
        self.telemetry = telemetry
        self.keys = keys
        self._flush_key_usage = flush_key_usage
        self.registry: dict[str, Callable[[], Awaitable[str]]] = {
            "renew_windows": self.renew_windows,
            "expire_reservations": self.expire_reservations,
            "prune_prompts": self.prune_prompts,
            "retrain_risk": self.retrain_risk,
            "update_accuracy": self.update_accuracy,
            "prune_idempotency": self.prune_idempotency,
            "flush_key_usage": self.flush_key_usage,
        }
        self._scheduler: Any = None

    async def run(self, name: str) -> str:
        job = self.registry.get(name)
        if job is None:
            raise InvalidRequest(f"no job {name!r}; jobs: {', '.join(self.registry)}")
        summary = await job()
        log.info("job %s: %s", name, summary)
        return summary

    async def renew_windows(self) -> str:
        renewed = await self.ledger.renew_windows()
        return f"renewed {len(renewed)} tenant window(s)" + (f": {', '.join(renewed)}" if renewed else "")

    async def expire_reservations(self, grace: timedelta = ORPHAN_GRACE) -> str:
        now = self.clock.now()
        # Running requests, and settlements waiting for the disk, are owned: only a crash leaves true orphans.
        settled = await self.ledger.settle_orphans(self.owned(), now - grace)
        return f"settled {len(settled)} orphaned reservation(s)"

    async def prune_prompts(self) -> str:
        # Every copy of a request's text: prompts, feedback's prompt copies, answers.
        days = self.schedules.keep_prompts_days
        pruned = await self.ledger.prune_prompts(self.clock.now() - timedelta(days=days))
        return pruned.summary(days)

    async def prune_idempotency(self) -> str:
        # Expired keys and their stored replies go; claims a stopped attempt left are resolved.
        return await self.keys.recover()

    async def flush_key_usage(self) -> str:
        # Last-used times are batched in memory (ledger/keys.py), so a request never waits on a write for them.
        if self._flush_key_usage is None:
            return "no key usage to record"
        return f"recorded the last use of {await self._flush_key_usage()} key(s)"

    async def retrain_risk(self) -> str:
        result = await self.retrainer.run()
        self.telemetry.retrained(result.accepted)
        return result.summary()

    async def update_accuracy(self) -> str:
        result = await self._update_accuracy()
        return result.summary()

    def start(self) -> None:
        """Schedule the jobs on the running event loop."""
        from apscheduler.schedulers.asyncio import AsyncIOScheduler
        from apscheduler.triggers.cron import CronTrigger
        from apscheduler.triggers.interval import IntervalTrigger

        zone = self.schedules.zone
        s = AsyncIOScheduler(timezone=zone)
        # Windows start at local midnight (weeks on Monday, months on the 1st); run just after.
        s.add_job(self._safe("renew_windows"), CronTrigger(hour=0, minute=0, second=5, timezone=zone), id="renew_windows", name="renew_windows")
        s.add_job(self._safe("expire_reservations"), IntervalTrigger(minutes=5), id="expire_reservations", name="expire_reservations")
        s.add_job(self._safe("prune_prompts"), CronTrigger(hour=4, minute=15, timezone=zone), id="prune_prompts", name="prune_prompts")
        # Hourly: keys are kept for hours (idempotency_hours), not days.
        s.add_job(self._safe("prune_idempotency"), IntervalTrigger(hours=1), id="prune_idempotency", name="prune_idempotency")
        s.add_job(self._safe("flush_key_usage"), IntervalTrigger(minutes=1), id="flush_key_usage", name="flush_key_usage")
        if self.schedules.retrain_risk:
            s.add_job(
                self._safe("retrain_risk"),
                CronTrigger.from_crontab(self.schedules.retrain_risk, timezone=zone),
                id="retrain_risk",
                name="retrain_risk",
            )
        if self.schedules.update_accuracy:
            s.add_job(
                self._safe("update_accuracy"),
                CronTrigger.from_crontab(self.schedules.update_accuracy, timezone=zone),
                id="update_accuracy",
                name="update_accuracy",
            )
        s.start()
        self._scheduler = s

    def _safe(self, name: str) -> Callable[[], Awaitable[None]]:
        async def job() -> None:
            try:
                await self.run(name)
            except Exception:
                # A failed run is logged and retried at its next time; it never stops the scheduler.
                log.exception("job %s failed", name)

        job.__name__ = name
        return job

    def shutdown(self) -> None:
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)
            self._scheduler = None
