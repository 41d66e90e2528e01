"""The model repository API against a real server in explicit model control, driven by NVIDIA's tritonclient (HTTP
and gRPC): ``get_model_repository_index``, ``load_model``, ``unload_model``, ``is_model_ready(m, v)``; the API key
they need; a corrupt version refused while the old one serves; versioned requests on every transport."""

from __future__ import annotations

import shutil
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from tritonclient.utils import InferenceServerException

from service.pb.yoloxpai.v1 import detection_pb2 as pb
from service.pb.yoloxpai.v1 import detection_pb2_grpc as pb_grpc
from tests.service.conftest import encode, sample_image, server_settings
from tests.service.servers import ServerThread

JPEG = encode(sample_image())
KEY = "Bearer repo-key"
METADATA = (("authorization", KEY),)


def key() -> dict[str, str]:
    return {"authorization": KEY}  # a fresh dict per call: tritonclient.http adds its own headers to it


def publish(tiny_bundle: Path, repo: Path, model: str, version: str, *, corrupt: bool = False) -> Path:
    """Copy the tiny bundle in as ``repo/model/version`` (a corrupt copy fails its sha256 check)."""
    target = repo / model / version
    staged = repo / model / f".{version}.partial"
    shutil.copytree(tiny_bundle, staged)
    if corrupt:
        with open(staged / "model.onnx", "ab") as f:
            f.write(b"\0")
    staged.rename(target)  # as `yoloxpai export --repository` does: the version appears whole
    return target


@pytest.fixture(scope="module")
def repo_server(tiny_bundle, tmp_path_factory):
    repo = tmp_path_factory.mktemp("repository")
    publish(tiny_bundle, repo, "tiny", "1")
    publish(tiny_bundle, repo, "spare", "1")
    settings = server_settings(
        tiny_bundle, bundles=[], model_repository=repo, model_control="explicit", load_models=["tiny"],
        api_keys=["repo-key"], latency_instance=False,
    )  # fmt: skip
    with ServerThread(settings) as server:
        yield server, repo


@pytest.fixture(scope="module")
def http(repo_server):
    client = triton_http.InferenceServerClient(repo_server[0].http_url.removeprefix("http://"))
    yield client
    client.close()


@pytest.fixture(scope="module")
def rpc(repo_server):
    client = triton_grpc.InferenceServerClient(repo_server[0].grpc_target)
    yield client
    client.close()


def index(http) -> dict[tuple[str, str], tuple[str, str]]:
    rows = http.get_model_repository_index(headers=key())
    return {(m["name"], m["version"]): (m["state"], m["reason"]) for m in rows}


def test_the_repository_api_needs_the_key(repo_server, http, rpc):
    server, _ = repo_server
    for path in ("/v2/repository/index", "/v2/repository/models/spare/load", "/v2/repository/models/spare/unload"):
        assert httpx.post(server.http_url + path).status_code == 401, path
    with pytest.raises(InferenceServerException) as info:
        rpc.load_model("spare")
    assert info.value.status() == "StatusCode.UNAUTHENTICATED"
    with pytest.raises(InferenceServerException):
        http.get_model_repository_index()


def test_index_load_and_unload_over_http(repo_server, http):
    assert index(http) == {("spare", ""): ("UNAVAILABLE", "not loaded"), ("tiny", "1"): ("READY", "")}
    assert not http.is_model_ready("spare", headers=key())
    http.load_model("spare", headers=key())
    assert http.is_model_ready("spare", "1", headers=key()) and index(http)[("spare", "1")] == ("READY", "")
    tensor = triton_http.InferInput("IMAGE", [1], "BYTES")
    tensor.set_data_from_numpy(np.array([JPEG], dtype=object))
    assert http.infer("spare", [tensor], headers=key()).get_response()["model_version"] == "1"
    http.unload_model("spare", headers=key())
    assert not http.is_model_ready("spare", headers=key()) and not http.is_model_ready("spare", "1", headers=key())
    assert index(http)[("spare", "1")][0] in ("UNLOADING", "UNAVAILABLE")
    ready = httpx.post(repo_server[0].http_url + "/v2/repository/index", json={"ready": True}, headers=key())
    assert [(m["name"], m["state"]) for m in ready.json()] == [("tiny", "READY")]  # the `ready` filter
    bad = httpx.post(repo_server[0].http_url + "/v2/repository/index", json={"ready": "yes"}, headers=key())
    assert bad.status_code == 400 and "ready must be a boolean" in bad.json()["error"]
    with pytest.raises(InferenceServerException, match="not supported") as info:
        http.load_model("tiny", headers=key(), config='{"max_batch_size": 2}')  # overrides: the files are the truth
    assert info.value.status() == "400"
    with pytest.raises(InferenceServerException, match="unknown model") as info:
        http.load_model("nope", headers=key())
    assert info.value.status() == "404"


def test_a_new_version_over_grpc_and_a_corrupt_one_refused(repo_server, rpc, http):
    _, repo = repo_server
    publish(_tiny(repo), repo, "tiny", "2")
    rpc.load_model("tiny", headers=dict(METADATA))
    assert rpc.is_model_ready("tiny", "2", headers=dict(METADATA))
    assert not rpc.is_model_ready("tiny", "1", headers=dict(METADATA))  # latest:1: version 1 is unloaded
    models = rpc.get_model_repository_index(headers=dict(METADATA), as_json=True)["models"]
    assert {"name": "tiny", "version": "2", "state": "READY"} in models  # protobuf JSON leaves out empty fields
    publish(_tiny(repo), repo, "tiny", "3", corrupt=True)
    with pytest.raises(InferenceServerException, match="sha256 mismatch") as info:
        rpc.load_model("tiny", headers=dict(METADATA))
    assert info.value.status() == "StatusCode.INVALID_ARGUMENT"
    state, reason = index(http)[("tiny", "3")]
    assert state == "UNAVAILABLE" and "sha256 mismatch" in reason
    assert rpc.is_model_ready("tiny", "2", headers=dict(METADATA))  # the old version serves on
    assert rpc.is_model_ready("tiny", headers=dict(METADATA))
    tensor = triton_grpc.InferInput("IMAGE", [1], "BYTES")
    tensor.set_data_from_numpy(np.array([JPEG], dtype=object))
    assert rpc.infer("tiny", [tensor], headers=dict(METADATA)).get_response().model_version == "2"
    assert rpc.infer("tiny", [tensor], model_version="2", headers=dict(METADATA)).get_response().model_version == "2"
    with pytest.raises(InferenceServerException, match="version 3 is not found"):
        rpc.infer("tiny", [tensor], model_version="3", headers=dict(METADATA))
    shutil.rmtree(repo / "tiny" / "3")


def test_v1_routes_and_the_detector_service_name_a_version(repo_server):
    server, _ = repo_server
    headers = {"authorization": KEY, "content-type": "image/jpeg"}
    url = server.http_url + "/v1/models/tiny/versions/2/detect"
    assert httpx.post(url, content=JPEG, headers=headers).json()["model_version"] == "2"  # the ASGI router
    multipart = httpx.post(url, files={"image": ("a.jpg", JPEG, "image/jpeg")}, headers={"authorization": KEY})
    assert multipart.status_code == 200 and multipart.json()["model_version"] == "2"  # FastAPI's route
    missing = httpx.post(server.http_url + "/v1/models/tiny/versions/9/detect", content=JPEG, headers=headers)
    assert missing.status_code == 404 and "version 9" in missing.json()["error"]["message"]
    listing = httpx.get(server.http_url + "/v1/models", headers={"authorization": KEY}).json()
    assert [(m["name"], m["version"], m["state"], m["default_version"]) for m in listing["models"]] == [
        ("tiny", "2", "READY", True)
    ]
    assert {"name": "tiny", "version": "1", "state": "UNAVAILABLE", "reason": "unloaded"} in listing["repository"]
    with grpc.insecure_channel(server.grpc_target) as channel:
        stub = pb_grpc.DetectorStub(channel)
        request = pb.DetectRequest(model="tiny", model_version="2", image=pb.Image(encoded=JPEG))
        assert stub.Detect(request, metadata=METADATA, timeout=30).model_version == "2"
        with pytest.raises(grpc.RpcError) as info:
            stub.Detect(pb.DetectRequest(model="tiny", model_version="1", image=request.image), metadata=METADATA)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
        (listed,) = stub.ListModels(pb.ListModelsRequest(), metadata=METADATA).models
        assert (listed.version, listed.default_version) == ("2", True)


def test_without_explicit_control_load_and_unload_are_refused(server):
    client = triton_http.InferenceServerClient(server.http_url.removeprefix("http://"))
    with pytest.raises(InferenceServerException, match="not allowed") as info:
        client.load_model("tiny")
    assert info.value.status() == "503"
    assert client.get_model_repository_index() == [{"name": "tiny", "version": "1", "state": "READY", "reason": ""}]
    rpc = triton_grpc.InferenceServerClient(server.grpc_target)
    with pytest.raises(InferenceServerException, match="not allowed") as info:
        rpc.unload_model("tiny")
    assert info.value.status() == "StatusCode.UNAVAILABLE"
    assert client.is_model_ready("tiny", "1")
    client.close()
    rpc.close()


def _tiny(repo: Path) -> Path:
    return repo / "tiny" / "1"  # the copy of the tiny bundle the repository started with
