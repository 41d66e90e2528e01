"""One list of bad inputs driven through every transport and entry point of a real server: ``/v1`` from ASGI and
through FastAPI, ``/v2`` REST, ``yoloxpai.v1`` gRPC and OIP gRPC. Every one must be a client error in that
transport's envelope (HTTP 4xx with our error body; a gRPC status that names the client's fault), never a 500 /
INTERNAL / UNKNOWN, and the server must keep answering good requests."""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc
import httpx
import pytest

from service.pb.inference import grpc_service_pb2 as oip_pb
from service.pb.inference import grpc_service_pb2_grpc as oip_pb_grpc
from service.pb.yoloxpai.v1 import detection_pb2 as pb
from service.pb.yoloxpai.v1 import detection_pb2_grpc as pb_grpc
from tests.service.conftest import server_settings
from tests.service.servers import ServerThread

HUGE_INT = "9" * 5000  # past Python's 4300-digit int() limit
CLIENT_FAULTS = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.OUT_OF_RANGE,
}


def png_bomb(width: int = 50_000, height: int = 50_000) -> bytes:
    """A PNG whose header claims a huge image (the pixels are never there)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return b"\x89PNG\r\n\x1a\n" + chunk


@dataclass(frozen=True)
class Case:
    """A bad request: the image bytes and the options, as each transport would carry them."""

    name: str
    image: bytes | None = None  # None: the good test image
    options: dict[str, str] = field(default_factory=dict)  # as query strings; each transport converts


def cases(jpeg: bytes) -> list[Case]:
    return [
        Case("not an image", b"certainly not an image"),
        Case("empty image", b""),
        Case("truncated JPEG", jpeg[:200]),
        Case("decompression bomb", png_bomb()),
        Case("threshold above 1", options={"score_threshold": "2"}),
        Case("threshold not a number", options={"score_threshold": "nan"}),
        Case("zero detections", options={"max_detections": "0"}),
        Case("a 5000-digit max_detections", options={"max_detections": HUGE_INT}),
        Case("unknown class", options={"classes": "zebra-unicorn"}),
    ]


def nested_json(depth: int = 100_000) -> bytes:
    return b"[" * depth + b"]" * depth


# -- the transports ------------------------------------------------------------------------------------------


def v1_router(server: ServerThread, case: Case, jpeg: bytes) -> tuple[int, dict]:
    response = httpx.post(
        f"{server.http_url}/v1/detect",
        params=case.options,
        content=jpeg if case.image is None else case.image,
        headers={"content-type": "image/jpeg"},
        timeout=30,
    )
    return response.status_code, response.json()


def v1_fastapi(server: ServerThread, case: Case, jpeg: bytes) -> tuple[int, dict]:
    # A multipart body is FastAPI's to answer (the router takes raw bodies only).
    image = jpeg if case.image is None else case.image
    response = httpx.post(
        f"{server.http_url}/v1/detect", params=case.options, files=[("image", ("x.jpg", image, "image/jpeg"))]
    )
    return response.status_code, response.json()


def v1_json(server: ServerThread, case: Case, jpeg: bytes) -> tuple[int, dict]:
    import base64

    image = jpeg if case.image is None else case.image
    body = {"images": [{"b64": base64.b64encode(image).decode()}]}
    text = json.dumps(body)[:-1]
    for key, value in case.options.items():  # raw JSON values: the 5000-digit integer stays an integer
        value = json.dumps(value.split(",")) if key == "classes" else value
        text += f', "{key}": {value}' if value not in ("nan",) else f', "{key}": NaN'
    response = httpx.post(
        f"{server.http_url}/v1/detect", content=text + "}", headers={"content-type": "application/json"}
    )
    return response.status_code, response.json()


def _bytes_tensor(*items: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(item)) + item for item in items)


def v2_rest(server: ServerThread, case: Case, jpeg: bytes) -> tuple[int, dict]:
    tensor = _bytes_tensor(jpeg if case.image is None else case.image)
    image = {"name": "IMAGE", "datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": len(tensor)}}
    params = ", ".join(
        f'"{k}": {json.dumps(v) if k == "classes" else ("NaN" if v == "nan" else v)}' for k, v in case.options.items()
    )
    header = json.dumps({"inputs": [image]})[:-1] + (f', "parameters": {{{params}}}' if params else "") + "}"
    head = header.encode()
    response = httpx.post(
        f"{server.http_url}/v2/models/tiny/infer",
        content=head + tensor,
        headers={"Inference-Header-Content-Length": str(len(head))},
        timeout=30,
    )
    return response.status_code, response.json()


def grpc_detect(channel: grpc.Channel, case: Case, jpeg: bytes) -> grpc.StatusCode:
    request = pb.DetectRequest(image=pb.Image(encoded=jpeg if case.image is None else case.image))
    for key, value in case.options.items():
        if key == "classes":
            request.class_names.extend(value.split(","))
        elif key == "max_detections":
            if len(value) > 9:  # uint32 cannot carry it: the nearest the wire can say is its maximum
                value = str(2**32 - 1)
            request.max_detections = int(value)
        else:
            request.score_threshold = float(value)
    try:
        pb_grpc.DetectorStub(channel).Detect(request, timeout=30)
    except grpc.RpcError as err:
        return err.code()
    return grpc.StatusCode.OK


def grpc_oip(channel: grpc.Channel, case: Case, jpeg: bytes) -> grpc.StatusCode:
    tensor = oip_pb.ModelInferRequest.InferInputTensor(name="IMAGE", datatype="BYTES", shape=[1])
    request = oip_pb.ModelInferRequest(
        model_name="tiny",
        inputs=[tensor],
        raw_input_contents=[_bytes_tensor(jpeg if case.image is None else case.image)],
    )
    for key, value in case.options.items():
        if key == "max_detections":
            request.parameters[key].int64_param = min(int(value), 2**63 - 1) if len(value) < 19 else 2**63 - 1
        elif key == "score_threshold":
            request.parameters[key].double_param = float(value)
        else:
            request.parameters[key].string_param = value
    try:
        oip_pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=30)
    except grpc.RpcError as err:
        return err.code()
    return grpc.StatusCode.OK


HTTP: dict[str, Callable] = {"v1 router": v1_router, "v1 fastapi": v1_fastapi, "v1 json": v1_json, "v2 rest": v2_rest}
GRPC: dict[str, Callable] = {"yoloxpai.v1": grpc_detect, "oip grpc": grpc_oip}


@pytest.fixture(scope="module")
def hardened(tiny_bundle):
    with ServerThread(server_settings(tiny_bundle, max_image_pixels=4_000_000)) as running:
        yield running


@pytest.fixture(scope="module")
def channel(hardened):
    with grpc.insecure_channel(hardened.grpc_target) as ch:
        yield ch


def good_answers(server: ServerThread, channel: grpc.Channel, jpeg: bytes) -> None:
    assert v1_router(server, Case("good"), jpeg)[0] == 200
    assert grpc_detect(channel, Case("good"), jpeg) == grpc.StatusCode.OK


@pytest.mark.parametrize("transport", sorted(HTTP))
def test_every_bad_input_is_a_client_error_over_http(hardened, channel, jpeg, transport):
    failures = []
    for case in cases(jpeg):
        status, body = HTTP[transport](hardened, case, jpeg)
        error = body.get("error")
        envelope = isinstance(error, str) if transport == "v2 rest" else isinstance(error, dict) and error["message"]
        if not (400 <= status < 500 and envelope):
            failures.append((case.name, status, body))
    assert failures == []
    good_answers(hardened, channel, jpeg)


@pytest.mark.parametrize("transport", sorted(GRPC))
def test_every_bad_input_is_a_client_error_over_grpc(hardened, channel, jpeg, transport):
    failures = [(c.name, code) for c in cases(jpeg) if (code := GRPC[transport](channel, c, jpeg)) not in CLIENT_FAULTS]
    assert failures == []
    good_answers(hardened, channel, jpeg)


@pytest.mark.parametrize(
    ("path", "headers"),
    [
        ("/v1/detect", {"content-type": "application/json"}),
        ("/v2/models/tiny/infer", {}),
    ],
)
@pytest.mark.parametrize(
    "body", [nested_json(), b'{"images": [{"b64": "AA=="}], "max_detections": ' + HUGE_INT.encode() + b"}"]
)
def test_hostile_json_is_a_client_error(hardened, channel, jpeg, path, headers, body):
    response = httpx.post(hardened.http_url + path, content=body, headers=headers, timeout=30)
    assert 400 <= response.status_code < 500, response.text
    assert "error" in response.json()
    good_answers(hardened, channel, jpeg)


def test_malformed_protobuf_is_invalid_argument(hardened, channel, jpeg):
    for method in ("/yoloxpai.v1.Detector/Detect", "/inference.GRPCInferenceService/ModelInfer"):
        call = channel.unary_unary(method, request_serializer=None, response_deserializer=None)
        with pytest.raises(grpc.RpcError) as err:
            call(b"\xff\xff\xff\xff not a protobuf", timeout=10)
        assert err.value.code() in CLIENT_FAULTS, (method, err.value.code(), err.value.details())
    good_answers(hardened, channel, jpeg)
