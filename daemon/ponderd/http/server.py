"""The HTTP API's listener: uvicorn serving the app on the daemon's own event loop.

Started after gRPC and stopped with it by serve/server.py's lifecycle: on
shutdown the socket closes at once (new connections are refused, as gRPC
refuses new calls) while running requests finish or are stopped by the
pipeline's drain, each charged for what it used. uvicorn's own signal handling
and logging setup are not used: the daemon owns both.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from typing import Any

import uvicorn

from ponderd.errors import FailedPrecondition

log = logging.getLogger("ponder.http")


class HttpServer:
    def __init__(self, app: Any, listen: str, certfile: str | None = None, keyfile: str | None = None,
                 client_ca: str | None = None, drain_seconds: float = 30.0) -> None:
        self.app = app
        self.listen = listen
        self.tls = certfile is not None
        self.port = 0
        self.config = uvicorn.Config(
            app, log_config=None, access_log=False, lifespan="off", http="h11", loop="none",
            ssl_certfile=certfile, ssl_keyfile=keyfile, ssl_ca_certs=client_ca,
            ssl_cert_reqs=ssl.CERT_REQUIRED if client_ca else ssl.CERT_NONE,
            # The pipeline's drain ends running requests first; this is uvicorn's backstop.
            timeout_graceful_shutdown=int(drain_seconds) + 30,
            server_header=False,
        )
        self.server = uvicorn.Server(self.config)
        self._socket: socket.socket | None = None
        self._loop: asyncio.Task[None] | None = None

    @property
    def address(self) -> str:
        host = self.listen.rsplit(":", 1)[0]
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}"

    async def start(self) -> None:
        host, _, port = self.listen.rpartition(":")
        host = host.strip("[]")
        try:
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, int(port)))
            sock.listen(2048)
            sock.setblocking(False)
        except (OSError, ValueError) as exc:
            raise FailedPrecondition(
                f"could not listen for HTTP on {self.listen}: {exc}; set [http] listen (PONDER_HTTP_LISTEN, --http-listen) "
                "to a free HOST:PORT, or \"\" to turn the HTTP API off"
            ) from None
        self._socket = sock
        self.port = sock.getsockname()[1]
        self.config.load()  # reads the TLS files: a bad one fails here, at start-up
        self.server.lifespan = self.config.lifespan_class(self.config)
        await self.server.startup(sockets=[sock])
        self._loop = asyncio.ensure_future(self.server.main_loop())

    def stop_accepting(self) -> None:
        """Refuse new connections; running requests go on until stop()."""
        for s in getattr(self.server, "servers", []):
            s.close()

    async def stop(self) -> None:
        """Close the listener, wait for open connections (uvicorn's grace), free the socket."""
        self.server.should_exit = True
        if self._loop is not None:
            await asyncio.gather(self._loop, return_exceptions=True)
        if self.server.started:
            await self.server.shutdown(sockets=[self._socket] if self._socket else None)
        if self._socket is not None:
            self._socket.close()
