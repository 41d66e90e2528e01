"""OIP requests obey the server's auth, queue limit, timeouts and drain, with Triton's statuses and wording."""

from __future__ import annotations

import asyncio
import tempfile
import threading
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from tritonclient.grpc import service_pb2 as triton_pb
from tritonclient.grpc import service_pb2_grpc as triton_pb_grpc
from tritonclient.utils import InferenceServerException

from service.batched_engine import BatchedEngine
from service.errors import DeadlineExceeded
from service.oip.detector_io import InferRequest
from service.oip.serving import infer
from service.oip.tensors import InputTensor
from service.settings import Settings
from tests.service.conftest import encode, server_settings
from tests.service.fakes import fake_loader
from tests.service.servers import ServerThread

KEY = {"authorization": "Bearer secret"}  # pass copies to tritonclient.http: it adds its own headers to the dict
KEY_METADATA = (("authorization", "Bearer secret"),)


@pytest.fixture(scope="module")
def strict(tiny_bundle):
    """API keys on, room for one queued image only."""
    with ServerThread(server_settings(tiny_bundle, api_keys=["secret"], queue_capacity=1, retry_after_s=3)) as s:
        yield s


def grpc_request(images: list[bytes], request_id: str = "") -> triton_pb.ModelInferRequest:
    request = triton_pb.ModelInferRequest(model_name="tiny", id=request_id)
    request.inputs.add(name="IMAGE", datatype="BYTES", shape=[len(images)]).contents.bytes_contents.extend(images)
    return request


def test_health_is_open_everything_else_needs_the_key(strict, images):
    with httpx.Client(base_url=strict.http_url) as http:
        assert http.get("/v2/health/live").status_code == 200 and http.get("/v2/health/ready").status_code == 200
        for path in ("/v2", "/v2/models/tiny", "/v2/models/tiny/config", "/v2/models/stats", "/v2/models/tiny/ready"):
            response = http.get(path)
            assert response.status_code == 401 and "API key" in response.json()["error"], path
            assert http.get(path, headers=dict(KEY)).status_code == 200, path
    client = triton_http.InferenceServerClient(strict.http_url.removeprefix("http://"))
    tensor = triton_http.InferInput("IMAGE", [1], "BYTES")
    tensor.set_data_from_numpy(np.array(images[:1], dtype=object))
    assert client.infer("tiny", [tensor], headers=dict(KEY)).as_numpy("num_dets").shape == (1,)
    with pytest.raises(InferenceServerException) as info:
        client.infer("tiny", [tensor])
    assert info.value.status() == "401"
    with grpc.insecure_channel(strict.grpc_target) as channel:
        stub = triton_pb_grpc.GRPCInferenceServiceStub(channel)
        assert stub.ServerLive(triton_pb.ServerLiveRequest()).live
        for call, request in (
            (stub.ModelInfer, grpc_request(images[:1])),
            (stub.ModelMetadata, triton_pb.ModelMetadataRequest(name="tiny")),
            (stub.ModelStatistics, triton_pb.ModelStatisticsRequest()),
        ):
            with pytest.raises(grpc.RpcError) as info:
                call(request)
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.RpcError) as info:
            list(stub.ModelStreamInfer(iter([grpc_request(images[:1])])))
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert stub.ModelInfer(grpc_request(images[:1]), metadata=KEY_METADATA).outputs


def test_a_full_queue_answers_unavailable_with_tritons_text(strict, images):
    two = images[:2]  # two images cannot fit a queue of one: refused at admission, deterministically
    body_tensor = triton_http.InferInput("IMAGE", [2], "BYTES")
    body_tensor.set_data_from_numpy(np.array(two, dtype=object))
    client = triton_http.InferenceServerClient(strict.http_url.removeprefix("http://"))
    with pytest.raises(InferenceServerException) as info:
        client.infer("tiny", [body_tensor], headers=dict(KEY), request_id="q")
    assert info.value.status() == "503"
    assert info.value.message().startswith("[request id: q] Exceeds maximum queue size")
    grpc_client = triton_grpc.InferenceServerClient(strict.grpc_target)
    grpc_tensor = triton_grpc.InferInput("IMAGE", [2], "BYTES")
    grpc_tensor.set_data_from_numpy(np.array(two, dtype=object))
    with pytest.raises(InferenceServerException) as info:
        grpc_client.infer("tiny", [grpc_tensor], headers=dict(KEY))
    assert info.value.status() == "StatusCode.UNAVAILABLE" and "Exceeds maximum queue size" in info.value.message()
    with grpc.insecure_channel(strict.grpc_target) as channel:
        stub = triton_pb_grpc.GRPCInferenceServiceStub(channel)
        stream = stub.ModelStreamInfer(
            iter([grpc_request(two, "full"), grpc_request(two[:1], "fits")]), metadata=KEY_METADATA
        )
        answers = {r.infer_response.id: r for r in stream}
    assert "Exceeds maximum queue size" in answers["full"].error_message
    assert not answers["fits"].error_message and answers["fits"].infer_response.raw_output_contents


def test_the_timeout_parameter_lowers_the_deadline(server, images):
    client = triton_http.InferenceServerClient(server.http_url.removeprefix("http://"))
    tensor = triton_http.InferInput("IMAGE", [1], "BYTES")
    tensor.set_data_from_numpy(np.array(images[:1], dtype=object))
    with pytest.raises(InferenceServerException) as info:
        client.infer("tiny", [tensor], timeout=1)  # microseconds
    assert info.value.status() == "503" and "Request timeout expired" in info.value.message()
    grpc_client = triton_grpc.InferenceServerClient(server.grpc_target)
    grpc_tensor = triton_grpc.InferInput("IMAGE", [1], "BYTES")
    grpc_tensor.set_data_from_numpy(np.array(images[:1], dtype=object))
    with pytest.raises(InferenceServerException) as info:
        grpc_client.infer("tiny", [grpc_tensor], timeout=1)
    assert info.value.status() == "StatusCode.UNAVAILABLE" and "Request timeout expired" in info.value.message()
    assert client.infer("tiny", [tensor], timeout=60_000_000).as_numpy("num_dets").shape == (1,)


def test_the_timeout_parameter_cannot_raise_the_servers_timeout():
    bundle = Path(tempfile.mkdtemp()) / "fake"
    bundle.mkdir()

    async def main():
        settings = Settings(
            bundles=[str(bundle)],
            tune_batch_size=False,
            max_batch_size=1,
            instances_per_device=1,
            request_timeout_ms=100,
        )
        engine = BatchedEngine(settings, loader=fake_loader(infer_delay_s=0.4))
        await engine.start()
        tensor = InputTensor("IMAGE", "BYTES", (1,), (encode(np.zeros((8, 8, 3), np.uint8), ".png"),))
        request = InferRequest("fake", "", "t", (tensor,), {"timeout": 60_000_000})  # asks for 60 s
        with pytest.raises(DeadlineExceeded):
            await infer(engine, request, max_images=1)
        await engine.close()

    asyncio.run(main())


def test_drain_turns_health_to_503_refuses_work_and_ends_streams(tiny_bundle, images):
    with ServerThread(server_settings(tiny_bundle)) as running:
        release = threading.Event()

        def requests():
            yield grpc_request(images[:1], "before")
            release.wait(30)  # keep the stream open until the server drains

        with grpc.insecure_channel(running.grpc_target) as channel:
            stub = triton_pb_grpc.GRPCInferenceServiceStub(channel)
            stream = stub.ModelStreamInfer(requests(), timeout=30)
            assert next(stream).infer_response.id == "before"
            drained = asyncio.run_coroutine_threadsafe(running.engine.drain(10), running._loop)
            assert list(stream) == [] and stream.code() == grpc.StatusCode.OK  # ended by the server
            release.set()
            with pytest.raises(grpc.RpcError) as info:
                stub.ServerLive(triton_pb.ServerLiveRequest())
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE and info.value.details() == "Server exiting"
            with pytest.raises(grpc.RpcError) as info:
                stub.ModelInfer(grpc_request(images[:1]))
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        with httpx.Client(base_url=running.http_url) as http:
            for path in ("/v2/health/live", "/v2/health/ready"):
                response = http.get(path)
                assert response.status_code == 503 and response.json() == {"error": "Server exiting"}
            assert http.get("/v2/models/tiny/ready").status_code == 400
        assert drained.result(10) is True
