"""OIP over gRPC against a real server, driven by NVIDIA's ``tritonclient.grpc`` (sync, streaming and asyncio)
and by Triton's own generated stub: health, metadata, config, statistics, ModelInfer with raw and typed contents,
ModelStreamInfer with in-band errors (and ``triton_grpc_error``), results equal ``POST /v1/detect``."""

from __future__ import annotations

import asyncio
import queue
import re

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.grpc.aio as triton_grpc_aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tritonclient.grpc import service_pb2 as triton_pb
from tritonclient.grpc import service_pb2_grpc as triton_pb_grpc
from tritonclient.utils import InferenceServerException

from tests.oip.helpers import as_outputs, assert_outputs_match_v1, v1_detect
from tests.service.conftest import encode, sample_image
from tests.service.test_rest import planted_bug


@pytest.fixture(scope="module")
def client(server):
    client = triton_grpc.InferenceServerClient(server.grpc_target)
    yield client
    client.close()


@pytest.fixture(scope="module")
def expected(server, images) -> list[list[dict]]:
    return [v1_detect(server.http_url, image) for image in images]


def image_input(images: list[bytes]) -> triton_grpc.InferInput:
    tensor = triton_grpc.InferInput("IMAGE", [len(images)], "BYTES")
    tensor.set_data_from_numpy(np.array(images, dtype=object))
    return tensor


def test_health_metadata_and_config(client, server):
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("tiny")
    assert not client.is_model_ready("nope") and not client.is_model_ready("tiny", "2")
    metadata = client.get_server_metadata(as_json=True)
    assert metadata["name"] == "yoloxpai" and "binary_tensor_data" in metadata["extensions"]
    model = client.get_model_metadata("tiny", as_json=True)
    assert [(t["name"], t["datatype"], t["shape"]) for t in model["inputs"]] == [
        ("IMAGE", "BYTES", ["-1"]),
        ("IMAGE_RAW", "UINT8", ["-1", "-1", "-1", "3"]),
    ]
    config = client.get_model_config("tiny").config  # the protobuf message, as perf_analyzer reads it
    assert (config.name, config.max_batch_size, config.backend) == ("tiny", 4, "yoloxpai")
    assert [(i.name, i.data_type) for i in config.input] == [("IMAGE", 13), ("IMAGE_RAW", 2)]  # TYPE_STRING, UINT8
    assert config.dynamic_batching.max_queue_delay_microseconds == 4000
    assert config.dynamic_batching.default_queue_policy.allow_timeout_override
    assert config.instance_group[0].count == 1
    with pytest.raises(InferenceServerException) as info:
        client.get_model_config("nope")
    assert info.value.status() == "StatusCode.NOT_FOUND"
    with grpc.insecure_channel(server.grpc_target) as channel:  # Kubernetes gRPC probes may name the service
        check = health_pb2_grpc.HealthStub(channel).Check
        serving = check(health_pb2.HealthCheckRequest(service="inference.GRPCInferenceService"))
        assert serving.status == health_pb2.HealthCheckResponse.SERVING


def test_infer_equals_v1_detect(client, images, expected):
    result = client.infer("tiny", [image_input(images)], request_id="g-1")
    assert result.get_response().id == "g-1" and result.get_response().model_version == "1"
    assert_outputs_match_v1(as_outputs(result), expected)


def test_typed_contents_through_tritons_own_stub(server, images, expected):
    pixels = sample_image(96, 128, seed=0)
    png = encode(pixels, ".png")
    with grpc.insecure_channel(server.grpc_target) as channel:
        stub = triton_pb_grpc.GRPCInferenceServiceStub(channel)
        request = triton_pb.ModelInferRequest(model_name="tiny")
        tensor = request.inputs.add(name="IMAGE", datatype="BYTES", shape=[1, 1])  # [B, 1] is accepted too
        tensor.contents.bytes_contents.append(png)
        by_bytes = stub.ModelInfer(request)
        request = triton_pb.ModelInferRequest(model_name="tiny")
        tensor = request.inputs.add(name="IMAGE_RAW", datatype="UINT8", shape=[1, 96, 128, 3])
        tensor.contents.uint_contents.extend(pixels.reshape(-1).tolist())
        by_pixels = stub.ModelInfer(request)
        request.inputs[0].contents.uint_contents[0] = 256  # not a UINT8
        with pytest.raises(grpc.RpcError) as info:
            stub.ModelInfer(request)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "range" in info.value.details()
    assert not by_bytes.outputs[0].contents.int_contents  # outputs travel raw only
    assert by_bytes.raw_output_contents == by_pixels.raw_output_contents
    png_expected = [v1_detect(server.http_url, png)]
    assert_outputs_match_v1(as_outputs(triton_grpc.InferResult(by_bytes)), png_expected)


@pytest.mark.parametrize(
    ("inputs", "model", "code", "text"),
    [
        ([("IMAGE", "BYTES", np.array([b"no image"], object))], "tiny", "INVALID_ARGUMENT", "JPEG"),
        ([("IMAGE", "FP32", np.ones(1, np.float32))], "tiny", "INVALID_ARGUMENT", "data-type is 'FP32'"),
        ([("IMAGE", "BYTES", np.array([[b"a", b"b"]], object))], "tiny", "INVALID_ARGUMENT", "unexpected shape"),
        ([], "tiny", "INVALID_ARGUMENT", "expected 1 input"),
        ([("IMAGE", "BYTES", np.array([b"x"], object))], "nope", "NOT_FOUND", "Request for unknown model"),
    ],
    ids=["undecodable", "datatype", "shape", "missing", "unknown-model"],
)
def test_bad_requests_get_tritons_status_and_the_server_keeps_serving(client, images, inputs, model, code, text):
    tensors = []
    for name, datatype, values in inputs:
        tensor = triton_grpc.InferInput(name, list(values.shape), datatype)
        tensor.set_data_from_numpy(values)
        tensors.append(tensor)
    with pytest.raises(InferenceServerException) as info:
        client.infer(model, tensors, request_id="bad")
    assert info.value.status() == f"StatusCode.{code}"
    assert info.value.message().startswith("[request id: bad] ") and text in info.value.message()
    assert client.infer("tiny", [image_input(images[:1])]).as_numpy("num_dets").shape == (1,)


def test_stream_matches_by_id_answers_a_bad_image_in_band_and_goes_on(client, images, expected):
    answers: queue.Queue = queue.Queue()
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    try:
        plan = {"a": images[0], "b": images[1], "bad": b"\xff\xd8\xff broken jpeg", "c": images[2], "d": images[0]}
        for request_id, image in plan.items():
            client.async_stream_infer("tiny", [image_input([image])], request_id=request_id)
        got = [answers.get(timeout=30) for _ in plan]
        client.async_stream_infer("tiny", [image_input(images[:1])], request_id="after")  # the stream is still open
        got.append(answers.get(timeout=30))
    finally:
        client.stop_stream()
    results = {r.get_response().id: r for r, error in got if error is None}
    errors = [error for r, error in got if error is not None]
    assert sorted(results) == ["a", "after", "b", "c", "d"]
    assert len(errors) == 1 and errors[0].message().startswith("[request id: bad] ")
    reference = {"a": expected[0], "b": expected[1], "c": expected[2], "d": expected[0], "after": expected[0]}
    for request_id, result in results.items():
        assert_outputs_match_v1(as_outputs(result), [reference[request_id]])


def test_triton_grpc_error_header_ends_the_stream_with_the_status(client, images):
    answers: queue.Queue = queue.Queue()
    client.start_stream(
        callback=lambda result, error: answers.put((result, error)), headers={"triton_grpc_error": "true"}
    )
    try:
        client.async_stream_infer("tiny", [image_input(images[:1])], request_id="ok")
        result, error = answers.get(timeout=30)
        assert error is None and result.get_response().id == "ok"
        client.async_stream_infer("tiny", [image_input([b"garbage"])], request_id="bad")
        result, error = answers.get(timeout=30)
        assert result is None and error.status() == "StatusCode.INVALID_ARGUMENT"
        assert error.message().startswith("[request id: bad] ")
    finally:
        client.stop_stream(cancel_requests=True)


def test_asyncio_client_unary_and_stream(server, images, expected):
    async def main():
        async with triton_grpc_aio.InferenceServerClient(server.grpc_target) as client:
            assert await client.is_server_ready()
            tensor = triton_grpc_aio.InferInput("IMAGE", [len(images)], "BYTES")
            tensor.set_data_from_numpy(np.array(images, dtype=object))
            assert_outputs_match_v1(as_outputs(await client.infer("tiny", [tensor])), expected)

            async def requests():
                for index, image in enumerate(images):
                    one = triton_grpc_aio.InferInput("IMAGE", [1], "BYTES")
                    one.set_data_from_numpy(np.array([image], dtype=object))
                    yield {"model_name": "tiny", "inputs": [one], "request_id": str(index)}

            answers = {}
            # Read to the end (the server closes the stream after the last answer): breaking out would leave a
            # cancellation in flight.
            async for result, error in client.stream_infer(requests()):
                assert error is None, error
                answers[result.get_response().id] = result
            for index, reference in enumerate(expected):
                assert_outputs_match_v1(as_outputs(answers[str(index)]), [reference])
        # grpc.aio shares one poller between the event loops of a process (here also the server's): let the
        # channel's last events reach this loop before asyncio.run closes it, or they land on a closed loop.
        await asyncio.sleep(0.2)

    asyncio.run(main())


def test_statistics_and_metrics_count_grpc_requests(client, server, images):
    before = client.get_inference_statistics("tiny").model_stats[0].inference_stats.success.count
    client.infer("tiny", [image_input(images[:2])])
    stats = client.get_inference_statistics("tiny").model_stats[0]
    assert stats.inference_stats.success.count == before + 2 and stats.batch_stats
    assert [s.name for s in client.get_inference_statistics().model_stats] == ["tiny"]
    metrics = httpx.get(server.http_url + "/metrics").text
    ok = re.search(r'yoloxpai_requests_total\{code="ok",model="tiny",protocol="oip_grpc"\} (\d+)', metrics)
    assert ok and int(float(ok.group(1))) >= 1


def test_a_bug_is_unknown_and_counted_as_an_error(client, server, images, monkeypatch):
    bug = planted_bug(server, monkeypatch, "detect_many", "oip_grpc")  # ``serving.infer`` calls it
    with bug, pytest.raises(InferenceServerException) as failure:
        client.infer("tiny", [image_input(images[:1])])
    assert failure.value.status() == "StatusCode.UNKNOWN"
