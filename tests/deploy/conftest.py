"""Fixtures for the deployment tests: a real ``yoloxpai serve`` process on free loopback ports."""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

READY_TIMEOUT_S = 120.0


@dataclass
class LiveServer:
    """A running server process started the way the images start it (``yoloxpai serve``)."""

    process: subprocess.Popen
    http_port: int
    grpc_port: int
    log_path: Path
    drain_timeout_s: float

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def log_tail(self, chars: int = 4000) -> str:
        """The end of the server's combined stdout/stderr, for failure messages."""
        return self.log_path.read_text(errors="replace")[-chars:]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


@pytest.fixture
def live_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LiveServer]:
    """``yoloxpai serve`` on the ``tiny_bundle`` fixture's bundle; skips until both exist."""
    if importlib.util.find_spec("service.cli") is None:
        pytest.skip("the server (service.cli) is not importable yet")
    try:
        bundle = request.getfixturevalue("tiny_bundle")
    except pytest.FixtureLookupError:
        pytest.skip("the tiny_bundle fixture (tests/conftest.py) is not provided yet")

    http_port, grpc_port, drain_timeout_s = _free_port(), _free_port(), 5.0
    script = Path(sys.executable).with_name("yoloxpai")  # the console script the images run
    command = [str(script)] if script.exists() else [sys.executable, "-m", "yoloxpai.cli"]
    command += ["serve", "--http-port", str(http_port), "--grpc-port", str(grpc_port)]
    env = {key: value for key, value in os.environ.items() if not key.startswith("YOLOXPAI_")}
    # The CPU deployment's backend (deploy/k8s/overlays/cpu, docker-compose.yml).
    env.update(
        YOLOXPAI_BUNDLES=str(bundle),
        YOLOXPAI_BACKEND="onnxruntime",
        YOLOXPAI_DRAIN_TIMEOUT_S=str(drain_timeout_s),
        YOLOXPAI_HOST="127.0.0.1",
    )
    log_path = tmp_path / "server.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    server = LiveServer(process, http_port, grpc_port, log_path, drain_timeout_s)
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while _status(f"{server.url}/readyz") != 200:
            if process.poll() is not None:
                pytest.fail(f"server exited with {process.returncode} before ready:\n{server.log_tail()}")
            if time.monotonic() > deadline:
                pytest.fail(f"server not ready after {READY_TIMEOUT_S:.0f} s:\n{server.log_tail()}")
            time.sleep(0.2)
        yield server
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=drain_timeout_s + 15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
