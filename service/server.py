"""Process lifecycle: REST (uvicorn) and gRPC (grpc.aio) on one event loop over one engine; SIGTERM drain.

Start: bind both ports first (liveness answers while models load), load + warm every bundle, then ready.
Shutdown (SIGTERM/SIGINT, handled here, not by uvicorn): not ready -> optional ``shutdown_delay_s`` while still
serving -> drain (new requests get 503/UNAVAILABLE, streams stop reading and answer what they read, accepted work
finishes, bounded by ``drain_timeout_s``) -> close listeners -> stop threads -> exit 0 (1 if the drain timed out).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import time
from collections.abc import Generator

import uvicorn

from service.batched_engine import BatchedEngine
from service.bundles import PredictorLoader
from service.grpc_host import EngineHealthServicer, create_server
from service.http_app import create_http_app
from service.metrics_http import MetricsListener
from service.settings import Settings

log = logging.getLogger("yoloxpai.serve")


class _Uvicorn(uvicorn.Server):
    """uvicorn without its own signal handling: shutdown order is ours (readiness, drain, then listeners)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def bind_socket(host: str, port: int) -> socket.socket:
    """A bound TCP socket for uvicorn (port 0 = any free port; the caller reads the real one)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto must be IPPROTO_TCP (not 0): asyncio sets TCP_NODELAY on accepted sockets only then; without it,
    # Nagle + delayed ACKs add ~40 ms to every small response.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    return sock


class Server:
    """Both front ends and the engine, started and stopped together."""

    def __init__(self, settings: Settings, *, loader: PredictorLoader | None = None) -> None:
        self.settings = settings
        self.engine = BatchedEngine(settings, loader=loader)
        self.http_port = 0
        self.grpc_port = 0
        self.metrics_port: int | None = None  # set when settings.metrics_port is: /metrics on its own port
        self._http: _Uvicorn | None = None
        self._metrics: MetricsListener | None = None
        self._http_task: asyncio.Task | None = None
        self._grpc = None
        self._health: EngineHealthServicer | None = None

    async def start(self) -> None:
        """Bind and start both servers, then load and warm the models (ready afterwards)."""
        s = self.settings
        sock = bind_socket(s.host, s.http_port)
        self.http_port = sock.getsockname()[1]
        config = uvicorn.Config(
            create_http_app(self.engine, s),
            lifespan="off",
            log_config=None,  # its records go to our handler (text or JSON, with request ids)
            log_level=s.log_level,
            access_log=False,  # the router writes one access line per request, with its request id
            timeout_graceful_shutdown=max(s.drain_timeout_s, 1.0),
            limit_concurrency=s.max_connections,
            server_header=False,
            ssl_certfile=str(s.tls_cert_file) if s.tls_cert_file else None,
            ssl_keyfile=str(s.tls_key_file) if s.tls_key_file else None,
        )
        self._http = _Uvicorn(config)
        self._http_task = asyncio.get_running_loop().create_task(self._http.serve(sockets=[sock]), name="http")
        while not self._http.started:  # uvicorn exposes startup only as a flag
            if self._http_task.done():
                self._http_task.result()
                raise RuntimeError("HTTP server stopped during startup")
            await asyncio.sleep(0.01)
        if s.metrics_port is not None:
            self._metrics = MetricsListener(self.engine, s.host, s.metrics_port, s.log_level)
            self.metrics_port = await self._metrics.start()
        self._grpc, self.grpc_port, self._health = create_server(self.engine, s)
        await self._grpc.start()
        log.info("listening: http_port=%d grpc_port=%d (loading models)", self.http_port, self.grpc_port)
        await self.engine.start()
        await self._health.publish()
        log.info("ready: models %s", ", ".join(f"{m.name} v{m.version}" for m in self.engine.models()))

    async def shutdown(self) -> bool:
        """Graceful stop; returns whether every accepted request was answered within the drain timeout."""
        s = self.settings
        t0 = time.monotonic()
        self.engine.begin_shutdown()
        if self._health is not None:
            await self._health.enter_graceful_shutdown()  # gRPC health: NOT_SERVING from now on
        if s.shutdown_delay_s > 0:
            log.info("not ready; serving %.1fs more before draining", s.shutdown_delay_s)
            await asyncio.sleep(s.shutdown_delay_s)
        log.info("draining: %d request(s) in flight", self.engine.inflight)
        drained = await self.engine.drain(s.drain_timeout_s)
        remaining_s = max(s.drain_timeout_s - (time.monotonic() - t0), 1.0)
        if self._http is not None:
            self._http.should_exit = True
        if self._grpc is not None:
            await self._grpc.stop(grace=remaining_s)  # streams have ended; cancels whatever outlives the grace
        if self._http_task is not None:
            try:
                await asyncio.wait_for(self._http_task, timeout=remaining_s + 1.0)
            except asyncio.TimeoutError:
                log.warning("HTTP server did not stop in time")
        if self._metrics is not None:  # after the HTTP server: the drain stays observable to the end
            await self._metrics.stop()
        await self.engine.close()
        succeeded = sum(state.stats.success_count for state in self.engine.model_states())
        log.info("stopped: drained=%s in_flight_at_exit=%d succeeded=%d", drained, self.engine.inflight, succeeded)
        return drained


async def serve(settings: Settings, *, loader: PredictorLoader | None = None) -> int:
    """Run until SIGTERM/SIGINT, then shut down gracefully. Returns the process exit code."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    server = Server(settings, loader=loader)
    starting = loop.create_task(server.start(), name="start")
    stopping = loop.create_task(stop.wait(), name="signal")
    await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
    if starting.done() and starting.exception() is not None:
        stopping.cancel()
        await server.shutdown()
        raise starting.exception()  # type: ignore[misc]
    if not starting.done():  # a signal during model loading: stop without waiting for it
        starting.cancel()
        await asyncio.gather(starting, return_exceptions=True)
    await stopping
    log.info("signal received: shutting down")
    drained = await server.shutdown()
    return 0 if drained else 1
