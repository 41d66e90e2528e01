"""gRPC against a real server with the tiny bundle: unary, streaming (order, in-band errors, window, cancel),
ListModels, health, reflection, and every status code with real bad inputs."""

from __future__ import annotations

import threading
import time

import grpc
import httpx
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from service.pb.yoloxpai.v1 import detection_pb2 as pb
from service.pb.yoloxpai.v1 import detection_pb2_grpc as pb_grpc
from tests.service.conftest import encode, sample_image
from tests.service.test_rest import PNG_BOMB, planted_bug


@pytest.fixture(scope="module")
def channel(server):
    with grpc.insecure_channel(server.grpc_target) as ch:
        grpc.channel_ready_future(ch).result(timeout=10)
        yield ch


@pytest.fixture(scope="module")
def stub(channel):
    return pb_grpc.DetectorStub(channel)


def encoded(data: bytes, **kwargs) -> pb.DetectRequest:
    return pb.DetectRequest(image=pb.Image(encoded=data), **kwargs)


def test_unary_encoded_and_raw_agree_with_rest(stub, server, jpeg):
    response = stub.Detect(encoded(jpeg, frame_id=7), timeout=30)
    assert (response.model, response.width, response.height, response.frame_id) == ("tiny", 128, 96, 7)
    assert response.timing.total_ms > 0
    rest = httpx.post(server.http_url + "/v1/detect", content=jpeg, headers={"content-type": "image/jpeg"}).json()
    expected = rest["results"][0]["detections"]
    assert len(response.detections) == len(expected)
    for got, want in zip(response.detections, expected, strict=True):
        assert [got.box.x1, got.box.y1, got.box.x2, got.box.y2] == pytest.approx(want["box"], abs=1e-3)
        assert (got.class_id, got.class_name) == (want["class_id"], want["class_name"])
    image = sample_image()
    raw = pb.RawImage(width=128, height=96, channel_order=pb.CHANNEL_ORDER_BGR, pixels=image.tobytes())
    assert stub.Detect(pb.DetectRequest(image=pb.Image(raw=raw)), timeout=30).width == 128
    rgb = pb.RawImage(width=128, height=96, channel_order=pb.CHANNEL_ORDER_RGB, pixels=image[..., ::-1].tobytes())
    assert stub.Detect(pb.DetectRequest(image=pb.Image(raw=rgb)), timeout=30).width == 128


def test_list_models(stub):
    (model,) = stub.ListModels(pb.ListModelsRequest(), timeout=10).models
    assert model.name == "tiny" and model.default and model.classes and model.max_batch_size >= 1
    assert model.input_height > 0 and model.input_width > 0 and list(model.devices) == ["cpu"]


BAD = {
    "no-image": (pb.DetectRequest(), grpc.StatusCode.INVALID_ARGUMENT),
    "empty-bytes": (encoded(b""), grpc.StatusCode.INVALID_ARGUMENT),
    "text-bytes": (encoded(b"not an image at all"), grpc.StatusCode.INVALID_ARGUMENT),
    "truncated-jpeg": ("TRUNCATED", grpc.StatusCode.INVALID_ARGUMENT),
    "raw-wrong-length": (
        pb.DetectRequest(image=pb.Image(raw=pb.RawImage(width=10, height=10, pixels=b"\0" * 299))),
        grpc.StatusCode.INVALID_ARGUMENT,
    ),
    "threshold-above-one": ("JPEG:score_threshold=2", grpc.StatusCode.INVALID_ARGUMENT),
    "unknown-class": ("JPEG:class_names=no_such_class", grpc.StatusCode.INVALID_ARGUMENT),
    "unknown-model": ("JPEG:model=nope", grpc.StatusCode.NOT_FOUND),
    "png-bomb-header": (encoded(PNG_BOMB), grpc.StatusCode.RESOURCE_EXHAUSTED),
    "raw-too-many-pixels": (
        pb.DetectRequest(image=pb.Image(raw=pb.RawImage(width=50_000, height=50_000))),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    ),
    "message-over-16mb": (encoded(b"\xff\xd8\xff" + bytes(17 * 1024 * 1024)), grpc.StatusCode.RESOURCE_EXHAUSTED),
}


def _request(spec, jpeg: bytes) -> pb.DetectRequest:
    if spec == "TRUNCATED":
        return encoded(jpeg[: len(jpeg) // 2])
    if isinstance(spec, str):
        _, _, option = spec.partition(":")
        key, _, value = option.partition("=")
        request = encoded(jpeg)
        if key == "score_threshold":
            request.score_threshold = float(value)
        elif key == "class_names":
            request.class_names.append(value)
        else:
            setattr(request, key, value)
        return request
    return spec


@pytest.mark.parametrize("case", list(BAD), ids=list(BAD))
def test_bad_requests_get_their_status_and_the_server_keeps_serving(stub, jpeg, case):
    spec, code = BAD[case]
    with pytest.raises(grpc.RpcError) as err:
        stub.Detect(_request(spec, jpeg), timeout=30)
    assert err.value.code() == code, err.value.details()
    assert err.value.details()
    assert stub.Detect(encoded(jpeg), timeout=30).width == 128


def test_client_deadline_is_honoured(stub, jpeg):
    with pytest.raises(grpc.RpcError) as err:
        stub.Detect(encoded(jpeg), timeout=0.0005)
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert stub.Detect(encoded(jpeg), timeout=30).width == 128


def test_stream_answers_in_order_with_in_band_errors(stub, jpeg):
    images = [encode(sample_image(64 + 16 * (i % 5), 80 + 16 * (i % 3), seed=i)) for i in range(24)]
    requests = [encoded(data, frame_id=1000 + i) for i, data in enumerate(images)]
    requests[5] = encoded(b"garbage frame", frame_id=1005)
    requests[11] = encoded(jpeg, frame_id=1011, model="nope")
    responses = list(stub.DetectStream(iter(requests), timeout=60))
    assert [r.frame_id for r in responses] == [1000 + i for i in range(24)]
    for i, response in enumerate(responses):
        if i == 5:
            assert response.status.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
            assert response.status.error == "invalid_image" and response.status.message
        elif i == 11:
            assert response.status.code == grpc.StatusCode.NOT_FOUND.value[0]
        else:
            assert response.status.code == 0, response.status
            assert (response.height, response.width) == (64 + 16 * (i % 5), 80 + 16 * (i % 3))


def test_stream_window_bounds_frames_in_flight(stub, server):
    window = server.settings.stream_window
    big = encode(sample_image(480, 640, seed=1))
    peak = 0
    done = threading.Event()

    def sample():
        nonlocal peak
        while not done.is_set():
            peak = max(peak, server.engine.inflight)
            time.sleep(0.0005)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        responses = list(stub.DetectStream(iter([encoded(big, frame_id=i) for i in range(40)]), timeout=60))
    finally:
        done.set()
        sampler.join()
    assert len(responses) == 40 and all(r.status.code == 0 for r in responses)
    assert 1 <= peak <= window


def test_stream_cancel_drops_queued_frames(stub, server):
    big = encode(sample_image(960, 1280, seed=2))
    before = server.engine.telemetry.statistics("tiny")
    frames = [encoded(big, frame_id=i) for i in range(200)]
    call = stub.DetectStream(iter(frames), timeout=60)
    first = next(call)
    assert first.frame_id == 0
    call.cancel()
    with pytest.raises(grpc.RpcError) as err:
        list(call)
    assert err.value.code() == grpc.StatusCode.CANCELLED
    deadline = time.monotonic() + 10
    while server.engine.inflight and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.engine.inflight == 0
    after = server.engine.telemetry.statistics("tiny")
    computed = after.inference_count - before.inference_count
    assert computed < 200
    assert stub.Detect(encoded(big), timeout=30).width == 1280


def test_health_and_reflection(channel):
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", "yoloxpai.v1.Detector"):
        reply = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    with pytest.raises(grpc.RpcError) as err:
        health.Check(health_pb2.HealthCheckRequest(service="nope"), timeout=5)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
    requests = [
        reflection_pb2.ServerReflectionRequest(list_services=""),
        reflection_pb2.ServerReflectionRequest(file_containing_symbol="yoloxpai.v1.Detector"),
    ]
    listed, described = list(reflection.ServerReflectionInfo(iter(requests), timeout=5))
    names = {s.name for s in listed.list_services_response.service}
    assert {"yoloxpai.v1.Detector", "grpc.health.v1.Health"} <= names
    assert described.file_descriptor_response.file_descriptor_proto


def test_grpc_metrics_are_labelled(server, stub, jpeg):
    stub.Detect(encoded(jpeg), timeout=30)
    text = httpx.get(server.http_url + "/metrics").text
    sample = 'yoloxpai_requests_total{code="ok",model="tiny",protocol="grpc"} '
    assert sample in text
    assert np.isfinite(float(text.split(sample)[1].split()[0]))


def test_a_bug_is_unknown_and_counted_as_an_error(server, stub, jpeg, monkeypatch):
    with planted_bug(server, monkeypatch, "detect", "grpc"), pytest.raises(grpc.RpcError) as failure:
        stub.Detect(encoded(jpeg), timeout=30)
    assert failure.value.code() == grpc.StatusCode.UNKNOWN


def test_a_bug_in_a_stream_frame_ends_the_stream_unknown_and_is_counted(server, stub, jpeg, monkeypatch):
    with planted_bug(server, monkeypatch, "detect", "grpc"), pytest.raises(grpc.RpcError) as failure:
        list(stub.DetectStream(iter([encoded(jpeg)]), timeout=30))
    assert failure.value.code() == grpc.StatusCode.UNKNOWN
