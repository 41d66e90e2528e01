"""Several bundles = several named models behind one server (and one shared decode pool)."""

from __future__ import annotations

import grpc
import httpx

from service.pb.yoloxpai.v1 import detection_pb2 as pb
from service.pb.yoloxpai.v1 import detection_pb2_grpc as pb_grpc
from tests.service.conftest import server_settings
from tests.service.servers import ServerThread


def test_two_named_models(tiny_bundle, jpeg):
    settings = server_settings(tiny_bundle, bundles=[f"first={tiny_bundle}", f"second={tiny_bundle}"])
    with ServerThread(settings) as server:
        models = httpx.get(server.http_url + "/v1/models").json()["models"]
        assert [(m["name"], m["default"]) for m in models] == [("first", True), ("second", False)]
        headers = {"content-type": "image/jpeg"}
        assert httpx.post(server.http_url + "/v1/detect", content=jpeg, headers=headers).json()["model"] == "first"
        named = httpx.post(server.http_url + "/v1/models/second/detect", content=jpeg, headers=headers)
        assert named.json()["model"] == "second"
        with grpc.insecure_channel(server.grpc_target) as channel:
            stub = pb_grpc.DetectorStub(channel)
            assert (
                stub.Detect(pb.DetectRequest(model="second", image=pb.Image(encoded=jpeg)), timeout=30).model
                == "second"
            )
        metrics = httpx.get(server.http_url + "/metrics").text
        assert 'nv_inference_request_success{model="second",version=' in metrics
