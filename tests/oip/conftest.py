"""Fixtures of the Open Inference Protocol tests: one real server on free ports with the tiny bundle (served as
``tiny``), shared by the package, and images of different sizes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.service.conftest import encode, sample_image, server_settings
from tests.service.servers import ServerThread


@pytest.fixture(scope="package")
def server(tiny_bundle: Path) -> Iterator[ServerThread]:
    """A real server (REST + gRPC) on ``tiny_bundle``; small limits so oversized requests are cheap to make."""
    settings = server_settings(tiny_bundle, max_request_bytes=512 * 1024, max_image_pixels=2_000_000)
    with ServerThread(settings) as running:
        yield running


@pytest.fixture(scope="package")
def images() -> list[bytes]:
    """Three JPEGs of different sizes (one request may mix sizes)."""
    return [
        encode(sample_image(96, 128, seed=0)),
        encode(sample_image(160, 120, seed=1)),
        encode(sample_image(64, 200, seed=2)),
    ]
