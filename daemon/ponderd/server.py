"""The daemon's life: load -> warm -> ready -> serve; SIGTERM drains, SIGHUP reloads.

    serve()
      startup()    open the database, load and warm the model, settle reservations
                   a crash left behind, bind, report SERVING and READY=1
      main loop    until SIGTERM/SIGINT
      shutdown()   NOT_SERVING, stop taking calls, let running ones finish
                   (a second signal cuts the wait short), settle, flush, exit
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
import sys
from datetime import timedelta
from typing import Sequence

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection

from ponder.v1 import admin_pb2, admin_pb2_grpc, ponder_pb2, ponder_pb2_grpc

from .admin_service import AdminService
from .app import Daemon, build
from .auth import AuthInterceptor
from .boundary import add_servicer
from .errors import PonderError
from .service import PonderService
from .settings import Settings, SettingsError, default_state_dir, load_settings

log = logging.getLogger("ponder.server")

SERVICES = (
    ponder_pb2.DESCRIPTOR.services_by_name["Ponder"].full_name,
    admin_pb2.DESCRIPTOR.services_by_name["Admin"].full_name,
)


def create_server(daemon: Daemon, listen: str) -> tuple[grpc.aio.Server, int, health_aio.HealthServicer]:
    """A gRPC server with Ponder, Admin, health and reflection, bound to `listen` (port 0: any free port)."""
    server = grpc.aio.server(
        interceptors=[AuthInterceptor(daemon.keyring)],
        options=[
            ("grpc.max_receive_message_length", 8 * 1024 * 1024),
            # Without this, a second daemon could bind the same port and split the traffic.
            ("grpc.so_reuseport", 0),
        ],
    )
    # Through boundary.add_servicer, a body that is not valid protobuf gets INVALID_ARGUMENT.
    ponder, admin = ponder_pb2.DESCRIPTOR.services_by_name["Ponder"], admin_pb2.DESCRIPTOR.services_by_name["Admin"]
    add_servicer(ponder_pb2_grpc.add_PonderServicer_to_server, PonderService(daemon), server, ponder)
    add_servicer(admin_pb2_grpc.add_AdminServicer_to_server, AdminService(daemon), server, admin)
    health = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    reflection.enable_server_reflection((*SERVICES, "grpc.health.v1.Health", reflection.SERVICE_NAME), server)
    try:
        port = server.add_insecure_port(listen)
    except RuntimeError:  # grpcio raises where older versions returned 0
        port = 0
    if port == 0:
        raise OSError(f"could not listen on {listen}: is another process using it? set listen (PONDER_LISTEN) to a free HOST:PORT")
    return server, port, health


def sd_notify(message: str) -> None:
    """Tell systemd about our state (Type=notify); a no-op when not run by systemd."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.connect(address)
        sock.sendall(message.encode())


class Server:
    def __init__(self, daemon: Daemon, handle_signals: bool = True) -> None:
        self.daemon = daemon
        # Off when the server runs in a thread other than the main one (tests, embedding).
        self.handle_signals = handle_signals
        self.settings = daemon.settings
        self.port = 0
        self.started = asyncio.Event()
        self.should_exit = asyncio.Event()
        self.force_exit = False
        self._grpc: grpc.aio.Server | None = None
        self._health: health_aio.HealthServicer | None = None

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
        await asyncio.to_thread(d.open)
        await asyncio.to_thread(d.engine.warm)
        # Anything still reserved now was left by a process that died mid-request.
        log.info("start-up: %s", await d.jobs.expire_reservations(grace=timedelta(0)))
        log.info("start-up: %s", await d.jobs.renew_windows())
        host = self.settings.listen.rsplit(":", 1)[0]
        self._grpc, self.port, self._health = create_server(d, self.settings.listen)
        await self._grpc.start()
        self._write_endpoint(f"{host}:{self.port}")
        for name in ("", *SERVICES):
            await self._health.set(name, health_pb2.HealthCheckResponse.SERVING)
        d.jobs.start()
        if self.handle_signals:
            self._install_signals()
        sd_notify("READY=1")
        self.started.set()
        log.info(
            "Ponder listening on %s:%d (model %s, policy %s, risk model %s)",
            host, self.port, d.engine.model_name, d.policies.current().version, d.classifier.current().version,
        )
        if (self.settings.state_dir / "local.token").exists():
            log.info("ask it, from a second terminal: %s", ask_hint(self.settings))

    async def shutdown(self) -> None:
        d = self.daemon
        sd_notify("STOPPING=1")
        if self._health is not None:
            await self._health.enter_graceful_shutdown()
        if self._grpc is not None:
            grace = 0 if self.force_exit else self.settings.drain_seconds
            log.info("draining: %d request(s) running, up to %gs", len(d.pipeline.live), grace)
            # Refuses new calls at once; running ones get `grace` seconds, then are
            # cancelled, and cancellation settles what they used.
            await self._grpc.stop(grace)
        while d.pipeline.live:
            await asyncio.sleep(0.05)
        await asyncio.to_thread(d.close)
        (self.settings.state_dir / "endpoint").unlink(missing_ok=True)
        log.info("stopped")

    def reload(self) -> None:
        try:
            policy, model = self.daemon.reload()
            log.info("reloaded: policy %s, risk model %s", policy.version, model.version)
        except PonderError as exc:
            log.error("reload refused, keeping what was in force: %s", exc.message)

    def _install_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_exit_signal)
        loop.add_signal_handler(signal.SIGHUP, lambda: loop.run_in_executor(None, self.reload))

    def _on_exit_signal(self) -> None:
        if self.should_exit.is_set():
            log.warning("second signal: cutting the drain short")
            self.force_exit = True
            if self._grpc is not None:
                asyncio.ensure_future(self._grpc.stop(0))
        self.should_exit.set()

    def _write_endpoint(self, address: str) -> None:
        # Lets the CLI on this host find a daemon started on port 0 or a custom address.
        path = self.settings.state_dir / "endpoint"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(address + "\n")
        tmp.replace(path)


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


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # APScheduler narrates every job it adds at INFO; Ponder logs each run itself.
    logging.getLogger("apscheduler").setLevel(logging.WARNING)


def run(settings: Settings) -> int:
    configure_logging(settings.log_level)
    try:
        asyncio.run(Server(build(settings)).serve())
    except PonderError as exc:
        log.error("%s", exc.message)
        return 1
    except OSError as exc:
        log.error("%s", exc)
        return 1
    return 0


def settings_from_args(args: argparse.Namespace) -> Settings:
    import pathlib

    return load_settings(
        pathlib.Path(args.config) if args.config else None,
        overrides={
            "listen": args.listen,
            "state_dir": args.state_dir,
            "policy_file": args.policy_file,
            "log_level": args.log_level,
        },
    )


def main(argv: Sequence[str] | None = None) -> int:
    from ponder.cli import add_serve_arguments

    parser = argparse.ArgumentParser(prog="ponderd", description="Run the Ponder daemon in the foreground.")
    add_serve_arguments(parser)
    args = parser.parse_args(argv)
    try:
        settings = settings_from_args(args)
    except SettingsError as exc:
        print(f"ponderd: {exc}", file=sys.stderr)
        return 2
    return run(settings)


if __name__ == "__main__":
    sys.exit(main())
