"""A flooded small queue answers 503 / UNAVAILABLE at once while the accepted requests still succeed."""

from __future__ import annotations

import asyncio
import time

import grpc
import httpx
import pytest

from service.pb.yoloxpai.v1 import detection_pb2 as pb
from service.pb.yoloxpai.v1 import detection_pb2_grpc as pb_grpc
from tests.service.conftest import encode, sample_image, server_settings
from tests.service.servers import ServerThread

FLOOD = 48


@pytest.fixture(scope="module")
def small_queue(tiny_bundle):
    settings = server_settings(tiny_bundle, queue_capacity=2, max_batch_size=1, decode_threads=1, retry_after_s=2)
    with ServerThread(settings) as running:
        yield running


@pytest.fixture(scope="module")
def big_jpeg() -> bytes:
    return encode(sample_image(480, 640, seed=5))


def test_rest_flood(small_queue, big_jpeg):
    async def one(client: httpx.AsyncClient) -> tuple[int, float, httpx.Response]:
        t0 = time.perf_counter()
        response = await client.post("/v1/detect", content=big_jpeg, headers={"content-type": "image/jpeg"})
        return response.status_code, time.perf_counter() - t0, response

    async def flood():
        limits = httpx.Limits(max_connections=FLOOD)
        async with httpx.AsyncClient(base_url=small_queue.http_url, timeout=60, limits=limits) as client:
            return await asyncio.gather(*(one(client) for _ in range(FLOOD)))

    outcomes = asyncio.run(flood())
    statuses = [status for status, _, _ in outcomes]
    assert set(statuses) <= {200, 503}, statuses
    assert statuses.count(503) > 0 and statuses.count(200) > 0
    for status, _, response in outcomes:
        if status == 503:
            assert response.headers["retry-after"] == "2"
            assert response.json()["error"]["code"] == "overloaded"
        else:
            assert response.json()["results"][0]["width"] == 640
    rejected = sorted(s for status, s, _ in outcomes if status == 503)
    accepted = sorted(s for status, s, _ in outcomes if status == 200)
    assert rejected[len(rejected) // 2] <= accepted[-1]  # refusals do not wait for the queue
    metrics = httpx.get(small_queue.http_url + "/metrics").text
    assert 'yoloxpai_rejected_total{model="tiny",reason="queue_full"}' in metrics
    good = httpx.post(small_queue.http_url + "/v1/detect", content=big_jpeg, headers={"content-type": "image/jpeg"})
    assert good.status_code == 200


def test_grpc_flood(small_queue, big_jpeg):
    request = pb.DetectRequest(image=pb.Image(encoded=big_jpeg))
    with grpc.insecure_channel(small_queue.grpc_target) as channel:
        stub = pb_grpc.DetectorStub(channel)
        futures = [stub.Detect.future(request, timeout=60) for _ in range(FLOOD)]
        codes = []
        for future in futures:
            try:
                assert future.result().width == 640
                codes.append(grpc.StatusCode.OK)
            except grpc.RpcError as err:
                codes.append(err.code())
                assert dict(err.trailing_metadata())["retry-after"] == "2"
        assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE}
        assert grpc.StatusCode.UNAVAILABLE in codes and grpc.StatusCode.OK in codes
        assert stub.Detect(request, timeout=30).width == 640
