"""Every request runs to its end, whatever happens to its caller.

A gRPC handler can be cancelled at any await: the client disconnects, its
deadline passes, the server drains. If that cancellation landed inside the
request path it could fall between "the reservation committed" and "the
request knows it holds one", or between "the engine finished" and "the spend
record is written". So the request path never sees CancelledError: each
request body runs as its own task, the handler awaits it through a shield, and
a cancelled handler only *asks* the request to stop (`Stop`). The request
notices at its next step (before reserving, or the engine stops its samples),
settles what it used with the reason, and ends. The handler's caller is gone
by then; the task is kept here so shutdown can wait for it before the model
and the database close.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Callable, Coroutine, TypeVar

from ponderd.errors import Unavailable

log = logging.getLogger("ponder.pipeline")

T = TypeVar("T")

# Why a request was asked to stop; each is also the status of its spend record.
CANCELLED, DEADLINE, DRAINED = "cancelled", "deadline", "drained"
DEADLINE_SLACK = 0.1


class Stop:
    """A request's stop signal: set once, with a reason; callbacks run when it is set."""

    def __init__(self) -> None:
        self.reason = ""
        self._callbacks: list[Callable[[], None]] = []

    def request(self, reason: str) -> None:
        if self.reason:
            return
        self.reason = reason
        for callback in self._callbacks:
            callback()

    def on_stop(self, callback: Callable[[], None]) -> None:
        """Run `callback` when the request is asked to stop (at once if it has been)."""
        self._callbacks.append(callback)
        if self.reason:
            callback()


class Inflight:
    """The requests running now: started shielded, stopped cooperatively, drained before shutdown."""

    def __init__(self) -> None:
        self._tasks: dict[asyncio.Task[Any], Stop] = {}
        self._idle = asyncio.Event()
        self._idle.set()
        self.draining = False

    def __len__(self) -> int:
        return len(self._tasks)

    async def run(self, body: Callable[[Stop], Coroutine[Any, Any, T]], deadline: float | None = None) -> T:
        """Run `body(stop)` to its end; if the caller is cancelled, ask it to stop and let it finish alone.

        `deadline` (time.monotonic()) tells a deadline from a disconnect.
        """
        if self.draining:
            raise Unavailable("the daemon is shutting down and takes no new requests; retry on another instance")
        stop = Stop()
        task = asyncio.ensure_future(body(stop))
        self._tasks[task] = stop
        self._idle.clear()
        task.add_done_callback(self._done)
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            if task.done():
                raise
            stop.request(self._reason(deadline))
            raise

    def stop_all(self, reason: str) -> int:
        for stop in self._tasks.values():
            stop.request(reason)
        return len(self._tasks)

    async def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until no request runs; False if `timeout` passed first."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except asyncio.TimeoutError:
            return False
        return True

    def _reason(self, deadline: float | None) -> str:
        if self.draining:
            return DRAINED
        # The client's own timer fires at its deadline and its cancel can reach us a
        # little before the server's timer: anything this close to the deadline is it.
        if deadline is not None and time.monotonic() >= deadline - DEADLINE_SLACK:
            return DEADLINE
        return CANCELLED

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.pop(task, None)
        if not self._tasks:
            self._idle.set()
        # A request whose caller left ends with nobody awaiting it: retrieve its
        # outcome so asyncio does not report it as never retrieved.
        if not task.cancelled() and task.exception() is not None:
            log.debug("request ended after its caller left: %s", task.exception())
