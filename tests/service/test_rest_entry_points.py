"""The two entry points of the one ``/v1`` detect core (``service.rest_detect.detect_response``): straight from ASGI
(``service.router``) and through FastAPI's route, on the same real server.

A query value the router does not take (``4e-1``, a repeated option) sends the same request through FastAPI,
so each pair below compares the two entry points: same detections, same status, same error body and headers.
"""

from __future__ import annotations

import httpx
import pytest

import service.rest
import service.rest_detect
import service.router
from service.router import parse_query
from tests.service.conftest import server_settings
from tests.service.servers import ServerThread
from tests.service.test_rest import PNG_BOMB, metric, planted_bug

JPEG = {"content-type": "image/jpeg"}


@pytest.fixture(scope="module")
def keyed_server(tiny_bundle):
    settings = server_settings(tiny_bundle, api_keys=["k1"], max_request_bytes=64 * 1024)
    with ServerThread(settings) as running:
        yield running


@pytest.fixture(scope="module")
def client(keyed_server):
    with httpx.Client(base_url=keyed_server.http_url, timeout=30, headers={"authorization": "Bearer k1"}) as c:
        yield c


def without_timing(body: dict) -> dict:
    return {k: v for k, v in body.items() if k != "timing_ms"}


def test_parse_query_takes_plain_values_only():
    assert parse_query(b"") == ({}, [])
    assert parse_query(b"score_threshold=0.4&max_detections=5&classes=a,b&classes=c&timeout_ms=250&other=x") == (
        {"score_threshold": "0.4", "max_detections": "5", "timeout_ms": "250"},
        ["a,b", "c"],
    )
    for query in (
        b"score_threshold=4e-1",  # FastAPI (pydantic) decides what exotic spellings mean
        b"score_threshold=abc",
        b"score_threshold=",
        b"max_detections=5.0",
        b"max_detections=1&max_detections=2",
        b"timeout_ms=0",
        b"timeout_ms=-5",
    ):
        assert parse_query(query) is None, query


@pytest.fixture
def entries(monkeypatch):
    """Which entry point called the core, per request (both hold the very same function)."""
    core = service.rest_detect.detect_response
    assert service.router.detect_response is core and service.rest.detect_response is core
    calls: list[str] = []

    def through(entry: str):
        async def call(*args, **kwargs):
            calls.append(entry)
            return await core(*args, **kwargs)

        return call

    monkeypatch.setattr(service.router, "detect_response", through("router"))
    monkeypatch.setattr(service.rest, "detect_response", through("fastapi"))
    return calls


def test_both_paths_answer_the_same(client, jpeg, entries):
    fast = client.post("/v1/detect?score_threshold=0.4&classes=circle,square", content=jpeg, headers=JPEG)
    framework = client.post("/v1/detect?score_threshold=4e-1&classes=circle,square", content=jpeg, headers=JPEG)
    assert fast.status_code == framework.status_code == 200, (fast.text, framework.text)
    assert fast.headers["content-type"] == framework.headers["content-type"] == "application/json"
    assert without_timing(fast.json()) == without_timing(framework.json())
    assert set(fast.json()["timing_ms"]) == set(framework.json()["timing_ms"])
    assert entries == ["router", "fastapi"]  # one core, reached from each entry point
    named = client.post("/v1/models/tiny/detect?max_detections=1", content=jpeg, headers=JPEG)
    assert named.status_code == 200 and len(named.json()["results"][0]["detections"]) <= 1


@pytest.mark.parametrize(
    "path, body, headers, status",
    [
        ("/v1/detect", PNG_BOMB, {"content-type": "image/png"}, 413),  # too many pixels
        ("/v1/detect", b"", JPEG, 400),  # empty body
        ("/v1/detect", b"not an image", JPEG, 400),  # undecodable
        ("/v1/detect", b"x" * (65 * 1024), JPEG, 413),  # too many bytes
        ("/v1/models/nope/detect", b"\xff\xd8", JPEG, 404),
        ("/v1/detect?score_threshold=2", b"\xff\xd8", JPEG, 400),  # the engine's range check
    ],
)
def test_both_paths_fail_alike(client, jpeg, entries, path, body, headers, status):
    fallback = path + ("&" if "?" in path else "?") + "max_detections=3&max_detections=3"  # repeated: FastAPI
    fast = client.post(path, content=body, headers=headers)
    framework = client.post(fallback, content=body, headers=headers)
    assert entries == ["router", "fastapi"]
    assert fast.status_code == framework.status_code == status, (fast.text, framework.text)
    assert fast.json() == framework.json()
    assert fast.json()["error"]["message"]
    assert client.post("/v1/detect", content=jpeg, headers=JPEG).status_code == 200  # still serving


def test_auth_and_overload_headers_match(keyed_server, jpeg):
    url = keyed_server.http_url
    for path in ("/v1/detect", "/v1/detect?max_detections=3&max_detections=3"):
        missing = httpx.post(url + path, content=jpeg, headers=JPEG)
        wrong = httpx.post(url + path, content=jpeg, headers={**JPEG, "authorization": "Bearer nope"})
        for response in (missing, wrong):
            assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer"
            assert response.json()["error"]["code"] == "unauthenticated"


def test_other_requests_go_to_fastapi(client, jpeg):
    # Not raw image bodies or not POST: the framework's routes answer (the router never takes them).
    assert client.post("/v1/detect", files=[("image", ("a.jpg", jpeg, "image/jpeg"))]).status_code == 200
    assert client.post("/v1/detect", content=b"hello", headers={"content-type": "text/plain"}).status_code == 415
    assert client.get("/v1/detect").status_code == 405
    assert client.post("/v1/detect?score_threshold=abc", content=jpeg, headers=JPEG).status_code == 400


def test_router_requests_are_counted(client, jpeg):
    before = client.get("/metrics").text
    for _ in range(2):
        assert client.post("/v1/detect", content=jpeg, headers=JPEG).status_code == 200
    assert client.post("/v1/detect", content=b"", headers=JPEG).status_code == 400
    after = client.get("/metrics").text
    ok = dict(protocol="rest", model="tiny", code="ok")
    assert metric(after, "yoloxpai_requests_total", **ok) == metric(before, "yoloxpai_requests_total", **ok) + 2
    bad = dict(protocol="rest", model="tiny", code="invalid_image")
    assert metric(after, "yoloxpai_requests_total", **bad) == metric(before, "yoloxpai_requests_total", **bad) + 1


def test_a_bug_is_a_500_and_counted_as_one(keyed_server, client, jpeg, monkeypatch):
    with planted_bug(keyed_server, monkeypatch, "detect_many", "rest", calls=2):  # both paths call it
        for path in ("/v1/detect", "/v1/detect?max_detections=3&max_detections=3"):
            # a new connection each: after a 500 raised under it, uvicorn closes the connection
            response = httpx.post(keyed_server.http_url + path, content=jpeg, headers={**JPEG, **client.headers})
            assert response.status_code == 500
