"""Limits checked before expensive work, against a real server: a slow body is a 408, connections and gRPC streams
are bounded, admission holds a byte budget, and a client-chosen priority cannot jump the queue unless configured."""

from __future__ import annotations

import asyncio
import socket
import struct
import time

import cv2
import httpx
import pytest

from service.batched_engine import BatchedEngine
from service.errors import Overloaded
from service.imaging import EncodedImage
from service.settings import Settings
from tests.service.conftest import server_settings
from tests.service.fakes import fake_loader, marker_image
from tests.service.servers import ServerThread
from tests.service.test_engine import FAKE_BUNDLE


@pytest.fixture(scope="module")
def limited(tiny_bundle):
    settings = server_settings(tiny_bundle, body_timeout_s=0.5, max_connections=4, grpc_max_concurrent_streams=7)
    with ServerThread(settings) as running:
        yield running


def slow_post(port: int, path: str, headers: str = "") -> tuple[int, bytes, float]:
    """Send the headers and 10 of 1000 promised bytes, then nothing: returns (status, body, seconds to answer)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        start = time.monotonic()
        head = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n{headers}\r\n"
        sock.sendall(head.encode() + b"\xff\xd8" + b"x" * 8)
        data = b""
        while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) < 2:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        took = time.monotonic() - start
    status = int(data.split(b" ", 2)[1])
    return status, data.split(b"\r\n\r\n", 1)[1], took


@pytest.mark.parametrize(
    ("path", "headers"),
    [
        ("/v1/detect", "Content-Type: image/jpeg\r\n"),  # the router
        ("/v1/detect?max_detections=1&max_detections=1", "Content-Type: image/jpeg\r\n"),  # FastAPI
        ("/v2/models/tiny/infer", "Inference-Header-Content-Length: 10\r\n"),
    ],
)
def test_a_slow_body_is_a_408_within_the_body_timeout(limited, path, headers):
    status, body, took = slow_post(limited.server.http_port, path, headers)
    assert status == 408 and b"error" in body and 0.4 < took < 3.0, (status, body, took)
    assert httpx.get(limited.http_url + "/readyz").status_code == 200  # the server goes on


def test_connections_beyond_the_limit_are_refused_with_503(limited):
    held = [socket.create_connection(("127.0.0.1", limited.server.http_port)) for _ in range(4)]  # idle, open
    try:
        time.sleep(0.2)
        refused = httpx.get(limited.http_url + "/healthz", timeout=5)
        assert refused.status_code == 503  # uvicorn's own answer: refused before any of our work
    finally:
        for sock in held:
            sock.close()
    time.sleep(0.2)
    assert httpx.get(limited.http_url + "/healthz", timeout=5).status_code == 200


def test_grpc_announces_its_stream_limit(limited):
    """The server's HTTP/2 SETTINGS carry MAX_CONCURRENT_STREAMS (0x3)."""
    with socket.create_connection(("127.0.0.1", limited.server.grpc_port), timeout=10) as sock:
        sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + struct.pack(">I", 0)[1:] + b"\x04\x00" + b"\x00" * 4)
        data = b""
        while len(data) < 9 or len(data) < 9 + int.from_bytes(data[:3], "big"):
            data += sock.recv(4096)
    length, kind = int.from_bytes(data[:3], "big"), data[3]
    assert kind == 4  # SETTINGS
    settings = dict(struct.unpack(">HI", data[9 + i : 15 + i]) for i in range(0, length, 6))
    assert settings.get(0x3) == 7


def test_admission_holds_a_byte_budget():
    async def main():
        settings = Settings(bundles=[str(FAKE_BUNDLE)], tune_batch_size=False, max_inflight_bytes=3000)
        engine = BatchedEngine(settings, loader=fake_loader(infer_delay_s=0.3))
        await engine.start()
        try:
            png = cv2.imencode(".png", marker_image(7))[1].tobytes()
            image = EncodedImage(png + b"\x00" * (2000 - len(png)))  # 2000 bytes (PNG ignores the tail)
            first = asyncio.ensure_future(engine.detect(image))
            await asyncio.sleep(0.05)
            with pytest.raises(Overloaded, match="budget is 3000"):
                await engine.detect(image)  # 4000 bytes would be held
            assert (await first).width == 40  # the first request itself was served
            assert engine._inflight_bytes == 0  # released however the request ended
        finally:
            await engine.drain(5)
            await engine.close()

    asyncio.run(main())


def test_a_client_chosen_priority_is_ignored_unless_levels_are_configured():
    async def main():
        engine = BatchedEngine(Settings(bundles=[str(FAKE_BUNDLE)], tune_batch_size=False), loader=fake_loader())
        assert [engine.priority_level(p) for p in (0, 1, 2, 99)] == [1, 1, 1, 1]

    asyncio.run(main())
