"""`yoloxpai serve` with no bundle serves the COCO default model: every transport sees the 80 COCO classes."""

from __future__ import annotations

from pathlib import Path

import grpc
import httpx
import pytest

from model.bn_unfold import DEFAULT_CALIBRATION_DIR
from model.classes import COCO_CLASSES
from service.pb.yoloxpai.v1 import detection_pb2 as pb
from service.pb.yoloxpai.v1 import detection_pb2_grpc as pb_grpc
from tests.service.conftest import server_settings
from tests.service.servers import ServerThread

CHELSEA = (DEFAULT_CALIBRATION_DIR / "chelsea.jpg").read_bytes()


@pytest.fixture(scope="module")
def default_server():
    settings = server_settings(Path(), bundles=[])  # no bundle named: the embedded default model
    with ServerThread(settings) as running:
        yield running


def test_rest_answers_cat_for_the_cat_photo(default_server: ServerThread) -> None:
    headers = {"Content-Type": "image/jpeg"}
    body = httpx.post(f"{default_server.http_url}/v1/detect", content=CHELSEA, headers=headers, timeout=30).json()
    assert body["model"] == "yolox-nano-coco"
    assert body["results"][0]["detections"][0]["class_name"] == "cat"
    models = httpx.get(f"{default_server.http_url}/v1/models", timeout=10).json()
    assert tuple(models["models"][0]["classes"]) == COCO_CLASSES


def test_grpc_lists_and_detects_coco_classes(default_server: ServerThread) -> None:
    with grpc.insecure_channel(default_server.grpc_target) as channel:
        stub = pb_grpc.DetectorStub(channel)
        listed = stub.ListModels(pb.ListModelsRequest(), timeout=10).models
        assert [m.name for m in listed] == ["yolox-nano-coco"] and tuple(listed[0].classes) == COCO_CLASSES
        response = stub.Detect(pb.DetectRequest(image=pb.Image(encoded=CHELSEA)), timeout=30)
        assert response.detections[0].class_name == "cat"


def test_oip_model_config_carries_the_coco_names(default_server: ServerThread) -> None:
    config = httpx.get(f"{default_server.http_url}/v2/models/yolox-nano-coco/config", timeout=10).json()
    assert tuple(config["parameters"]["class_names"]["string_value"].split(",")) == COCO_CLASSES
