"""Build the serve-cpu image and run it, or the compose stack, and send one detection (needs a Docker daemon).

Opt-in (YOLOXPAI_DOCKER_TESTS=1): a build downloads base images and wheels, or needs the offline wheelhouse of
docs/deploy.md, and takes minutes. Without a reachable daemon these tests skip.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import uuid

import cv2
import numpy as np
import pytest

from ._manifests import COMPOSE_FILE, COMPOSE_REQUIRED_ENV, REPO

pytestmark = [pytest.mark.docker, pytest.mark.slow]

IMAGE = os.environ.get("YOLOXPAI_TEST_IMAGE", "yoloxpai:serve-cpu")


def _docker() -> str:
    if os.environ.get("YOLOXPAI_DOCKER_TESTS") != "1":
        pytest.skip("Docker image tests are opt-in: set YOLOXPAI_DOCKER_TESTS=1 (needs a Docker daemon)")
    docker = shutil.which("docker")
    if docker is None or subprocess.run([docker, "info"], capture_output=True).returncode != 0:
        pytest.skip("no Docker daemon is reachable")
    return docker


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _detect(http_port: int, timeout_s: float = 180.0) -> dict:
    httpx = pytest.importorskip("httpx")
    ok, jpeg = cv2.imencode(".jpg", np.full((96, 128, 3), 114, np.uint8))
    assert ok
    deadline = time.monotonic() + timeout_s
    with httpx.Client(base_url=f"http://127.0.0.1:{http_port}", timeout=10) as client:
        while True:
            try:
                if client.get("/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "server not ready in time"
            time.sleep(1)
        response = client.post("/v1/detect", content=jpeg.tobytes(), headers={"Content-Type": "image/jpeg"})
    assert response.status_code == 200, response.text
    return response.json()


def test_serve_cpu_image_builds_and_detects() -> None:
    docker = _docker()
    if os.environ.get("YOLOXPAI_TEST_IMAGE") is None:
        build = subprocess.run([docker, "build", "--target", "serve-cpu", "-t", IMAGE, str(REPO)], text=True)
        assert build.returncode == 0
    name, port = f"yoloxpai-test-{uuid.uuid4().hex[:8]}", _free_port()
    # As Kubernetes runs it: read-only root, writable /tmp only, no capabilities.
    subprocess.run(
        [docker, "run", "-d", "--name", name, "-p", f"127.0.0.1:{port}:8000", "--read-only", "--tmpfs", "/tmp",
         "--cap-drop", "ALL", IMAGE],
        check=True, capture_output=True,
    )  # fmt: skip
    try:
        _detect(port)
        # `docker stop` sends SIGTERM to PID 1 (the server, exec-form ENTRYPOINT): it must drain and exit 0.
        subprocess.run([docker, "stop", "--time", "40", name], check=True, capture_output=True)
        state = subprocess.run(
            [docker, "inspect", "--format", "{{.State.ExitCode}}", name], check=True, capture_output=True, text=True
        )
        assert state.stdout.strip() == "0"
    finally:
        subprocess.run([docker, "rm", "-f", name], capture_output=True)


def test_compose_stack_answers_a_detection() -> None:
    docker = _docker()
    if subprocess.run([docker, "compose", "version"], capture_output=True).returncode != 0:
        pytest.skip("Docker Compose v2 (`docker compose`) is not installed")
    project = f"yoloxpai-test-{uuid.uuid4().hex[:8]}"
    compose = [docker, "compose", "-f", str(COMPOSE_FILE), "-p", project]
    env = {**os.environ, **COMPOSE_REQUIRED_ENV}  # compose interpolates the whole file, grafana's password too
    try:
        subprocess.run([*compose, "up", "-d", "--build", "serve"], check=True, cwd=REPO, env=env)
        _detect(8000)
    finally:
        subprocess.run([*compose, "down", "-v"], cwd=REPO, capture_output=True, env=env)
