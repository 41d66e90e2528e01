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


def test_a_large_photo_is_decoded_reduced_and_answered_in_its_own_pixels(default_server: ServerThread) -> None:
    """The cat photo enlarged 4x (1804 x 1200): 416 / 1804 <= 1/4, so the server decodes it at 1/4 (libjpeg's DCT
    scaling) and maps the boxes back by 4: the answer is the Predictor's reduced decode, in the photo's pixels,
    and the cat is where the full decode finds it."""
    import cv2
    import numpy as np

    from model.artifacts import default_bundle_dir
    from model.predictor import Predictor

    photo = cv2.imdecode(np.frombuffer(CHELSEA, np.uint8), cv2.IMREAD_COLOR)
    large = cv2.resize(photo, None, fx=4, fy=4, interpolation=cv2.INTER_CUBIC)
    data = cv2.imencode(".jpg", large, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()
    headers = {"Content-Type": "image/jpeg"}
    result = httpx.post(f"{default_server.http_url}/v1/detect", content=data, headers=headers, timeout=30)
    answer = result.json()["results"][0]
    assert (answer["height"], answer["width"]) == large.shape[:2]
    backend = httpx.get(f"{default_server.http_url}/v1/models", timeout=10).json()["models"][0]["backend"]
    predictor = Predictor.from_bundle(default_bundle_dir(), backend=backend, device="cpu", threads=1)
    reduced = predictor.predict(data)[0]
    full = predictor.predict(data, reduced_decode=False)[0]
    served = np.array([d["box"] for d in answer["detections"]], np.float32).reshape(-1, 4)
    assert [d["class_name"] for d in answer["detections"]] == list(reduced.class_names)
    np.testing.assert_allclose(served, reduced.boxes_xyxy, atol=1.0)  # other thread counts: other roundings
    cat = full.boxes_xyxy[list(full.class_names).index("cat")]
    x1, y1 = np.maximum(cat[:2], served[0, :2])
    x2, y2 = np.minimum(cat[2:], served[0, 2:])
    inter = max(x2 - x1, 0) * max(y2 - y1, 0)
    union = np.prod(cat[2:] - cat[:2]) + np.prod(served[0, 2:] - served[0, :2]) - inter
    assert answer["detections"][0]["class_name"] == "cat" and inter / union >= 0.9
