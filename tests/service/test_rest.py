"""REST against a real server on free ports with the tiny bundle: every body form, listing, health, docs,
metrics that move, and every error code with real bad inputs (the server answers a good request after each)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import re
import struct
import time
import zlib

import httpx
import pytest

from tests.service.conftest import encode, sample_image

PNG_BOMB = (  # signature + IHDR claiming 50000 x 50000 RGB, nothing else
    b"\x89PNG\r\n\x1a\n"
    + struct.pack(">I", 13)
    + b"IHDR"
    + struct.pack(">IIBBBBB", 50_000, 50_000, 8, 2, 0, 0, 0)
    + struct.pack(">I", zlib.crc32(b"IHDR" + struct.pack(">IIBBBBB", 50_000, 50_000, 8, 2, 0, 0, 0)))
)


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server.http_url, timeout=30) as c:
        yield c


def assert_detect_response(body: dict, n_images: int = 1, width: int = 128, height: int = 96) -> None:
    assert body["model"] == "tiny" and isinstance(body["model_version"], str)
    assert set(body["timing_ms"]) == {"decode", "queue", "inference", "postprocess", "total"}
    assert len(body["results"]) == n_images
    for result in body["results"]:
        assert (result["width"], result["height"]) == (width, height)
        for det in result["detections"]:
            x1, y1, x2, y2 = det["box"]
            assert 0 <= x1 <= x2 <= width and 0 <= y1 <= y2 <= height
            assert 0 <= det["score"] <= 1
            assert isinstance(det["class_id"], int) and isinstance(det["class_name"], str)


def assert_still_serving(client: httpx.Client, jpeg: bytes) -> None:
    response = client.post("/v1/detect", content=jpeg, headers={"content-type": "image/jpeg"})
    assert response.status_code == 200, response.text


def test_raw_multipart_and_json_bodies_give_the_same_detections(client, jpeg):
    raw = client.post("/v1/detect", content=jpeg, headers={"content-type": "image/jpeg"})
    assert raw.status_code == 200, raw.text
    assert_detect_response(raw.json())
    multi = client.post("/v1/detect", files=[("image", ("a.jpg", jpeg, "image/jpeg"))] * 2)
    assert multi.status_code == 200, multi.text
    assert_detect_response(multi.json(), n_images=2)
    as_json = client.post("/v1/detect", json={"images": [{"b64": base64.b64encode(jpeg).decode()}]})
    assert as_json.status_code == 200, as_json.text
    assert_detect_response(as_json.json())
    octet = client.post("/v1/models/tiny/detect", content=jpeg, headers={"content-type": "application/octet-stream"})
    assert octet.status_code == 200
    expected = raw.json()["results"]
    for body in (multi.json(), as_json.json(), octet.json()):
        assert body["results"][0] == expected[0]


def test_png_webp_bmp_are_accepted(client):
    image = sample_image(seed=3)
    for ext, media_type in ((".png", "image/png"), (".webp", "image/webp"), (".bmp", "image/bmp")):
        response = client.post("/v1/detect", content=encode(image, ext), headers={"content-type": media_type})
        assert response.status_code == 200, (ext, response.text)


def test_options_narrow_the_detections(client, jpeg):
    headers = {"content-type": "image/jpeg"}
    info = client.get("/v1/models").json()["models"][0]
    minimum = info["score_threshold"]["minimum"]
    low = max(minimum, 0.01)
    everything = client.post("/v1/detect", content=jpeg, headers=headers, params={"score_threshold": low})
    assert everything.status_code == 200
    dets = everything.json()["results"][0]["detections"]
    one = client.post("/v1/detect", content=jpeg, headers=headers, params={"score_threshold": low, "max_detections": 1})
    assert len(one.json()["results"][0]["detections"]) <= 1
    none = client.post("/v1/detect", content=jpeg, headers=headers, params={"score_threshold": 1.0})
    assert all(d["score"] >= 1.0 for d in none.json()["results"][0]["detections"])
    first_class = info["classes"][0]
    request = {"images": [{"b64": base64.b64encode(jpeg).decode()}], "classes": [first_class], "score_threshold": low}
    only = client.post("/v1/detect", json=request)
    assert only.status_code == 200, only.text
    assert all(d["class_name"] == first_class for d in only.json()["results"][0]["detections"])
    assert len(only.json()["results"][0]["detections"]) == sum(d["class_name"] == first_class for d in dets)


def test_models_health_docs(client):
    models = client.get("/v1/models").json()["models"]
    assert [m["name"] for m in models] == ["tiny"]
    m = models[0]
    assert m["default"] and m["classes"] and m["backend"] and m["devices"] == ["cpu"]
    assert m["max_batch_size"] >= 1 and m["queue_capacity"] >= 1 and set(m["input_size"]) == {"height", "width"}
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").json() == {"status": "ready"}
    assert "swagger" in client.get("/docs").text.lower()
    spec = client.get("/openapi.json").json()
    paths = {"/v1/detect", "/v1/models/{name}/detect", "/v1/models", "/healthz", "/readyz", "/metrics"}
    assert paths <= set(spec["paths"])
    assert "DetectJSONRequest" in spec["components"]["schemas"]


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample in exposition text (0 if absent)."""
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            found = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0]))
            if all(found.get(k) == v for k, v in labels.items()):
                return float(line.rsplit(" ", 1)[1])
    return 0.0


@contextlib.contextmanager
def planted_bug(server, monkeypatch, method: str, protocol: str, calls: int = 1):
    """The engine's ``method`` raises a bug inside the block, which must send ``calls`` requests into it: each is
    then counted as ``internal`` (not ``ok``) under ``protocol``, and the bug is logged."""
    labels = dict(protocol=protocol, model="tiny", code="internal")
    before = metric(httpx.get(server.http_url + "/metrics").text, "yoloxpai_requests_total", **labels)

    async def broken(*args, **kwargs):
        raise RuntimeError("planted bug")

    monkeypatch.setattr(server.engine, method, broken)
    yield
    after = metric(httpx.get(server.http_url + "/metrics").text, "yoloxpai_requests_total", **labels)
    assert after == before + calls
    assert any("planted bug" in record for record in server.error_log.records)  # logged, as a bug must be
    server.error_log.records.clear()


def test_metrics_move_and_triton_names_have_no_total_suffix(client, jpeg):
    before = client.get("/metrics").text
    for _ in range(3):
        assert_still_serving(client, jpeg)
    after = client.get("/metrics").text

    def grew(name: str, by: float = 1, **labels: str) -> bool:
        return metric(after, name, **labels) >= metric(before, name, **labels) + by

    assert grew("yoloxpai_requests_total", 3, protocol="rest", model="tiny", code="ok")
    assert grew("nv_inference_request_success", 3, model="tiny")
    assert grew("nv_inference_count", model="tiny") and grew("nv_inference_exec_count", model="tiny")
    assert metric(after, "nv_inference_compute_infer_duration_us", model="tiny") > 0
    assert grew("yoloxpai_batch_size_count", model="tiny")
    assert grew("yoloxpai_decode_duration_seconds_count")
    assert metric(after, "yoloxpai_ready") == 1.0
    assert metric(after, "yoloxpai_model_load_seconds", model="tiny") > 0
    for name, kind in (
        ("nv_inference_request_success", "counter"),
        ("nv_inference_request_failure", "counter"),
        ("nv_inference_count", "counter"),
        ("nv_inference_exec_count", "counter"),
        ("nv_inference_queue_duration_us", "counter"),
        ("nv_inference_compute_infer_duration_us", "counter"),
        ("nv_inference_pending_request_count", "gauge"),
    ):
        assert f"# TYPE {name} {kind}\n" in after
        assert f"{name}_total" not in after
    for name in (
        "yoloxpai_request_duration_seconds_bucket",
        "yoloxpai_queue_wait_seconds_bucket",
        "yoloxpai_inference_duration_seconds_bucket",
        "yoloxpai_postprocess_duration_seconds_bucket",
        "yoloxpai_queue_depth",
        "yoloxpai_inflight_requests",
    ):
        assert name in after, name


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def body(content: object, media_type: str = "image/jpeg") -> dict:
    """``client.post`` kwargs for a raw body."""
    return {"content": content, "headers": {"content-type": media_type}}


BAD_REQUESTS = {
    # id: (path, kwargs for client.post, status, error code)
    "empty-body": ("/v1/detect", body(b""), 400, "invalid_image"),
    "truncated-jpeg": ("/v1/detect", body("TRUNCATED"), 400, "invalid_image"),
    "text-as-png": ("/v1/detect", body(b"this is text, not a PNG", "image/png"), 400, "invalid_image"),
    "png-bomb-header": ("/v1/detect", body(PNG_BOMB, "image/png"), 413, "payload_too_large"),
    "too-many-bytes": ("/v1/detect", body(b"\xff\xd8\xff" + b"0" * 300_000), 413, "payload_too_large"),
    "unsupported-type": ("/v1/detect", body(b"GIF89a....", "image/gif"), 415, "unsupported_media_type"),
    "form-urlencoded": ("/v1/detect", body(b"a=b", "application/x-www-form-urlencoded"), 415, "unsupported_media_type"),
    "invalid-base64": ("/v1/detect", {"json": {"images": [{"b64": "%%% not base64 %%%"}]}}, 400, "invalid_image"),
    "b64-of-text": ("/v1/detect", {"json": {"images": [{"b64": _b64(b"plain text")}]}}, 400, "invalid_image"),
    "images-not-a-list": ("/v1/detect", {"json": {"images": "abc"}}, 400, "invalid_option"),
    "b64-not-a-string": ("/v1/detect", {"json": {"images": [{"b64": 5}]}}, 400, "invalid_option"),
    "threshold-a-string": (
        "/v1/detect",
        {"json": {"images": [{"b64": "JPEG"}], "score_threshold": "high"}},
        400,
        "invalid_option",
    ),
    "unknown-json-field": ("/v1/detect", {"json": {"images": [{"b64": "JPEG"}], "thresh": 0.3}}, 400, "invalid_option"),
    "no-images": ("/v1/detect", {"json": {"images": []}}, 400, "invalid_option"),
    "not-json": (
        "/v1/detect",
        {"content": b"{not json", "headers": {"content-type": "application/json"}},
        400,
        "invalid_option",
    ),
    "query-not-a-number": ("/v1/detect?score_threshold=abc", body("JPEG"), 400, "invalid_option"),
    "threshold-above-one": ("/v1/detect?score_threshold=2", body("JPEG"), 400, "invalid_option"),
    "max-detections-zero": ("/v1/detect?max_detections=0", body("JPEG"), 400, "invalid_option"),
    "unknown-class": ("/v1/detect?classes=no_such_class", body("JPEG"), 400, "invalid_option"),
    "multipart-without-image": (
        "/v1/detect",
        {"files": {"picture": ("a.jpg", b"JPEG", "image/jpeg")}},
        400,
        "invalid_image",
    ),
    "unknown-model": ("/v1/models/nope/detect", body("JPEG"), 404, "model_not_found"),
    "deadline": ("/v1/detect?timeout_ms=0.001", body("JPEG"), 504, "deadline_exceeded"),
}


def _materialise(kwargs: dict, jpeg: bytes) -> dict:
    # Placeholders: "JPEG" = the good image, "TRUNCATED" = its first half.
    def sub(value):
        if value == "JPEG":
            return jpeg
        if value == "TRUNCATED":
            return jpeg[: len(jpeg) // 2]
        if isinstance(value, dict):
            return {k: sub(v) for k, v in value.items()}
        if isinstance(value, list):
            return [sub(v) for v in value]
        if isinstance(value, tuple):
            return tuple(sub(v) for v in value)
        return value

    out = sub(kwargs)
    if "json" in out:  # b64 placeholders inside JSON
        out["json"] = json.loads(json.dumps(out["json"], default=lambda b: _b64(b)))
    return out


@pytest.mark.parametrize("case", list(BAD_REQUESTS), ids=list(BAD_REQUESTS))
def test_bad_inputs_get_their_error_and_the_server_keeps_serving(client, jpeg, case):
    path, kwargs, status, code = BAD_REQUESTS[case]
    t0 = time.perf_counter()
    response = client.post(path, **_materialise(kwargs, jpeg))
    elapsed_s = time.perf_counter() - t0
    assert response.status_code == status, response.text
    assert response.json() == {"error": {"code": code, "message": response.json()["error"]["message"]}}
    assert response.json()["error"]["message"]
    if case == "png-bomb-header":
        assert elapsed_s < 1.0
    assert_still_serving(client, jpeg)


def test_unknown_routes_and_methods_use_the_error_schema(client):
    response = client.get("/v2/nothing")
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"
    response = client.get("/v1/detect")
    assert response.status_code == 405 and response.json()["error"]["code"] == "method_not_allowed"


def test_error_codes_are_counted(client, jpeg):
    client.post("/v1/detect", content=b"", headers={"content-type": "image/jpeg"})
    text = client.get("/metrics").text
    assert metric(text, "yoloxpai_requests_total", protocol="rest", model="tiny", code="invalid_image") >= 1
    client.post("/v1/models/nope/detect", content=jpeg, headers={"content-type": "image/jpeg"})
    text = client.get("/metrics").text
    assert metric(text, "yoloxpai_requests_total", protocol="rest", model="", code="model_not_found") >= 1


def test_small_responses_are_not_delayed_by_nagle(client):
    # Without TCP_NODELAY on accepted sockets, Nagle + delayed ACKs add ~40 ms to every response.
    latencies = []
    for _ in range(15):
        t0 = time.perf_counter()
        client.get("/healthz")
        latencies.append(time.perf_counter() - t0)
    assert sorted(latencies)[len(latencies) // 2] < 0.03


def test_clients_that_disconnect_are_dropped_and_cost_nothing_after(server, jpeg):
    big = encode(sample_image(960, 1280, seed=8))
    before = server.engine.telemetry.statistics("tiny")

    async def impatient():
        # 32 big images at once take ~0.3 s to decode and infer: clients waiting 50 ms leave while theirs queue.
        timeout = httpx.Timeout(5.0, read=0.05)
        limits = httpx.Limits(max_connections=32)
        async with httpx.AsyncClient(base_url=server.http_url, timeout=timeout, limits=limits) as client:
            outcomes = await asyncio.gather(
                *(client.post("/v1/detect", content=big, headers={"content-type": "image/jpeg"}) for _ in range(32)),
                return_exceptions=True,
            )
        assert any(isinstance(o, httpx.TimeoutException) for o in outcomes)

    asyncio.run(impatient())
    deadline = time.monotonic() + 10
    while server.engine.inflight and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.engine.inflight == 0
    after = server.engine.telemetry.statistics("tiny")
    assert after.fail_count.get("CANCELED", 0) > before.fail_count.get("CANCELED", 0)
    assert after.inference_count - before.inference_count < 32  # the cancelled ones never reached the model
    with httpx.Client(base_url=server.http_url) as client:
        assert_still_serving(client, jpeg)
