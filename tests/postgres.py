"""A throwaway PostgreSQL server for tests: initdb + pg_ctl from the system's packages, in a temp dir.

PostgreSQL refuses to run as root, and CI runs as root, so the server runs as
the unprivileged `postgres` user (`runuser -u postgres`) when the tests are
root. It listens on a free loopback port and on a Unix socket in its own
directory; every test gets a database of its own (`PgServer.database`).
The tests skip, saying why, only when no server binaries exist at all
(.ci/run installs them from Debian's `postgresql` package).
"""

from __future__ import annotations

import glob
import os
import pathlib
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from dataclasses import dataclass


def server_bin() -> pathlib.Path | None:
    """The directory holding initdb and pg_ctl (Debian keeps them out of PATH), or None."""
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if (pathlib.Path(candidate) / "pg_ctl").exists():
            return pathlib.Path(candidate)
    found = shutil.which("pg_ctl")
    return pathlib.Path(found).parent if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class PgServer:
    bin: pathlib.Path
    root: pathlib.Path
    port: int
    user: str | None  # the OS user the server runs as (None: this one)

    @property
    def data(self) -> pathlib.Path:
        return self.root / "data"

    @property
    def sockets(self) -> pathlib.Path:
        return self.root / "sock"

    def _run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
        cmd = [str(self.bin / argv[0]), *argv[1:]]
        if self.user:
            cmd = ["runuser", "-u", self.user, "--", *cmd]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=check)

    def init(self) -> None:
        self.sockets.mkdir(exist_ok=True)
        if self.user:
            uid, gid = pwd.getpwnam(self.user).pw_uid, pwd.getpwnam(self.user).pw_gid
            for p in (self.root, self.sockets):
                os.chown(p, uid, gid)
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8")

    def start(self) -> None:
        opts = (
            f"-p {self.port} -k {self.sockets} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c max_connections=300 -c shared_buffers=32MB"
        )
        self._run("pg_ctl", "-D", str(self.data), "-o", opts, "-l", str(self.root / "log"), "-w", "-t", "60", "start")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop", check=False)

    def dsn(self, dbname: str = "postgres") -> str:
        return f"host=127.0.0.1 port={self.port} user=postgres dbname={dbname}"

    def database(self) -> str:
        """A fresh, empty database; returns its DSN."""
        import psycopg

        name = "t_" + uuid.uuid4().hex[:12]
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.dsn(name)

    def log(self) -> str:
        path = self.root / "log"
        return path.read_text(errors="replace") if path.exists() else ""


def start_server() -> PgServer:
    """Start a server in a fresh directory under the system's temp dir (reachable by the server's user)."""
    binaries = server_bin()
    if binaries is None:
        raise FileNotFoundError("no PostgreSQL server binaries (initdb, pg_ctl): apt-get install -y postgresql")
    user = None
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            raise FileNotFoundError("running as root needs the 'postgres' user (the postgresql package makes it)")
        user = "postgres"
    server = PgServer(binaries, pathlib.Path(tempfile.mkdtemp(prefix="ponder-pg-")), _free_port(), user)
    server.init()
    server.start()
    return server


def remove(server: PgServer) -> None:
    server.stop("immediate")
    shutil.rmtree(server.root, ignore_errors=True)
