"""Metrics: what the daemon does, for Prometheus, on its own HTTP port.

Nothing on the request path knows about Prometheus. Outcomes are observed at
seams, by wrappers `app.build` puts around the collaborators it wires:

- `MeteredBudgets` around the pipeline's `Budgets`: every settlement and
  refusal (requests by status, level, model and tenant; tokens by kind; spend)
  and every balance read (budget remaining by tenant);
- `TimedClassifiers` around the pipeline's classifier holder: scoring latency;
- the access interceptor (logs.py): every RPC, by method and status code;
- the jobs: retrain results; gauges read at scrape time: engine queue depth,
  reservations held.

Each daemon has its own CollectorRegistry, so several daemons in one process
(tests) never share or collide on a metric. `NullTelemetry` is the default.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable, Protocol, Sequence

from ponderd.ledger.types import BalanceView, Candidate, SpendRow

log = logging.getLogger("ponder.telemetry")

# Latency buckets (seconds): RPCs run from milliseconds (balance) to minutes (long thinking).
RPC_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
# The classifier and planner are CPU work measured in microseconds to milliseconds.
FAST_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25)


class Telemetry(Protocol):
    def rpc(self, method: str, code: str, seconds: float, transport: str = "grpc") -> None:
        """One RPC ended with gRPC status `code` after `seconds`; `transport`: grpc, or http for the HTTP API."""

    def settled(self, row: SpendRow, charged_micros: int, model: str) -> None:
        """A request's spend record (settled or refused) was written, or is waiting to be."""

    def balance(self, view: BalanceView) -> None:
        """A tenant's balance was read."""

    def classified(self, seconds: float) -> None:
        """The risk classifier scored one text."""

    def planned(self, seconds: float) -> None:
        """The planner chose a plan for one request."""

    def retrained(self, accepted: bool) -> None:
        """A retraining run ended: its candidate was accepted or rejected."""

    def watch(self, queue_depth: Callable[[], int], reservations: Callable[[], int]) -> None:
        """Gauges read at scrape time."""

    def start(self) -> None:
        """Serve the scrape endpoint (if any)."""

    def close(self) -> None:
        """Stop serving it."""


class NullTelemetry:
    """Observes nothing: for tests and for `[metrics] listen = ""`."""

    address = ""

    def rpc(self, method: str, code: str, seconds: float, transport: str = "grpc") -> None:
        pass

    def settled(self, row: SpendRow, charged_micros: int, model: str) -> None:
        pass

    def balance(self, view: BalanceView) -> None:
        pass

    def classified(self, seconds: float) -> None:
        pass

    def planned(self, seconds: float) -> None:
        pass

    def retrained(self, accepted: bool) -> None:
        pass

    def watch(self, queue_depth: Callable[[], int], reservations: Callable[[], int]) -> None:
        pass

    def start(self) -> None:
        pass

    def close(self) -> None:
        pass


class PrometheusTelemetry:
    """Metrics in a CollectorRegistry of their own, served over HTTP at `listen` (HOST:PORT; port 0: any)."""

    def __init__(self, listen: str) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.listen = listen
        self.address = ""  # HOST:PORT once serving
        self._httpd: Any = None
        r = self.registry = CollectorRegistry()
        self.rpcs = Counter(
            "ponder_rpcs", "RPCs by method, gRPC status code and transport (grpc; http: the HTTP API)",
            ["method", "code", "transport"], registry=r,
        )
        self.rpc_seconds = Histogram(
            "ponder_rpc_duration_seconds", "RPC latency by method and transport", ["method", "transport"],
            buckets=RPC_BUCKETS, registry=r,
        )
        self.requests = Counter(
            "ponder_requests", "Asks with a spend record, by its status, effort level, model and tenant",
            ["tenant", "status", "level", "model"], registry=r,
        )
        self.tokens = Counter(
            "ponder_tokens", "Tokens of asks by tenant and kind (prompt, thinking, answer, forced)",
            ["tenant", "kind"], registry=r,
        )
        self.spend = Counter("ponder_spend_credits", "Credits charged by tenant", ["tenant"], registry=r)
        self.request_seconds = Histogram(
            "ponder_request_duration_seconds", "Ask latency from arrival to settlement, by status",
            ["status"], buckets=RPC_BUCKETS, registry=r,
        )
        self.remaining = Gauge(
            "ponder_budget_remaining_credits", "Credits left in the tenant's window (as last read)", ["tenant"], registry=r
        )
        self.reserved = Gauge(
            "ponder_budget_reserved_credits", "Credits reserved by running requests (as last read)", ["tenant"], registry=r
        )
        self.classify_seconds = Histogram(
            "ponder_classifier_duration_seconds", "Risk classifier latency per text", buckets=FAST_BUCKETS, registry=r
        )
        self.plan_seconds = Histogram(
            "ponder_planner_duration_seconds", "Planner latency per request", buckets=FAST_BUCKETS, registry=r
        )
        self.retrains = Counter("ponder_retrains", "Retraining runs by result", ["result"], registry=r)
        self.queue_depth = Gauge("ponder_engine_queue_depth", "Generation jobs waiting or running", registry=r)
        self.reservations = Gauge(
            "ponder_reservations_held", "Requests holding (or about to take) a reservation, or waiting to settle", registry=r
        )

    def rpc(self, method: str, code: str, seconds: float, transport: str = "grpc") -> None:
        self.rpcs.labels(method, code, transport).inc()
        self.rpc_seconds.labels(method, transport).observe(seconds)

    def settled(self, row: SpendRow, charged_micros: int, model: str) -> None:
        self.requests.labels(row.tenant, row.status, row.level or "-", model or "-").inc()
        for kind, n in (
            ("prompt", row.prompt_tokens), ("thinking", row.thinking_tokens),
            ("answer", row.answer_tokens), ("forced", row.forced_tokens),
        ):
            if n:
                self.tokens.labels(row.tenant, kind).inc(n)
        self.spend.labels(row.tenant).inc(charged_micros / 1e6)
        self.request_seconds.labels(row.status).observe(row.latency_ms / 1000)

    def balance(self, view: BalanceView) -> None:
        self.remaining.labels(view.tenant).set(view.remaining_micros / 1e6)
        self.reserved.labels(view.tenant).set(view.reserved_micros / 1e6)

    def classified(self, seconds: float) -> None:
        self.classify_seconds.observe(seconds)

    def planned(self, seconds: float) -> None:
        self.plan_seconds.observe(seconds)

    def retrained(self, accepted: bool) -> None:
        self.retrains.labels("accepted" if accepted else "rejected").inc()

    def watch(self, queue_depth: Callable[[], int], reservations: Callable[[], int]) -> None:
        self.queue_depth.set_function(queue_depth)
        self.reservations.set_function(reservations)

    def start(self) -> None:
        from prometheus_client import start_http_server

        from ponderd.errors import FailedPrecondition
        from ponderd.serve.transport import bind_failure

        host, _, port = self.listen.rpartition(":")
        try:
            self._httpd, _ = start_http_server(int(port), host.strip("[]"), registry=self.registry)
        except (OSError, ValueError) as exc:
            why = bind_failure(exc) if isinstance(exc, OSError) else "that is not HOST:PORT"
            # Its own cause, not the state directory's: a second daemon on a host meets this first.
            raise FailedPrecondition(
                f"could not serve metrics on {self.listen}: {why}: set [metrics] listen (PONDER_METRICS_LISTEN, "
                '--metrics-listen) to a free HOST:PORT, or "" to turn metrics off'
            ) from None
        self.address = f"{host}:{self._httpd.server_port}"
        log.info("metrics on http://%s/metrics", self.address)

    def close(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None


def create(listen: str) -> Telemetry:
    """Prometheus metrics served at `listen`, or none when it is ""."""
    return PrometheusTelemetry(listen) if listen else NullTelemetry()


class MeteredBudgets:
    """A `Budgets` that reports each settlement, refusal and balance read; the rest passes through."""

    def __init__(self, inner: Any, telemetry: Telemetry, model: Callable[[], str]) -> None:
        self._inner = inner
        self._telemetry = telemetry
        self._model = model  # the engine's model name is known only once it has loaded

    async def reserve(self, tenant: str, request_id: str, candidates: Sequence[Candidate], context: dict[str, Any]) -> int:
        return await self._inner.reserve(tenant, request_id, candidates, context)

    async def settle(self, row: SpendRow, prompt_text: str | None) -> int:
        from ponderd.errors import StorageUnavailable

        try:
            charged = await self._inner.settle(row, prompt_text)
        except StorageUnavailable:
            # Written once the database takes writes again, at this cost: count it now, once.
            self._telemetry.settled(row, row.cost_micros, row.model or self._model())
            raise
        self._telemetry.settled(row, charged, row.model or self._model())
        return charged

    async def refuse(self, row: SpendRow) -> None:
        from ponderd.errors import StorageUnavailable

        try:
            await self._inner.refuse(row)
        except StorageUnavailable:
            self._telemetry.settled(row, 0, row.model or self._model())
            raise
        self._telemetry.settled(row, 0, row.model or self._model())

    async def balance(self, tenant: str) -> BalanceView:
        view = await self._inner.balance(tenant)
        self._telemetry.balance(view)
        return view

    def unsettled(self) -> set[str]:
        return self._inner.unsettled()

    async def retry_unsettled(self) -> int:
        return await self._inner.retry_unsettled()


class TimedClassifiers:
    """A classifier holder whose `current()` model times each `score` call."""

    def __init__(self, holder: Any, telemetry: Telemetry) -> None:
        self._holder = holder
        self._telemetry = telemetry

    def current(self) -> Any:
        return _TimedClassifier(self._holder.current(), self._telemetry)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._holder, name)


class _TimedClassifier:
    def __init__(self, model: Any, telemetry: Telemetry) -> None:
        self._model = model
        self._telemetry = telemetry

    def score(self, text: str, explain: bool = False) -> Any:
        started = time.perf_counter()
        try:
            return self._model.score(text, explain=explain)
        finally:
            self._telemetry.classified(time.perf_counter() - started)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)
