"""OIP over REST against a real server, driven by NVIDIA's ``tritonclient.http``: health, metadata, config,
statistics, inference with binary and with JSON tensors (results equal ``POST /v1/detect``), parameters, and every
bad input answered with Triton's status and ``{"error": "..."}`` while the server keeps serving."""

from __future__ import annotations

import base64
import gzip
import json
import re
import struct

import httpx
import numpy as np
import pytest
import tritonclient.http as triton_http
from tritonclient.utils import InferenceServerException

from tests.oip.helpers import as_outputs, assert_outputs_match_v1, v1_detect
from tests.service.conftest import encode, sample_image
from tests.service.test_rest import planted_bug

OUTPUTS = ("num_dets", "boxes", "scores", "classes", "class_names")


@pytest.fixture(scope="module")
def client(server):
    client = triton_http.InferenceServerClient(server.http_url.removeprefix("http://"))
    yield client
    client.close()


def image_input(images: list[bytes], binary: bool = True) -> triton_http.InferInput:
    tensor = triton_http.InferInput("IMAGE", [len(images)], "BYTES")
    tensor.set_data_from_numpy(np.array(images, dtype=object), binary_data=binary)
    return tensor


def raw_input(pixels: np.ndarray, binary: bool = True) -> triton_http.InferInput:
    tensor = triton_http.InferInput("IMAGE_RAW", list(pixels.shape), "UINT8")
    tensor.set_data_from_numpy(pixels, binary_data=binary)
    return tensor


def test_health_and_server_metadata(client):
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("tiny") and client.is_model_ready("tiny", "1")
    assert not client.is_model_ready("nope") and not client.is_model_ready("tiny", "7")
    metadata = client.get_server_metadata()
    assert metadata["name"] == "yoloxpai" and metadata["version"]
    assert set(metadata["extensions"]) == {
        "binary_tensor_data",
        "model_configuration",
        "statistics",
        "parameters",
        "schedule_policy",
        "model_repository",
    }


def test_model_metadata_and_config_describe_the_tensors_and_the_batcher(client, server):
    metadata = client.get_model_metadata("tiny")
    assert metadata["name"] == "tiny" and metadata["versions"] == ["1"]
    assert metadata["inputs"] == [
        {"name": "IMAGE", "datatype": "BYTES", "shape": [-1]},
        {"name": "IMAGE_RAW", "datatype": "UINT8", "shape": [-1, -1, -1, 3]},
    ]
    assert [(o["name"], o["datatype"], o["shape"]) for o in metadata["outputs"]] == [
        ("num_dets", "INT32", [-1]),
        ("boxes", "FP32", [-1, -1, 4]),
        ("scores", "FP32", [-1, -1]),
        ("classes", "INT32", [-1, -1]),
        ("class_names", "BYTES", [-1, -1]),
    ]
    assert client.get_model_metadata("tiny", "1") == metadata
    config = client.get_model_config("tiny")
    info = server.engine.model_info("tiny")
    assert config["name"] == "tiny" and config["max_batch_size"] == info.max_batch_size == 4
    assert [(i["name"], i["data_type"], i["dims"]) for i in config["input"]] == [
        ("IMAGE", "TYPE_STRING", [1]),
        ("IMAGE_RAW", "TYPE_UINT8", [-1, -1, 3]),
    ]
    assert config["output"][1] == {"name": "boxes", "data_type": "TYPE_FP32", "dims": [-1, 4]}
    batching = config["dynamic_batching"]
    assert batching["max_queue_delay_microseconds"] == 4000
    assert (batching["priority_levels"], batching["default_priority_level"]) == (1, 1)  # off unless configured
    assert batching["default_queue_policy"]["max_queue_size"] == 64
    assert batching["default_queue_policy"]["default_timeout_microseconds"] == 30_000_000
    assert config["instance_group"] == [{"name": "tiny", "kind": "KIND_CPU", "count": 1}]


def test_binary_inference_of_several_sizes_equals_v1_detect(client, server, images):
    result = client.infer("tiny", [image_input(images)], request_id="req-1")
    response = result.get_response()
    assert (response["model_name"], response["model_version"], response["id"]) == ("tiny", "1", "req-1")
    assert all("binary_data_size" in o["parameters"] for o in response["outputs"])  # binary_data_output default
    outputs = as_outputs(result)
    assert outputs["scores"].shape[1] == 20  # K = the model's max_detections
    assert outputs["num_dets"].sum() > 0, "the tiny model should find something in the sample images"
    assert_outputs_match_v1(outputs, [v1_detect(server.http_url, image) for image in images])


def test_json_tensors_in_and_out_give_the_same_detections(client, server):
    pixels = sample_image(96, 128, seed=0)  # BGR
    png = encode(pixels, ".png")  # lossless: the server decodes exactly these pixels
    expected = [v1_detect(server.http_url, png)]
    json_outputs = [triton_http.InferRequestedOutput(name, binary_data=False) for name in OUTPUTS]
    raw = client.infer("tiny", [raw_input(pixels[None], binary=False)], outputs=json_outputs)
    assert all("data" in o for o in raw.get_response()["outputs"])
    assert_outputs_match_v1(as_outputs(raw), expected)
    b64 = np.array([base64.b64encode(png)], dtype=object)  # IMAGE as JSON: base64 text
    encoded = triton_http.InferInput("IMAGE", [1], "BYTES")
    encoded.set_data_from_numpy(b64, binary_data=False)
    assert_outputs_match_v1(as_outputs(client.infer("tiny", [encoded], outputs=json_outputs)), expected)
    rgb = client.infer("tiny", [raw_input(pixels[None, :, :, ::-1].copy())], parameters={"channel_order": "rgb"})
    assert_outputs_match_v1(as_outputs(rgb), expected)


def test_parameters_narrow_and_outputs_can_be_chosen(client, server, images):
    expected = v1_detect(server.http_url, images[0], score_threshold=0.45, max_detections=2)
    parameters = {"score_threshold": 0.45, "max_detections": 2}
    outputs = [triton_http.InferRequestedOutput(name) for name in ("scores", "num_dets")]
    result = client.infer("tiny", [image_input(images[:1])], outputs=outputs, parameters=parameters)
    assert [o["name"] for o in result.get_response()["outputs"]] == ["scores", "num_dets"]
    assert result.as_numpy("boxes") is None
    assert result.as_numpy("scores").shape == (1, 2)  # K = the request's max_detections
    assert result.as_numpy("num_dets").tolist() == [len(expected)]
    assert (result.as_numpy("scores")[0, : len(expected)] >= 0.45).all()
    by_name = client.infer("tiny", [image_input(images[:1])], parameters={"classes": "triangle,0"})
    assert set(by_name.as_numpy("classes")[0, : by_name.as_numpy("num_dets")[0]].tolist()) <= {0, 2}


def test_tritonclient_raises_the_servers_error(client):
    with pytest.raises(InferenceServerException) as info:
        client.infer("tiny", [image_input([b"not an image"])], request_id="bad-1")
    assert info.value.status() == "400"
    assert info.value.message().startswith("[request id: bad-1] ")
    with pytest.raises(InferenceServerException) as info:
        client.infer("nope", [image_input([b"x"])])
    assert info.value.status() == "404" and "Request for unknown model" in info.value.message()


def _binary_request(header: dict, *sections: bytes, length: str | None = None) -> tuple[bytes, dict[str, str]]:
    head = json.dumps(header).encode()
    return head + b"".join(sections), {"Inference-Header-Content-Length": length or str(len(head))}


def _bytes_tensor(*items: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(item)) + item for item in items)


def _bad_requests(jpeg: bytes) -> list[tuple[str, str, bytes, dict[str, str], int, str]]:
    one = _bytes_tensor(jpeg)
    image = {"name": "IMAGE", "datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": len(one)}}
    fp32 = {"name": "IMAGE", "datatype": "FP32", "shape": [1], "data": [1.0]}
    many = {**image, "shape": [17], "parameters": {"binary_data_size": 17 * len(one)}}
    garbage = _bytes_tensor(b"garbage")
    undecodable = {**image, "parameters": {"binary_data_size": len(garbage)}}
    cases = [
        ("undecodable image", "tiny", *_binary_request({"inputs": [undecodable]}, garbage), 400, "JPEG"),
        ("wrong datatype", "tiny", json.dumps({"inputs": [fp32]}).encode(), {}, 400, "data-type is 'FP32'"),
        ("wrong shape", "tiny", *_binary_request({"inputs": [{**image, "shape": [1, 2, 3]}]}, one), 400, "shape"),
        ("missing input", "tiny", json.dumps({"inputs": []}).encode(), {}, 400, "expected 1 input"),
        ("unknown input", "tiny", json.dumps({"inputs": [{**fp32, "name": "X"}]}).encode(), {}, 400, "'X'"),
        ("unknown model", "nope", *_binary_request({"inputs": [image]}, one), 404, "unknown model"),
        ("unknown version", "tiny/versions/9", *_binary_request({"inputs": [image]}, one), 404, "version 9"),
        ("header length > body", "tiny", *_binary_request({"inputs": [image]}, one, length="999999"), 400, "Length"),
        ("header length not a number", "tiny", *_binary_request({"inputs": [image]}, one, length="x"), 400, "Length"),
        ("header length cuts the JSON", "tiny", *_binary_request({"inputs": [image]}, one, length="5"), 400, "JSON"),
        ("raw binary request", "tiny", *_binary_request({"inputs": [image]}, one, length="0"), 400, "raw binary"),
        ("size past the end", "tiny", *_binary_request({"inputs": [image]}, one[:-1]), 400, "binary_data_size"),
        ("unclaimed bytes", "tiny", *_binary_request({"inputs": [image]}, one, b"extra"), 400, "not claimed"),
        ("bad BYTES framing", "tiny", *_binary_request({"inputs": [image]}, b"\xff" * len(one)), 400, "BYTES"),
        ("invalid JSON", "tiny", b"{not json", {}, 400, "JSON"),
        ("unknown output", "tiny", *_binary_request({"inputs": [image], "outputs": [{"name": "x"}]}, one), 400, "'x'"),
        ("bad parameter", "tiny", *_binary_request({"inputs": [image], "parameters": {"priority": -1}}, one), 400, ""),
        ("too many images", "tiny", *_binary_request({"inputs": [many]}, one * 17), 400, "<= 16"),
        ("bad gzip", "tiny", b"not gzip", {"content-encoding": "gzip"}, 400, "gzip"),
    ]
    return [(name, model, body, headers, status, text) for name, model, body, headers, status, text in cases]


def test_bad_requests_get_tritons_status_and_the_server_keeps_serving(server, images):
    jpeg = images[0]
    good_body, good_headers = _binary_request(
        {
            "inputs": [
                {"name": "IMAGE", "datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": 4 + len(jpeg)}}
            ]
        },
        _bytes_tensor(jpeg),
    )
    with httpx.Client(base_url=server.http_url, timeout=30) as http:
        for name, model, body, headers, status, text in _bad_requests(jpeg):
            response = http.post(f"/v2/models/{model}/infer", content=body, headers=headers)
            assert response.status_code == status, (name, response.text)
            error = response.json()["error"]
            assert isinstance(error, str) and text in error, (name, error)
            good = http.post("/v2/models/tiny/infer", content=good_body, headers=good_headers)
            assert good.status_code == 200, (name, good.text)
        compressed = http.post(
            "/v2/models/tiny/infer",
            content=gzip.compress(good_body),
            headers={**good_headers, "content-encoding": "gzip"},
        )
        assert compressed.status_code == 200 and compressed.content == good.content


def test_statistics_and_metrics_count_oip_requests(client, server, images):
    before = client.get_inference_statistics("tiny")["model_stats"][0]
    client.infer("tiny", [image_input(images)])
    with pytest.raises(InferenceServerException):
        client.infer("tiny", [image_input([b"broken"])])
    after = client.get_inference_statistics("tiny")["model_stats"][0]
    assert (after["name"], after["version"]) == ("tiny", "1")
    stats, old = after["inference_stats"], before["inference_stats"]
    assert stats["success"]["count"] == old["success"]["count"] + 3  # one per image
    assert stats["fail"]["count"] == old["fail"]["count"] + 1
    assert stats["queue"]["count"] == old["queue"]["count"] + 3 and stats["queue"]["ns"] > old["queue"]["ns"]
    assert after["inference_count"] == before["inference_count"] + 3
    assert after["execution_count"] > before["execution_count"] and after["last_inference"] > 0
    for stage in ("compute_input", "compute_infer", "compute_output"):
        assert stats[stage]["count"] == after["inference_count"] and stats[stage]["ns"] > 0
    assert stats["cache_hit"] == {"count": 0, "ns": 0}
    sizes = {b["batch_size"]: b for b in after["batch_stats"]}
    assert sum(size * b["compute_infer"]["count"] for size, b in sizes.items()) == after["inference_count"]
    assert client.get_inference_statistics()["model_stats"][0]["name"] == "tiny"  # every model
    metrics = httpx.get(server.http_url + "/metrics").text
    ok = re.search(r'yoloxpai_requests_total\{code="ok",model="tiny",protocol="oip_rest"\} (\d+)', metrics)
    assert ok and int(float(ok.group(1))) >= 1
    assert 'code="invalid_image",model="tiny",protocol="oip_rest"' in metrics


def test_the_fast_path_and_fastapi_answer_every_infer_request_alike(server, images, monkeypatch):
    # ``service.router`` answers /v2/.../infer without a query string; any query string sends it to FastAPI's
    # route. Both run ``infer_response``: this checks the routing around it (status, headers, body bytes).
    import service.router

    fast_calls = []
    original = service.router.infer_response

    async def counted(*args, **kwargs):
        fast_calls.append(args[2])
        return await original(*args, **kwargs)

    monkeypatch.setattr(service.router, "infer_response", counted)
    jpeg = images[0]
    one = _bytes_tensor(jpeg)
    image = {"name": "IMAGE", "datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": len(one)}}
    good = ("good", "tiny", *_binary_request({"inputs": [image]}, one), 200, "")
    versioned = ("versioned", "tiny/versions/1", *_binary_request({"inputs": [image]}, one), 200, "")
    with httpx.Client(base_url=server.http_url, timeout=30) as http:
        for name, model, body, headers, status, _ in [good, versioned, *_bad_requests(jpeg)]:
            calls_before = len(fast_calls)
            fast = http.post(f"/v2/models/{model}/infer", content=body, headers=headers)
            assert len(fast_calls) == calls_before + 1, name  # taken by the fast path
            framework = http.post(f"/v2/models/{model}/infer?via=fastapi", content=body, headers=headers)
            assert len(fast_calls) == calls_before + 1, name  # not taken
            assert fast.status_code == framework.status_code == status, (name, fast.text, framework.text)
            assert fast.content == framework.content, name
            for header in ("content-type", "content-length", "inference-header-content-length", "retry-after"):
                assert fast.headers.get(header) == framework.headers.get(header), (name, header)


def test_a_bug_is_a_500_and_counted_as_one(server, images, monkeypatch):
    one = _bytes_tensor(images[0])
    image = {"name": "IMAGE", "datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": len(one)}}
    body, headers = _binary_request({"inputs": [image]}, one)
    # ``serving.infer`` calls ``detect_many`` on both paths
    with planted_bug(server, monkeypatch, "detect_many", "oip_rest", calls=2):
        for path in ("/v2/models/tiny/infer", "/v2/models/tiny/infer?via=fastapi"):
            # a new connection each: after a 500 raised under it, uvicorn closes the connection
            assert httpx.post(server.http_url + path, content=body, headers=headers).status_code == 500
