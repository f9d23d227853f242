"""Metrics: what the daemon does, for Prometheus, on its own HTTP port.

Nothing on the request path knows about Prometheus. Outcomes are observed at
seams, by wrappers `app.build` puts around the collaborators it wires:

- `MeteredBudgets` around the pipeline's `Budgets`: every settlement and
  refusal (requests by status, level, model and tenant; tokens by kind; spend)
  and every balance read (budget remaining by tenant);
- `TimedClassifiers` around the pipeline's classifier holder: scoring latency;
- the access interceptor (logs.py): every RPC, by method and status code;
- the jobs: retrain results; gauges read at scrape time: engine queue depth,
  reservations held;
- on a fleet host (`[ledger] backend = "postgres"`), read from its `Fleet` at
  scrape time: whether the central ledger is reachable, the age of the last
  sync that reached it, leased and unspent credits per tenant, spend records
  not shipped yet, and lease transactions by kind.

Each daemon has its own CollectorRegistry, so several daemons in one process
(tests) never share or collide on a metric. `NullTelemetry` is the default.
"""

from __future__ import annotations

import inspect
import logging
import time
from typing import Any, Awaitable, Callable, Iterator, Mapping, Protocol, Sequence

from ponderd.ledger.types import BalanceView, Candidate, SpendRow

log = logging.getLogger("ponder.telemetry")

# Latency buckets (seconds): RPCs run from milliseconds (balance) to minutes (long thinking).
RPC_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
# The classifier and planner are CPU work measured in microseconds to milliseconds.
FAST_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25)


class FleetView(Protocol):
    """What the fleet metrics read from a fleet host's `Fleet` (ledger/postgres/fleet.py)."""

    reachable: bool
    synced_at: float  # monotonic; 0 before the first sync
    leases: Mapping[str, Any]  # tenant -> lease, with granted_micros
    unspent: Mapping[str, int]
    unshipped_records: int
    lease_calls: Mapping[str, int]


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

    def first_token(self, seconds: float) -> None:
        """An ask's first generated text came `seconds` after it arrived (called on the engine thread)."""

    def alert(self, tenant: str, kind: str) -> None:
        """An alert was raised (request/alerts.py)."""

    def retrained(self, accepted: bool) -> None:
        """A retraining run ended: its candidate was accepted or rejected."""

    def watch(
        self, queue_depth: Callable[[], int], reservations: Callable[[], int], failure: Callable[[], str] = lambda: "",
    ) -> None:
        """Gauges read at scrape time; `failure` ("" while the model engine runs) answers /healthz."""

    def watch_fleet(self, fleet: FleetView) -> None:
        """A fleet host: its central-ledger gauges, read at scrape time."""

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

    def first_token(self, seconds: float) -> None:
        pass

    def alert(self, tenant: str, kind: str) -> None:
        pass

    def retrained(self, accepted: bool) -> None:
        pass

    def watch(
        self, queue_depth: Callable[[], int], reservations: Callable[[], int], failure: Callable[[], str] = lambda: "",
    ) -> None:
        pass

    def watch_fleet(self, fleet: FleetView) -> None:
        pass

    def start(self) -> None:
        pass

    def close(self) -> None:
        pass


class PrometheusTelemetry:
    """Metrics in a CollectorRegistry of their own, served over HTTP at `listen` (HOST:PORT; port 0: any)."""

    def __init__(self, listen: str) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector

        self.listen = listen
        self.address = ""  # HOST:PORT once serving
        self._httpd: Any = None
        self._metrics: Any = None
        self._failure: Callable[[], str] = lambda: ""
        r = self.registry = CollectorRegistry()
        # The process's CPU seconds, resident memory, open files, start time (process_*; Linux /proc).
        ProcessCollector(registry=r)
        self.build_info = Gauge(
            "ponder_build_info", "Always 1: the versions this daemon runs, as labels",
            ["version", "client_version", "llama_cpp_python", "python"], registry=r,
        )
        self.build_info.labels(*build_versions()).set(1)
        self.first_token_seconds = Histogram(
            "ponder_time_to_first_token_seconds",
            "Ask latency from arrival to the first generated text (planning, reservation and queueing included)",
            buckets=RPC_BUCKETS, registry=r,
        )
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
        self.alerts = Counter("ponder_alerts", "Alerts raised, by tenant and kind (soft_limit, budget_exhausted)",
                              ["tenant", "kind"], registry=r)
        self.retrains = Counter("ponder_retrains", "Retraining runs by result", ["result"], registry=r)
        self.queue_depth = Gauge("ponder_engine_queue_depth", "Generation jobs waiting or running", registry=r)
        self.reservations = Gauge(
            "ponder_reservations_held", "Requests holding (or about to take) a reservation, or waiting to settle", registry=r
        )
        # Registered on every daemon so the names are known; samples only on a fleet host (watch_fleet).
        self.fleet = _FleetCollector()
        r.register(self.fleet)

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

    def first_token(self, seconds: float) -> None:
        self.first_token_seconds.observe(seconds)

    def alert(self, tenant: str, kind: str) -> None:
        self.alerts.labels(tenant, kind).inc()

    def retrained(self, accepted: bool) -> None:
        self.retrains.labels("accepted" if accepted else "rejected").inc()

    def watch(
        self, queue_depth: Callable[[], int], reservations: Callable[[], int], failure: Callable[[], str] = lambda: "",
    ) -> None:
        self.queue_depth.set_function(queue_depth)
        self.reservations.set_function(reservations)
        self._failure = failure

    def watch_fleet(self, fleet: FleetView) -> None:
        self.fleet.source = fleet

    def start(self) -> None:
        from ponderd.errors import FailedPrecondition
        from ponderd.serve.transport import bind_failure

        host, _, port = self.listen.rpartition(":")
        try:
            self._httpd = serve_http(host.strip("[]"), int(port), self._app)
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

    def _app(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        """The metrics listener: /metrics (Prometheus's text format), /healthz (200 "ok", 503 once the engine
        stopped), 404 for every other path."""
        from prometheus_client import make_wsgi_app

        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            if self._metrics is None:
                self._metrics = make_wsgi_app(self.registry)
            return self._metrics(environ, start_response)
        if path == "/healthz":
            failure = self._failure()
            status = "503 Service Unavailable" if failure else "200 OK"
            body = f"{failure}\n" if failure else "ok\n"
        else:
            status, body = "404 Not Found", "not found: this port serves /metrics and /healthz\n"
        start_response(status, [("Content-Type", "text/plain; charset=utf-8")])
        return [body.encode()]


def serve_http(host: str, port: int, app: Callable[..., Any]) -> Any:
    """A threaded HTTP server for the WSGI `app` on host:port (IPv4 or IPv6), serving in a daemon thread; quiet."""
    import socket
    import socketserver
    import threading
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

    family = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0][0]

    class Server(socketserver.ThreadingMixIn, WSGIServer):
        address_family = family
        daemon_threads = True

    class Quiet(WSGIRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002  (the base class's name)
            pass

    httpd = make_server(host, port, app, Server, handler_class=Quiet)
    threading.Thread(target=httpd.serve_forever, name="metrics-http", daemon=True).start()
    return httpd


def build_versions() -> tuple[str, str, str, str]:
    """ponder_build_info's labels: the daemon's, the client's and llama-cpp-python's distribution versions, Python's."""
    import platform
    from importlib import metadata

    def version(name: str) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "unknown"

    return version("ponderd"), version("ponder-client"), version("llama_cpp_python"), platform.python_version()


class _FleetCollector:
    """The fleet host's gauges and counter, read from its Fleet at each scrape (no samples on a single host)."""

    def __init__(self) -> None:
        self.source: FleetView | None = None

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        f = self.source
        reachable = GaugeMetricFamily(
            "ponder_fleet_ledger_reachable", "1 while the central ledger (PostgreSQL) answers this host, 0 while not"
        )
        age = GaugeMetricFamily(
            "ponder_fleet_last_sync_age_seconds", "Seconds since this host's last sync that reached the central ledger"
        )
        leased = GaugeMetricFamily(
            "ponder_fleet_leased_credits", "Credits of the tenant's window budget this host holds as its lease", labels=["tenant"]
        )
        unspent = GaugeMetricFamily(
            "ponder_fleet_lease_unspent_credits",
            "Credits of this host's lease neither spent nor reserved (as of its last grant or sync)", labels=["tenant"],
        )
        unshipped = GaugeMetricFamily(
            "ponder_fleet_unshipped_records", "Spend records in this host's file that the central ledger does not have yet"
        )
        leases = CounterMetricFamily(
            "ponder_fleet_lease_transactions",
            "Lease transactions the central ledger answered: grant (a request needed more), renewal (the sync)",
            labels=["kind"],
        )
        if f is not None:
            reachable.add_metric([], 1 if f.reachable else 0)
            if f.synced_at:
                age.add_metric([], time.monotonic() - f.synced_at)
            for tenant, lease in sorted(f.leases.items()):
                leased.add_metric([tenant], lease.granted_micros / 1e6)
            for tenant, micros in sorted(f.unspent.items()):
                unspent.add_metric([tenant], micros / 1e6)
            unshipped.add_metric([], f.unshipped_records)
            for kind in ("grant", "renewal"):
                leases.add_metric([kind], f.lease_calls.get(kind, 0))
        yield from (reachable, age, leased, unspent, unshipped, leases)


def create(listen: str) -> Telemetry:
    """Prometheus metrics served at `listen`, or none when it is ""."""
    return PrometheusTelemetry(listen) if listen else NullTelemetry()


class MeteredBudgets:
    """A `Budgets` that reports each settlement, refusal and balance read; the rest passes through."""

    def __init__(self, inner: Any, telemetry: Telemetry, model: Callable[[], str]) -> None:
        self._inner = inner
        self._telemetry = telemetry
        self._model = model  # the engine's model name is known only once it has loaded

    async def reserve(
        self, tenant: str, request_id: str, candidates: Sequence[Candidate], context: dict[str, Any],
        key_id: str | None = None,
    ) -> int:
        return await self._inner.reserve(tenant, request_id, candidates, context, key_id)

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

    @property
    def score_async(self) -> Callable[..., Awaitable[Any]] | None:
        """The model's own score_async, timed; None where it has none (the caller scores in a thread)."""
        inner = getattr(self._model, "score_async", None)
        if inner is None:
            return None

        async def timed(text: str, explain: bool = False) -> Any:
            started = time.perf_counter()
            try:
                return await inner(text, explain=explain)
            finally:
                self._telemetry.classified(time.perf_counter() - started)

        return timed

    @property
    def staged(self) -> Callable[..., Any] | None:
        """The model's own staged scoring (risk/cascade.py), timed to the score, awaited or not."""
        inner = getattr(self._model, "staged", None)
        if inner is None:
            return None

        def timed(text: str, explain: bool = False) -> Any:
            started = time.perf_counter()
            try:
                scored = inner(text, explain=explain)
            except BaseException:
                self._telemetry.classified(time.perf_counter() - started)
                raise
            if not inspect.isawaitable(scored):
                self._telemetry.classified(time.perf_counter() - started)
                return scored

            async def rest() -> Any:
                try:
                    return await scored
                finally:
                    self._telemetry.classified(time.perf_counter() - started)

            return rest()

        return timed

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)
