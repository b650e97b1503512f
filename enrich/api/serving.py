"""Serving the API: uvicorn in a thread of the ``serve`` process, on the configured host and
port.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from typing import Any

from fastapi import FastAPI

from enrich.api.app import create_app
from enrich.api.common import _is_loopback
from enrich.api_token import ensure_token
from enrich.config import Settings
from enrich.errors import ConfigError, EnrichError
from enrich.service import Services

log = logging.getLogger(__name__)


class ApiServer:
    """uvicorn on a socket bound up front (so a taken port fails before anything starts),
    running on a daemon thread; ``stop`` ends it within a couple of seconds."""

    def __init__(self, host: str, port: int):
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.sock.bind((host, port))
        except OSError as exc:
            self.sock.close()
            raise ConfigError(f"ENRICH_API_ADDRESS {host}:{port}: {exc.strerror}; another "
                              "`serve` may hold it: pick another port, or "
                              "ENRICH_API_ADDRESS=off") from None
        self.sock.listen(128)
        self.host = host
        self.port = self.sock.getsockname()[1]
        self._server: Any = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self, app: FastAPI, timeout: float = 15.0) -> ApiServer:
        import uvicorn

        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off",
                                timeout_graceful_shutdown=2)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run,
                                        kwargs={"sockets": [self.sock]}, name="enrich-api",
                                        daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise EnrichError(f"the API did not start on {self.url}")
            time.sleep(0.02)
        return self

    def stop(self, timeout: float = 3.0) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
        self.sock.close()


def serve(settings: Settings, services: Services,
          bound: ApiServer | None = None) -> tuple[ApiServer, str]:
    """Start the API for ``services`` on ``ENRICH_API_ADDRESS`` (or the ``bound`` socket);
    returns the server and where the token comes from."""
    source = ensure_token(settings)[1]
    server = bound or ApiServer(settings.api_host or "127.0.0.1", settings.api_port)
    if not _is_loopback(server.host):
        log.warning("the API listens on %s: reads from other hosts need the token too",
                    server.url)
    app = create_app(settings, services)  # it reads the token file as it changes
    app.state.desk.held([])  # learn the universe before the first request
    return server.start(app), source
