"""Shared fixtures: settings in a temporary state dir, and a real daemon on a free loopback port."""

from __future__ import annotations

import asyncio
import os
import pathlib
import shutil
import threading
import time
import urllib.request
from datetime import datetime, timezone
from typing import Any, Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ponder.client import AdminClient, PonderClient
from ponderd.clock import Clock, ManualClock
from ponderd.serve.app import build
from ponderd.serve.server import Server
from ponderd.settings import Settings, load_settings

REPO = pathlib.Path(__file__).resolve().parent.parent
SMALL_POLICY = REPO / "tests" / "policies" / "small.toml"


def make_settings(state_dir: pathlib.Path, policy: pathlib.Path = SMALL_POLICY, **overrides: Any) -> Settings:
    """Settings for a test daemon: no environment leaks in, any free ports, the small policy."""
    values = {
        "state_dir": state_dir, "listen": "127.0.0.1:0", "policy_file": policy, "drain_seconds": 5,
        # Several daemons run at once (and other checkouts' tests beside them): never the fixed default port.
        "metrics": {"listen": "127.0.0.1:0"},
    }
    values.update(overrides)
    return load_settings(env={}, overrides=values)


class DaemonThread:
    """The real daemon (gRPC server, model, SQLite file) run on its own event loop in a thread."""

    def __init__(self, settings: Settings, clock: Clock | None = None) -> None:
        self.settings = settings
        self.daemon = build(settings, clock)
        self.server = Server(self.daemon, handle_signals=False)
        self._loop = asyncio.new_event_loop()
        self._error: BaseException | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="test-daemon", daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)

        async def main() -> None:
            serving = asyncio.ensure_future(self.server.serve())
            started = asyncio.ensure_future(self.server.started.wait())
            await asyncio.wait([serving, started], return_when=asyncio.FIRST_COMPLETED)
            self._ready.set()
            await serving

        try:
            self._loop.run_until_complete(main())
        except BaseException as exc:  # surfaced by start() or stop()
            self._error = exc
            self._ready.set()

    def start(self) -> DaemonThread:
        self._thread.start()
        if not self._ready.wait(120):
            raise TimeoutError("daemon did not start in 120s")
        if self._error is not None:
            raise self._error
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self.server.should_exit.set)
            self._thread.join(60)
        if self._error is not None:
            raise self._error

    def call(self, coro: Any) -> Any:
        """Run a coroutine on the daemon's loop and wait for it."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(120)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server.port}"

    def token(self, name: str = "local") -> str:
        return (self.settings.state_dir / f"{name}.token").read_text().strip()

    def client(self, token: str | None = None) -> PonderClient:
        return PonderClient(self.address, token or self.token("local"), timeout=120)

    def admin(self) -> AdminClient:
        return AdminClient(self.address, self.token("admin"), timeout=300)


@pytest.fixture(scope="module")
def engine() -> Iterator[Any]:
    """The real engine on the embedded model, one per test module: 1,024 cells, 8 sequences, 4 waiting jobs."""
    from ponderd.engine.llama import LlamaEngine
    from ponderd.settings import ModelSettings

    e = LlamaEngine(ModelSettings(n_ctx=1024, n_seq_max=8), max_queue=4)
    e.start()
    yield e
    e.close()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(datetime(2026, 3, 2, 10, 0, tzinfo=timezone.utc))


@pytest.fixture
def daemon(tmp_path: pathlib.Path) -> Iterator[DaemonThread]:
    """A fresh daemon with its own state directory."""
    d = DaemonThread(make_settings(tmp_path / "state")).start()
    yield d
    d.stop()


@pytest.fixture
def clocked_daemon(tmp_path: pathlib.Path, clock: ManualClock) -> Iterator[DaemonThread]:
    """A fresh daemon whose clock only moves when the test moves it."""
    d = DaemonThread(make_settings(tmp_path / "state"), clock).start()
    yield d
    d.stop()


@pytest.fixture(scope="module")
def shared_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonThread]:
    """One daemon for a module's read-mostly tests."""
    d = DaemonThread(make_settings(tmp_path_factory.mktemp("state"))).start()
    yield d
    d.stop()


@pytest.fixture
def cli_env(tmp_path: pathlib.Path) -> dict[str, str]:
    """Environment for running the real CLI in a subprocess without the developer's state."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PONDER_")}
    env["PONDER_STATE_DIR"] = str(tmp_path / "cli-state")
    env["PONDER_METRICS_LISTEN"] = "127.0.0.1:0"
    return env


class DaemonProcess:
    """`ponder serve` (or `ponderd`) as a real subprocess, found through its endpoint file."""

    def __init__(self, env: dict[str, str], *args: str, program: str = "ponder") -> None:
        import subprocess
        import sys

        self.env = env
        self.state_dir = pathlib.Path(env["PONDER_STATE_DIR"])
        command = [str(pathlib.Path(sys.executable).parent / program)]
        command += ["serve"] if program == "ponder" else []
        command += ["--listen", "127.0.0.1:0", "--policy-file", str(SMALL_POLICY), *args]
        self.log = self.state_dir.parent / "daemon.log"
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._log = self.log.open("w")
        self.proc = subprocess.Popen(command, env=env, stdout=self._log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 120) -> str:
        import time

        endpoint = self.state_dir / "endpoint"
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"daemon exited with {self.proc.returncode}:\n{self.log.read_text()}")
            if endpoint.exists() and "listening on" in self.log.read_text():
                return endpoint.read_text().strip()
            time.sleep(0.1)
        raise TimeoutError(self.log.read_text())

    def stop(self, timeout: float = 60) -> int:
        import signal

        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout)
        self._log.close()
        return code


@pytest.fixture
def served(cli_env: dict[str, str]) -> Iterator[DaemonProcess]:
    """A daemon subprocess the CLI finds through PONDER_STATE_DIR alone, as on a real host."""
    d = DaemonProcess(cli_env)
    d.wait_ready()
    yield d
    d.stop()


# Helpers more than one test module uses (metrics scraping, Node.js).

def scrape(d) -> dict[tuple[str, tuple], float]:
    """Every sample on the daemon's /metrics page: (name, sorted labels) -> value."""
    address = d.daemon.telemetry.address
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=30) as response:
        text = response.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples, name, **labels) -> float:
    """The sum of `name` over the samples whose labels include `labels` (0 if none)."""
    return sum(v for (n, ls), v in samples.items() if n == name and set(labels.items()) <= set(ls))


def eventually(probe, timeout: float = 30.0):
    """Poll `probe` until it returns something truthy. A refused call's status reaches the client
    (grpc's abort sends it) a moment before the daemon writes its access line and counts it."""
    deadline = time.monotonic() + timeout
    while not (result := probe()):
        assert time.monotonic() < deadline, "the daemon never recorded the call"
        time.sleep(0.02)
    return result


def counted(samples, name, **labels):
    """`samples` once `name` with `labels` has been counted, else None (for `eventually`)."""
    return samples if value(samples, name, **labels) else None


NODE_DIR = REPO / "clients" / "node"


def node_or_skip() -> str:
    node = shutil.which("node")
    if node is None or not (NODE_DIR / "node_modules" / "@grpc" / "grpc-js").is_dir():
        # CI installs Node (.ci/run) and the packages (`make tools`): missing there is a broken setup.
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("node or clients/node/node_modules is missing: `make tools` runs npm ci there")
        pytest.skip("needs node and `make tools` (npm ci in clients/node)")
    return node


@pytest.fixture(scope="session")
def pg_server() -> Iterator[Any]:
    """One throwaway PostgreSQL server for the session (tests/postgres.py); skips only without server binaries."""
    import postgres

    try:
        server = postgres.start_server()
    except FileNotFoundError as exc:
        pytest.skip(f"PostgreSQL: {exc}")
    yield server
    postgres.remove(server)


@pytest.fixture
def pg_dsn(pg_server: Any) -> str:
    """A fresh database on the session's PostgreSQL server."""
    return pg_server.database()
