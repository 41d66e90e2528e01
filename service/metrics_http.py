"""The metrics listener: ``GET /metrics`` alone, in plain HTTP, on ``metrics_port`` (when set).

Prometheus scrapes it without the main port's TLS and API keys: the exposition holds no request data, and who may
reach the port is the network's business (deploy/k8s admits only Prometheus to it). ``service.server`` starts and
stops it next to the HTTP server; the REST app then drops its own ``/metrics`` (``service.rest``).
Imports nothing from ``model``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Generator

import uvicorn
from starlette.responses import PlainTextResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from service.engine import Engine
from service.metrics import CONTENT_TYPE

log = logging.getLogger("yoloxpai.serve")
_GRACE_S = 1.0  # a scrape takes milliseconds; do not hold up the process exit for one


class _Uvicorn(uvicorn.Server):
    """uvicorn without its own signal handling: the process's shutdown order belongs to ``service.server``."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def create_metrics_app(engine: Engine) -> ASGIApp:
    """ASGI app answering ``GET /metrics`` with the engine's Prometheus text; 404/405 for anything else."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # lifespan is off; websockets are not served
            return
        if scope["path"] != "/metrics":
            response: Response = PlainTextResponse("not found: this port serves GET /metrics only", 404)
        elif scope["method"] != "GET":
            response = PlainTextResponse("method not allowed", 405, headers={"allow": "GET"})
        else:
            response = Response(engine.telemetry.render(), media_type=CONTENT_TYPE)
        await response(scope, receive, send)

    return app


class MetricsListener:
    """The metrics app on its own uvicorn server (never TLS); ``start`` binds, ``stop`` closes it."""

    def __init__(self, engine: Engine, host: str, port: int, log_level: str) -> None:
        self._engine, self._host, self._port, self._log_level = engine, host, port, log_level
        self._server: _Uvicorn | None = None
        self._task: asyncio.Task | None = None

    async def start(self) -> int:
        """Bind and serve; returns the bound port (the real one when asked for port 0)."""
        family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
        sock = socket.create_server((self._host, self._port), family=family)
        port = sock.getsockname()[1]
        config = uvicorn.Config(
            create_metrics_app(self._engine),
            lifespan="off",
            log_config=None,  # logging is set up once for the process; uvicorn must not reconfigure it
            log_level=self._log_level,
            access_log=False,  # a scrape every few seconds is noise
            timeout_graceful_shutdown=_GRACE_S,
            server_header=False,
        )
        self._server = _Uvicorn(config)
        self._task = asyncio.get_running_loop().create_task(self._server.serve(sockets=[sock]), name="metrics-http")
        while not self._server.started:  # uvicorn exposes startup only as a flag
            if self._task.done():
                self._task.result()
                raise RuntimeError("metrics server stopped during startup")
            await asyncio.sleep(0.01)
        log.info("metrics: GET /metrics in plain HTTP on port %d", port)
        return port

    async def stop(self) -> None:
        """Stop listening and close the connections (a scrape in progress gets a second)."""
        if self._server is None or self._task is None:
            return
        self._server.should_exit = True
        try:
            await asyncio.wait_for(self._task, timeout=_GRACE_S + 1.0)
        except asyncio.TimeoutError:
            log.warning("metrics server did not stop in time")
