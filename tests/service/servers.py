"""Running real servers in tests: in a background thread (fast, many per session) or as a ``yoloxpai serve``
subprocess (signals). Both bind free ports (port 0) and report the real ones."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

from service.server import Server
from service.settings import Settings

REPO = Path(__file__).resolve().parents[2]


_LOGGERS = ("", "uvicorn")


class _ErrorLog(logging.Handler):
    """Collects ERROR records (an unhandled exception in a handler, a dead batcher) while a server runs."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(self.format(record))


class ServerThread:
    """A real :class:`service.server.Server` on its own event loop in a daemon thread (a context manager).

    Leaving the context fails the test if the server logged an error meanwhile: every bad input must be answered
    by the error mapping, never by an unhandled exception.
    """

    def __init__(self, settings: Settings, loader=None) -> None:
        self.settings = settings
        self.loader = loader  # a PredictorLoader (default: the real bundle loader)
        self.server: Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None
        self.drained: bool | None = None
        self._thread = threading.Thread(target=self._main, name="test-server", daemon=True)

    def _main(self) -> None:
        async def run() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            self.server = Server(self.settings, loader=self.loader)
            try:
                await self.server.start()
            except BaseException as exc:
                self._error = exc
                self._started.set()
                await self.server.shutdown()
                return
            self._started.set()
            await self._stop.wait()
            self.drained = await self.server.shutdown()

        asyncio.run(run())

    def __enter__(self) -> ServerThread:
        self.error_log = _ErrorLog()
        self._thread.start()
        if not self._started.wait(120):
            raise TimeoutError("server did not start in 120 s")
        if self._error is not None:
            raise self._error
        # After start: uvicorn's Config re-applies its logging config (replacing handlers) when created, and its
        # loggers do not propagate to the root.
        for name in _LOGGERS:
            logging.getLogger(name).addHandler(self.error_log)
        return self

    def stop(self) -> None:
        """Graceful shutdown (as on SIGTERM) and wait for the thread."""
        if self._loop is not None and self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(60)

    def __exit__(self, exc_type, *exc_info) -> None:
        self.stop()
        for name in _LOGGERS:
            logging.getLogger(name).removeHandler(self.error_log)
        if exc_type is None:
            assert not self.error_log.records, "server logged errors:\n" + "\n".join(self.error_log.records)

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.server.http_port}"

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.server.grpc_port}"

    @property
    def engine(self):
        return self.server.engine


class ServeProcess:
    """``yoloxpai serve ... --http-port 0 --grpc-port 0`` as a subprocess; its log is read by a thread."""

    def __init__(self, *flags: str, env: dict[str, str] | None = None) -> None:
        cmd = [sys.executable, "-m", "yoloxpai.cli", "serve", "--host", "127.0.0.1", "--http-port", "0"]
        cmd += ["--grpc-port", "0", *flags]
        self.proc = subprocess.Popen(
            cmd,
            cwd=REPO,
            env={**os.environ, **(env or {})},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self.http_port = self.grpc_port = 0
        self._ready = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stderr:
            self.lines.append(line)
            match = re.search(r"http_port=(\d+) grpc_port=(\d+)", line)
            if match:
                self.http_port, self.grpc_port = int(match.group(1)), int(match.group(2))
            if "ready: models" in line:  # text or JSON log lines
                self._ready.set()
        self._ready.set()  # exited: wake the waiter

    def wait_ready(self, timeout_s: float = 120) -> ServeProcess:
        """Block until the server logs that it is ready."""
        if not self._ready.wait(timeout_s) or self.proc.poll() is not None:
            self.proc.kill()
            raise RuntimeError("server did not become ready:\n" + self.log)
        return self

    @property
    def log(self) -> str:
        return "".join(self.lines)

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 60) -> int:
        """Signal the server and wait for its exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._reader.join(10)
        return self.proc.returncode
