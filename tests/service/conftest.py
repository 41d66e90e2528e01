"""Fixtures of the service tests. Server-level fixtures run the real bundle runtime on ``tiny_bundle`` (provided
by ``tests/conftest.py``: an ONNX Runtime bundle of a tiny random-weight model)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from service.settings import Settings
from tests.service.servers import ServerThread


def sample_image(height: int = 96, width: int = 128, seed: int = 0) -> np.ndarray:
    """A deterministic BGR image with a few filled shapes (something for a detector to look at)."""
    rng = np.random.default_rng(seed)
    image = np.full((height, width, 3), 114, np.uint8)
    for _ in range(4):
        x1, y1 = int(rng.integers(0, width - 20)), int(rng.integers(0, height - 20))
        color = tuple(int(c) for c in rng.integers(0, 255, 3))
        cv2.rectangle(image, (x1, y1), (x1 + int(rng.integers(10, 40)), y1 + int(rng.integers(10, 40))), color, -1)
    return image


def encode(image: np.ndarray, ext: str = ".jpg") -> bytes:
    ok, buf = cv2.imencode(ext, image)
    assert ok
    return buf.tobytes()


@pytest.fixture(scope="session")
def jpeg() -> bytes:
    """A 128 x 96 JPEG."""
    return encode(sample_image())


def server_settings(bundle: Path, **overrides) -> Settings:
    """Settings for a test server on free local ports."""
    values = dict(
        bundles=[f"tiny={bundle}"],
        host="127.0.0.1",
        http_port=0,
        grpc_port=0,
        max_batch_size=4,
        instances_per_device=1,  # the tests reason about one batch at a time, whatever the machine's cores
        decode_threads=2,
        drain_timeout_s=10.0,
        tune_batch_size=False,  # keep real batching in play (tuning may pick 1 for the tiny model on a CPU)
        log_level="warning",
    )
    values.update(overrides)
    return Settings(**values)


@pytest.fixture(scope="module")
def server(tiny_bundle: Path) -> Iterator[ServerThread]:
    """A real server on ``tiny_bundle`` (served as ``tiny``), small limits so 413 is cheap to provoke."""
    settings = server_settings(tiny_bundle, max_request_bytes=256 * 1024, max_image_pixels=2_000_000)
    with ServerThread(settings) as running:
        yield running


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for localhost / 127.0.0.1: ``(cert.pem, key.pem)``."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl CLI")
    out = tmp_path_factory.mktemp("tls")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
         "-keyout", str(out / "key.pem"), "-out", str(out / "cert.pem")],
        check=True, capture_output=True,
    )  # fmt: skip
    return out / "cert.pem", out / "key.pem"
