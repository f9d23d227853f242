"""The daemon's life: load -> warm -> ready -> serve; SIGTERM drains, SIGHUP reloads.

    serve()
      startup()    open the database, load and warm the model, settle reservations
                   (and free idempotency claims) a crash left behind, bind,
                   report SERVING and READY=1
      main loop    until SIGTERM/SIGINT, or until the model engine dies; meanwhile
                   a health loop turns once a second: it reports the engine and
                   the database in the health service, retries settlements the
                   database refused, and pings systemd's watchdog while the
                   engine makes progress
      shutdown()   NOT_SERVING, refuse new calls, let running requests finish for
                   drain_seconds (a second signal cuts the wait short), then stop
                   the rest (each is charged for what it used, status `drained`),
                   write waiting settlements, free the model, close the database

The exit code is 0 after a signal, 1 when the engine died or start-up failed,
so systemd (Restart=on-failure) restarts the daemon only when it should.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import signal
import socket
import sqlite3
import sys
import time
from datetime import timedelta
from typing import Any, Awaitable, Coroutine

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio

from ponder.v1 import admin_pb2, admin_pb2_grpc, ponder_pb2, ponder_pb2_grpc
from ponderd.errors import PonderError
from ponderd.planning.planner import fit_warnings
from ponderd.request.inflight import DRAINED
from ponderd.serve import reflection, transport
from ponderd.serve.admin_service import AdminService
from ponderd.serve.app import Daemon, build
from ponderd.serve.auth import AuthInterceptor
from ponderd.serve.boundary import add_servicer
from ponderd.serve.logs import AccessInterceptor, JsonFormatter
from ponderd.serve.service import PonderService
from ponderd.settings import Settings, default_state_dir

log = logging.getLogger("ponder.server")

SERVICES = (
    ponder_pb2.DESCRIPTOR.services_by_name["PonderService"].full_name,
    admin_pb2.DESCRIPTOR.services_by_name["AdminService"].full_name,
)


def create_server(
    daemon: Daemon, listen: str, certificates: transport.TlsCertificates | None = None,
) -> tuple[grpc.aio.Server, int, health_aio.HealthServicer, list[str]]:
    """A gRPC server with PonderService, AdminService, health and reflection (v1 and v1alpha), bound to `listen` (port 0: any free port).

    `listen` may name several addresses (see transport.py); the port returned is
    the first TCP listener's (0 when all are unix sockets), and the list the
    addresses bound, for the endpoint file. TLS listeners use `certificates`
    (the Server's, so SIGHUP reloads them), or the files read once.
    """
    settings = dataclasses.replace(daemon.settings, listen=listen)
    transport.check_exposure(settings)  # before anything is built: the message is the point
    server = grpc.aio.server(
        # The access log sits outside auth, so refused calls are logged too.
        interceptors=[AccessInterceptor(daemon.telemetry), AuthInterceptor(daemon.keyring, settings.tls.identities)],
        options=[
            ("grpc.max_receive_message_length", 8 * 1024 * 1024),
            # Without this, a second daemon could bind the same port and split the traffic.
            ("grpc.so_reuseport", 0),
        ],
    )
    # Through boundary.add_servicer, a body that is not valid protobuf gets INVALID_ARGUMENT.
    ponder, admin = ponder_pb2.DESCRIPTOR.services_by_name["PonderService"], admin_pb2.DESCRIPTOR.services_by_name["AdminService"]
    d = daemon
    service = PonderService(d.pipeline, d.keys, d.budgets, d.policies, d.accounts, d.clock)
    admin_service = AdminService(
        accounts=d.accounts, budgets=d.budgets, policies=d.policies, classifier=d.classifier, clock=d.clock,
        zone=d.settings.zone, jobs=d.jobs, reload=d.reload, retrains=d.retrainer.recent,
        publish_policy=d.publish_policy if d.fleet is not None else None,
    )
    add_servicer(ponder_pb2_grpc.add_PonderServiceServicer_to_server, service, server, ponder)
    add_servicer(admin_pb2_grpc.add_AdminServiceServicer_to_server, admin_service, server, admin)
    health = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    reflection.enable((*SERVICES, "grpc.health.v1.Health"), server)
    port, bound = transport.bind(server, settings, certificates)
    return server, port, health, bound


def sd_notify(message: str) -> None:
    """Tell systemd about our state (Type=notify); a no-op when not run by systemd.

    One datagram to $NOTIFY_SOCKET (sd_notify(3)); newline-separated
    assignments (READY=1, STATUS=..., EXTEND_TIMEOUT_USEC=...). A manager that
    went away is not the daemon's failure: logged at debug level, not raised.
    """
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(address)
            sock.sendall(message.encode())
    except OSError as exc:
        log.debug("could not notify systemd at %s: %s", address, exc)


def sd_status(text: str) -> None:
    """The one-line status `systemctl status ponderd` shows."""
    sd_notify(f"STATUS={text}")


# While the model loads and warms, systemd's start timeout (TimeoutStartSec=) is
# extended by EXTEND_SECONDS every EXTEND_EVERY seconds, up to EXTEND_LIMIT in all.
EXTEND_SECONDS, EXTEND_EVERY, EXTEND_LIMIT = 60.0, 20.0, 3600.0


async def extending(work: Awaitable[Any]) -> Any:
    """Await `work` (loading a model), asking systemd for more start-up time meanwhile (EXTEND_TIMEOUT_USEC)."""
    if not os.environ.get("NOTIFY_SOCKET"):
        return await work

    async def keep() -> None:
        began = time.monotonic()
        while time.monotonic() - began < EXTEND_LIMIT:
            sd_notify(f"EXTEND_TIMEOUT_USEC={int(EXTEND_SECONDS * 1e6)}")
            await asyncio.sleep(EXTEND_EVERY)

    ticker = asyncio.ensure_future(keep())
    try:
        return await work
    finally:
        ticker.cancel()
        await asyncio.gather(ticker, return_exceptions=True)


# Health service names for the two parts that can fail while the process lives.
ENGINE_HEALTH, DATABASE_HEALTH = "ponder.engine", "ponder.database"
# After the drain's grace and the stop of what was left, how long requests get
# to settle before shutdown gives up on them (and leaves the model allocated).
SETTLE_WAIT = 30.0


class Server:
    def __init__(self, daemon: Daemon, handle_signals: bool = True) -> None:
        self.daemon = daemon
        # Off when the server runs in a thread other than the main one (tests, embedding).
        self.handle_signals = handle_signals
        self.settings = daemon.settings
        self.port = 0
        self.exit_code = 0
        self.started = asyncio.Event()
        self.should_exit = asyncio.Event()
        self.force_exit = asyncio.Event()
        self._grpc: grpc.aio.Server | None = None
        self._health: health_aio.HealthServicer | None = None
        # Background tasks are kept here: asyncio holds only weak references.
        self._tasks: set[asyncio.Task[None]] = set()
        self._reported: dict[str, bool] = {}
        # The listener's TLS files, re-read on SIGHUP (None without TLS).
        self._certificates: transport.TlsCertificates | None = None
        # The OpenAI-compatible HTTP API ([http] listen), None when off.
        self.http: Any = None
        self._draining = False

    async def serve(self) -> None:
        try:
            await self.startup()
        except BaseException:
            await asyncio.to_thread(self.daemon.close)
            raise
        await self.should_exit.wait()
        await self.shutdown()

    async def startup(self) -> None:
        d = self.daemon
        # Opening loads the model: systemd is asked for more time while it does (TimeoutStartSec= is the base).
        await extending(asyncio.to_thread(d.open, sd_status))
        if d.fleet is not None:
            sd_status("joining the fleet ledger")
            d.fleet.on_policy = d.apply_central_policy
            await d.fleet.start()
        sd_status("warming the model")
        await extending(asyncio.to_thread(d.engine.warm))
        self._warn_fit()
        sd_status("settling what the last run left: reservations, idempotency claims, budget windows")
        # Anything still reserved now was left by a process that died mid-request.
        log.info("start-up: %s", await d.jobs.expire_reservations(grace=timedelta(0)))
        # After the orphans are settled: a claim whose attempt died unanswered is freed for a retry.
        log.info("start-up: %s", await d.jobs.prune_idempotency())
        log.info("start-up: %s", await d.jobs.renew_windows())
        sd_status(f"binding {self.settings.listen}")
        if self.settings.tls.enabled:
            self._certificates = transport.TlsCertificates(self.settings.tls)
        self._grpc, self.port, self._health, bound = create_server(d, self.settings.listen, self._certificates)
        await self._grpc.start()
        await self._report(True, True)
        if self.settings.http.listen:
            from ponderd.serve.web import http_server

            self.http = http_server(d, self.health_states, self.ready)
            try:
                await self.http.start()
            except BaseException:
                await self._grpc.stop(0)
                raise
            bound.append(self.http.address)
        self._write_endpoint(transport.endpoint_text(self.settings, bound))
        d.jobs.start()
        if self.handle_signals:
            self._install_signals()
        self._spawn(self._watch())
        sd_notify(f"READY=1\nSTATUS=serving on {', '.join(bound)}{' (TLS)' if self.settings.tls.enabled else ''}")
        self.started.set()
        log.info(
            "Ponder listening on %s%s (model %s, policy %s, risk model %s)",
            ", ".join(bound), " (TLS)" if self.settings.tls.enabled else "",
            d.engine.model_name, d.policies.current().version, d.classifier.current().version,
        )
        if (self.settings.state_dir / "local.token").exists():
            log.info("ask it, from a second terminal: %s", ask_hint(self.settings))

    async def shutdown(self) -> None:
        d = self.daemon
        inflight = d.pipeline.inflight
        sd_notify(f"STOPPING=1\nSTATUS=draining: {len(inflight)} request(s) running")
        inflight.draining = True
        self._draining = True
        if self._health is not None:
            await self._health.enter_graceful_shutdown()
        if self.http is not None:
            self.http.stop_accepting()  # like gRPC: new connections refused, running requests drain
        settled = True
        if self._grpc is not None:
            grace = 0 if self.force_exit.is_set() else self.settings.drain_seconds
            log.info("draining: %d request(s) running, up to %gs", len(inflight), grace)
            sd_status(f"draining: {len(inflight)} request(s) running, up to {grace:g}s; new calls are refused")
            # New calls are refused at once. Running ones are ended by the
            # pipeline, not by gRPC, so each settles and its caller hears why;
            # gRPC's own cut-off comes later, as a backstop.
            stopping = self._spawn(self._grpc.stop(grace + SETTLE_WAIT))
            # Until every request has ended, the grace has passed, or a second signal came.
            await self._first(inflight.wait_idle(), self.force_exit.wait(), timeout=grace)
            if len(inflight):
                log.warning("drain: stopping %d request(s) still running", inflight.stop_all(DRAINED))
                sd_status(f"draining: stopped {len(inflight)} request(s) still running; waiting for them to settle")
            settled = await inflight.wait_idle(SETTLE_WAIT)
            if not settled:
                log.error("%d request(s) did not settle in %gs; the model stays allocated until exit", len(inflight), SETTLE_WAIT)
            await stopping
        if self.http is not None:
            await self.http.stop()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        sd_status("writing waiting settlements")
        await d.budgets.retry_unsettled()
        try:
            log.info("shutdown: %s", await d.jobs.run("flush_key_usage"))
        except Exception as exc:  # last-used times are a convenience: never a reason to stop uncleanly
            log.warning("shutdown: could not record the keys' last use: %s", exc)
        if d.budgets.unsettled():
            log.error(
                "%d settlement(s) could not be written (%s); their reservations are charged as interrupted at the next start",
                len(d.budgets.unsettled()), d.store.fault,
            )
        if d.fleet is not None:
            await d.fleet.stop()
        sd_status("freeing the model and closing the database")
        await asyncio.to_thread(d.close, settled)
        (self.settings.state_dir / "endpoint").unlink(missing_ok=True)
        log.info("stopped")

    def health_states(self) -> dict[str, bool]:
        """What gRPC health reports, by service name ("": overall); all not serving once draining."""
        return {name: ok and not self._draining for name, ok in self._reported.items()}

    def ready(self) -> bool:
        """Whether asks are taken now: the Ponder service serves and the daemon is not draining."""
        return self.started.is_set() and not self._draining and self._reported.get(SERVICES[0], False)

    async def _watch(self) -> None:
        """Once a second: report health, retry waiting settlements, feed the watchdog; stop if the engine died."""
        d = self.daemon
        watchdog = _watchdog_seconds()
        while not self.should_exit.is_set():
            failure = d.engine.failure()
            if failure:
                log.error("the model engine stopped: %s; shutting down so the service manager restarts Ponder", failure)
                self.exit_code = 1
                await self._report(False, d.store.writable)
                self.should_exit.set()
                return
            writable = d.store.writable or await d.store.probe()
            if writable and d.budgets.unsettled():
                n = await d.budgets.retry_unsettled()
                log.info("database takes writes again: wrote %d waiting settlement(s)", n)
            await self._report(True, d.store.writable)
            if watchdog and time.monotonic() - d.engine.last_progress() < watchdog / 2:
                sd_notify("WATCHDOG=1")
            await self._first(self.should_exit.wait(), timeout=1.0)

    async def _report(self, engine_ok: bool, database_ok: bool) -> None:
        """Set health: the engine and the database apart, and asks (overall, Ponder) only when both work."""
        if self._health is None:
            return
        models = self.daemon.engine
        states = {
            # Each other model apart: while one is down its levels are routed around, and asks go on.
            **{f"{ENGINE_HEALTH}.{name}": engine_ok and not models.down(name) for name in models.others()},
            ENGINE_HEALTH: engine_ok,
            DATABASE_HEALTH: database_ok,
            "": engine_ok and database_ok,
            SERVICES[0]: engine_ok and database_ok,
            SERVICES[1]: True,  # admin reads keep working on a full disk
        }
        for name, ok in states.items():
            if self._reported.get(name) != ok:
                if name.startswith(f"{ENGINE_HEALTH}.") and not ok and engine_ok:
                    log.error("%s; its levels are routed around", models.down(name.split(".", 2)[2]))
                if name == DATABASE_HEALTH and not ok:
                    log.error("database cannot be written: %s; asks get UNAVAILABLE until it can", self.daemon.store.fault)
                elif name == DATABASE_HEALTH and name in self._reported:
                    log.info("database takes writes again")
                self._reported[name] = ok
                status = health_pb2.HealthCheckResponse.SERVING if ok else health_pb2.HealthCheckResponse.NOT_SERVING
                await self._health.set(name, status)

    @staticmethod
    async def _first(*aws: Awaitable[Any], timeout: float | None = None) -> None:
        """Wait until the first of `aws` finishes, or `timeout` passes."""
        tasks = [asyncio.ensure_future(a) for a in aws]
        try:
            await asyncio.wait(tasks, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in tasks:
                t.cancel()

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _warn_fit(self) -> None:
        """Warn of each level that cannot run as configured on its model (planner.level_fit), naming what runs."""
        models = self.daemon.engine
        for warning in fit_warnings(
            self.daemon.policies.current(), lambda name: models.get(name).limits if name in ("", *models.names) else None,
        ):
            log.warning("policy %s: %s", self.daemon.policies.current().version, warning)

    def reload(self) -> None:
        try:
            policy, model = self.daemon.reload()
            log.info("reloaded: policy %s, risk model %s", policy.version, model.version)
            self._warn_fit()
        except PonderError as exc:
            log.error("reload refused, keeping the policy and risk model in force: %s", exc.message)
        # Apart from the policy's all-or-nothing: a bad certificate keeps only itself.
        if self._certificates is not None:
            try:
                log.info("reloaded the TLS certificate for new connections: %s", self._certificates.reload())
            except PonderError as exc:
                log.error("TLS reload refused, new connections keep the certificate in force: %s", exc.message)

    def _install_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_exit_signal)
        loop.add_signal_handler(signal.SIGHUP, lambda: loop.run_in_executor(None, self.reload))

    def _on_exit_signal(self) -> None:
        if self.should_exit.is_set():
            log.warning("second signal: cutting the drain short")
            self.force_exit.set()
        self.should_exit.set()

    def _write_endpoint(self, text: str) -> None:
        # Lets the CLI on this host find a daemon started on port 0 or a custom address.
        path = self.settings.state_dir / "endpoint"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(path)


def _watchdog_seconds() -> float:
    """systemd's WatchdogSec= for this process (WATCHDOG_USEC), or 0 when there is none."""
    usec = os.environ.get("WATCHDOG_USEC", "")
    pid = os.environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or (pid and pid != str(os.getpid())):
        return 0.0
    return int(usec) / 1e6


def _about_state_dir(exc: BaseException, settings: Settings) -> bool:
    """Whether a start-up error is the state directory's: the database's, or a file inside (or above) it."""
    if isinstance(exc, sqlite3.Error):
        return True
    names = [n for n in (getattr(exc, "filename", None), getattr(exc, "filename2", None)) if n]
    state = os.path.abspath(settings.state_dir)
    return any(
        os.path.commonpath([state, os.path.abspath(os.fsdecode(n))]) in (state, os.path.abspath(os.fsdecode(n)))
        for n in names
    )


def ask_hint(settings: Settings) -> str:
    """The command that asks this daemon something from this host, as a user would type it."""
    script = os.path.join(os.path.dirname(sys.executable), "ponder")
    if not os.path.exists(script):
        script = "ponder"
    elif not os.path.relpath(script).startswith(".."):
        script = os.path.relpath(script)
    # A second terminal may not share this one's PONDER_STATE_DIR: name any non-default dir.
    home_default = default_state_dir({k: v for k, v in os.environ.items() if k != "PONDER_STATE_DIR"})
    env = "" if settings.state_dir == home_default else f"PONDER_STATE_DIR={settings.state_dir} "
    return f'{env}{script} ask "What is 17 * 23?"'


def configure_logging(level: str, fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO), handlers=[handler])
    # APScheduler narrates every job it adds at INFO; Ponder logs each run itself.
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    # The pool retries a lost PostgreSQL every few seconds and would say so each time; the fleet ledger says it once.
    logging.getLogger("psycopg.pool").setLevel(logging.ERROR)


def run(settings: Settings) -> int:
    configure_logging(settings.log_level, settings.log_format)
    try:
        # Before the model loads: a refused listen should not take a minute to say so.
        transport.check_exposure(settings)
        server = Server(build(settings))
        asyncio.run(server.serve())
    except PonderError as exc:
        log.error("%s", exc.message)
        return 1
    except (OSError, sqlite3.Error) as exc:
        if _about_state_dir(exc, settings):
            log.error(
                "cannot use the state directory %s: %s; make it writable by this user, or set state_dir (PONDER_STATE_DIR)",
                settings.state_dir, exc,
            )
        else:  # what names its own cause (a port, a model file) is not blamed on the state directory
            log.error("could not start: %s", exc)
        return 1
    return server.exit_code
