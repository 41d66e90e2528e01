"""Request ids and logs: every HTTP request and gRPC call has an id (the client's, a traceparent's trace id, or a
new one), echoed back and carried by its log lines; one access line per request, off with --no-access-log; JSON
log lines with --log-format json."""

from __future__ import annotations

import json
import logging
import re
import time

import grpc
import httpx
import pytest

from service.pb.yoloxpai.v1 import detection_pb2 as pb
from service.pb.yoloxpai.v1 import detection_pb2_grpc as pb_grpc
from service.request_ids import request_id_from
from tests.service.servers import ServeProcess

JPEG = {"content-type": "image/jpeg"}
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


def test_the_id_is_the_clients_a_traces_or_a_new_one():
    assert request_id_from("order-17/retry:2", None) == "order-17/retry:2"
    assert request_id_from(None, TRACEPARENT) == TRACE_ID
    for bad in ("has spaces", "x" * 129, "bad\nline"):
        new = request_id_from(bad, "00-" + "0" * 32 + "-00f067aa0ba902b7-01")  # an all-zero trace id is invalid
        assert re.fullmatch(r"[0-9a-f]{16}", new), new


def test_http_echoes_the_id_and_logs_it(server, jpeg, caplog):
    caplog.set_level(logging.INFO, logger="yoloxpai.access")
    given = httpx.post(f"{server.http_url}/v1/detect", content=jpeg, headers={**JPEG, "x-request-id": "abc-1"})
    traced = httpx.get(f"{server.http_url}/v1/models", headers={"traceparent": TRACEPARENT})
    fresh = httpx.post(f"{server.http_url}/v1/detect", content=b"junk", headers=JPEG)  # an error gets one too
    assert given.headers["x-request-id"] == "abc-1" and traced.headers["x-request-id"] == TRACE_ID
    assert fresh.status_code == 400 and re.fullmatch(r"[0-9a-f]{16}", fresh.headers["x-request-id"])
    lines = _access_lines_once_written(caplog, {"abc-1", TRACE_ID, fresh.headers["x-request-id"]})
    assert lines["abc-1"].status == 200 and lines["abc-1"].target == "POST /v1/detect"
    assert lines[TRACE_ID].status == 200 and lines[fresh.headers["x-request-id"]].status == 400


def test_grpc_echoes_the_id_in_trailers_and_logs_it(server, jpeg, caplog):
    caplog.set_level(logging.INFO, logger="yoloxpai.access")
    with grpc.insecure_channel(server.grpc_target) as channel:
        stub = pb_grpc.DetectorStub(channel)
        _, call = stub.Detect.with_call(
            pb.DetectRequest(image=pb.Image(encoded=jpeg)), metadata=(("x-request-id", "g-1"),), timeout=30
        )
        assert dict(call.trailing_metadata())["x-request-id"] == "g-1"
        with pytest.raises(grpc.RpcError) as err:  # an aborted call keeps it
            stub.Detect(pb.DetectRequest(image=pb.Image(encoded=b"junk")), metadata=(("traceparent", TRACEPARENT),))
        assert dict(err.value.trailing_metadata())["x-request-id"] == TRACE_ID
    lines = _access_lines_once_written(caplog, {"g-1", TRACE_ID})
    assert lines["g-1"].status == "OK" and lines["g-1"].target == "/yoloxpai.v1.Detector/Detect"
    assert lines[TRACE_ID].status == "INVALID_ARGUMENT"


def _access_lines_once_written(caplog, request_ids: set[str], timeout_s: float = 5.0) -> dict:
    """Access lines are written once the answer has left (HTTP: when the response ends; gRPC: on the server loop's
    next turn), so a client that has its answer may look before the line exists: wait for it (bounded) rather than
    race it."""
    deadline = time.monotonic() + timeout_s
    while True:
        lines = {r.request_id: r for r in caplog.records if r.name == "yoloxpai.access"}
        if request_ids <= set(lines) or time.monotonic() > deadline:
            return lines
        time.sleep(0.01)


@pytest.mark.parametrize("access_log", [True, False])
def test_json_logs_carry_request_ids_and_access_lines_can_be_turned_off(tiny_bundle, jpeg, access_log):
    flags = ["--bundle", str(tiny_bundle), "--log-format", "json", "--instances-per-device", "1"]
    server = ServeProcess(*flags, *([] if access_log else ["--no-access-log"])).wait_ready()
    try:
        url = f"http://127.0.0.1:{server.http_port}"
        answer = httpx.post(url + "/v1/detect", content=jpeg, headers={**JPEG, "x-request-id": "json-1"})
        assert answer.status_code == 200
    finally:
        assert server.stop() == 0
    records = [json.loads(line) for line in server.lines if line.strip()]  # every line is one JSON object
    assert all({"ts", "level", "logger", "message"} <= set(r) for r in records)
    access = [r for r in records if r["logger"] == "yoloxpai.access"]
    if access_log:
        assert [r["request_id"] for r in access if r["target"] == "POST /v1/detect"] == ["json-1"]
        assert access[0]["duration_ms"] > 0 and access[0]["status"] == 200
    else:
        assert access == []
