"""The engine's waiting room: queued jobs, why new ones are refused, and safe completion.

Jobs wait here until the owner thread admits them, round-robin by tenant:
the next job is the oldest of the tenant admitted longest ago (or never), so
one tenant's flood does not hold everyone else's requests behind it. A
cancelled job leaves at once, wherever it waits, so a caller that went away never waits behind a big
job at the head. Futures are completed only through `resolve`/`reject`, which
never raise: a future the caller cancelled must not take the owner thread down.
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
from collections import deque
from typing import Any

from ponderd.engine import GenerationJob, GenerationResult
from ponderd.errors import Unavailable

log = logging.getLogger("ponder.engine")

Waiting = tuple[GenerationJob, concurrent.futures.Future]


def stopped_message(why: str) -> str:
    return f"the model engine stopped: {why}; the daemon is restarting"


def cancelled_before_start(job: GenerationJob) -> GenerationResult:
    return GenerationResult(len(job.prompt.tokens), 0, [], "cancelled before it started")


def resolve(future: concurrent.futures.Future, result: Any) -> None:
    """Complete a future unless it is done already (cancelled by its caller, or failed by supervision)."""
    try:
        future.set_result(result)
    except concurrent.futures.InvalidStateError:
        log.debug("a job's future was already done; its result is dropped")


def reject(future: concurrent.futures.Future, exc: BaseException) -> None:
    try:
        future.set_exception(exc)
    except concurrent.futures.InvalidStateError:
        log.debug("a job's future was already done; its error is dropped: %s", exc)


class JobQueue:
    """Waiting jobs and the refusal state, guarded by `cv` (the engine shares it for its own state)."""

    def __init__(self, max_queue: int) -> None:
        # Re-entrant: cancel() may run under the lock (close, a future's done callback).
        self.cv = threading.Condition(threading.RLock())
        self.pending: deque[Waiting] = deque()
        self.max_queue = max_queue
        self.closing = False
        # Why the owner thread stopped; "" while it is healthy.
        self.failure = ""
        # Fairness: when each tenant last had a job admitted (a counter, not a time).
        self._served: dict[str, int] = {}
        self._admissions = 0

    def head(self) -> Waiting | None:
        """The job to admit next: the oldest waiting job of the tenant served longest ago (never first).

        Ties (tenants never served) go to the tenant whose oldest job came first."""
        with self.cv:
            best: Waiting | None = None
            best_key: tuple[int, int] | None = None
            seen: set[str] = set()
            for arrival, waiting in enumerate(self.pending):
                tenant = waiting[0].tenant
                if tenant in seen:
                    continue  # only each tenant's oldest competes
                seen.add(tenant)
                key = (self._served.get(tenant, -1), arrival)
                if best_key is None or key < best_key:
                    best, best_key = waiting, key
            return best

    def take(self, waiting: Waiting, turn: bool = True) -> None:
        """Remove `waiting` (from head()) to admit it (its tenant's turn) or to drop it (turn=False)."""
        with self.cv:
            for k, item in enumerate(self.pending):
                if item[0] is waiting[0]:
                    del self.pending[k]
                    break
            if turn:
                self._served[waiting[0].tenant] = self._admissions
                self._admissions += 1

    def submit(self, job: GenerationJob) -> concurrent.futures.Future:
        """Queue a job, or raise Unavailable before anything about it is queued or counted."""
        future: concurrent.futures.Future = concurrent.futures.Future()
        with self.cv:
            if self.failure:
                raise Unavailable(stopped_message(self.failure))
            if self.closing:
                raise Unavailable("the daemon is shutting down; retry on another instance")
            if len(self.pending) >= self.max_queue:
                raise Unavailable(f"{len(self.pending)} requests are already waiting for the model; retry shortly")
            job._on_cancel = lambda: self.withdraw(job)
            self.pending.append((job, future))
            self.cv.notify()
        # A caller that cancels the future itself (asyncio cancelling a wrapped
        # future) wants the job gone too.
        future.add_done_callback(lambda f: job.cancel() if f.cancelled() else None)
        # cancel() may have run before the hook was set: it set the event, so look again.
        if job.cancelled.is_set():
            self.withdraw(job)
        return future

    def withdraw(self, job: GenerationJob) -> None:
        """Take a cancelled job out of the queue, wherever it waits, and resolve it now."""
        with self.cv:
            for k, (waiting, future) in enumerate(self.pending):  # noqa: B007 (future is read after the break)
                if waiting is job:
                    del self.pending[k]
                    break
            else:
                return  # admitted already: the step loop stops its samples
            # The head may have changed: what waited behind it may fit now.
            self.cv.notify()
        resolve(future, cancelled_before_start(job))

    def close(self) -> list[Waiting]:
        """Refuse new jobs from now on; hand back the waiting ones for the caller to refuse."""
        with self.cv:
            self.closing = True
            return self._drain()

    def stop(self, why: str) -> list[Waiting]:
        """The owner thread is gone: refuse everything from now on, saying why."""
        with self.cv:
            self.failure = why or "unknown error"
            return self._drain()

    def _drain(self) -> list[Waiting]:
        waiting = list(self.pending)
        self.pending.clear()
        self.cv.notify_all()
        return waiting
