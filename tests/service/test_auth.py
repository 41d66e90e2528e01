"""API keys: REST `Authorization: Bearer` and gRPC metadata; probes and metrics stay open."""

from __future__ import annotations

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from service.pb.yoloxpai.v1 import detection_pb2 as pb
from service.pb.yoloxpai.v1 import detection_pb2_grpc as pb_grpc
from tests.service.conftest import server_settings
from tests.service.servers import ServerThread


@pytest.fixture(scope="module")
def keyed(tiny_bundle):
    with ServerThread(server_settings(tiny_bundle, api_keys=["alpha-key", "beta-key"])) as running:
        yield running


def test_rest_requires_a_valid_key(keyed, jpeg):
    url = keyed.http_url + "/v1/detect"
    headers = {"content-type": "image/jpeg"}
    for auth in (None, "Bearer wrong", "Basic alpha-key", "Bearer"):
        h = dict(headers, **({"authorization": auth} if auth else {}))
        response = httpx.post(url, content=jpeg, headers=h)
        assert response.status_code == 401, auth
        assert response.json()["error"]["code"] == "unauthenticated"
        assert response.headers["www-authenticate"] == "Bearer"
    assert httpx.get(keyed.http_url + "/v1/models").status_code == 401
    for key in ("alpha-key", "beta-key"):
        response = httpx.post(url, content=jpeg, headers=dict(headers, authorization=f"Bearer {key}"))
        assert response.status_code == 200
    for open_path in ("/healthz", "/readyz", "/metrics"):
        assert httpx.get(keyed.http_url + open_path).status_code == 200


def test_grpc_requires_a_valid_key(keyed, jpeg):
    request = pb.DetectRequest(image=pb.Image(encoded=jpeg))
    with grpc.insecure_channel(keyed.grpc_target) as channel:
        stub = pb_grpc.DetectorStub(channel)
        for metadata in ((), (("authorization", "Bearer wrong"),)):
            with pytest.raises(grpc.RpcError) as err:
                stub.Detect(request, metadata=metadata, timeout=10)
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
            with pytest.raises(grpc.RpcError) as err:
                list(stub.DetectStream(iter([request]), metadata=metadata, timeout=10))
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
            with pytest.raises(grpc.RpcError) as err:
                stub.ListModels(pb.ListModelsRequest(), metadata=metadata, timeout=10)
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        good = (("authorization", "Bearer beta-key"),)
        assert stub.Detect(request, metadata=good, timeout=10).width == 128
        assert [r.status.code for r in stub.DetectStream(iter([request]), metadata=good, timeout=10)] == [0]
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert health.status == health_pb2.HealthCheckResponse.SERVING
