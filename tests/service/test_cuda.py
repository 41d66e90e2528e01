"""The server on a CUDA device (TorchScript on its own CUDA stream): real where a GPU exists, skipped elsewhere.

Concurrent REST requests (so batches of several images form) and a gRPC stream must give what the same bundle
gives on the CPU in-process, and the model listing must report the device.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import grpc
import httpx
import numpy as np
import pytest

from tests.service.conftest import encode, sample_image, server_settings
from tests.service.servers import ServerThread

torch = pytest.importorskip("torch")
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


@pytest.fixture(scope="module")
def torchscript_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.conftest import make_tiny_bundle

    return make_tiny_bundle(tmp_path_factory.mktemp("cuda") / "tiny", formats=("torchscript",))


def expected_detections(bundle: Path, images: list[np.ndarray]) -> list:
    from model.predictor import Predictor

    return Predictor.from_bundle(bundle, backend="torchscript", device="cpu").predict(images)


def assert_same(reference: list, answers: list[list[dict]]) -> None:
    """Same detections within the fp32 tolerances, matched by class and box (not by rank: near-tied scores)."""
    from model.export.parity import compare_detections
    from model.predictor import Detections

    candidate = [
        Detections(
            boxes_xyxy=np.array([d["box"] for d in dets], np.float32).reshape(-1, 4),
            scores=np.array([d["score"] for d in dets], np.float32),
            class_ids=np.array([d["class_id"] for d in dets], np.int32),
            class_names=ref.class_names,
            image_hw=ref.image_hw,
        )
        for ref, dets in zip(reference, answers, strict=True)
    ]
    report = compare_detections(reference, candidate)
    assert report.ok(box_tol_px=0.1, score_tol=1e-3), report  # fp32 both sides: the same graph on two devices


def test_cuda_server_matches_the_cpu_predictor(torchscript_bundle: Path) -> None:
    from service.pb.yoloxpai.v1 import detection_pb2 as pb
    from service.pb.yoloxpai.v1 import detection_pb2_grpc as pb_grpc

    images = [sample_image(seed=seed) for seed in range(12)]
    jpegs = [encode(image) for image in images]
    decoded = [cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) for data in jpegs]  # what it sees
    want = expected_detections(torchscript_bundle, decoded)
    assert any(want), "the tiny model should detect something in these images"
    settings = server_settings(torchscript_bundle, device="cuda:0", backend="torchscript", max_queue_delay_ms=20.0)
    with ServerThread(settings) as server:
        listing = httpx.get(server.http_url + "/v1/models", timeout=30).json()
        (model,) = listing["models"]
        assert model["backend"] == "torchscript" and model["devices"] == ["cuda:0"]

        def post(data: bytes) -> list[dict]:
            response = httpx.post(
                server.http_url + "/v1/detect", content=data, headers={"content-type": "image/jpeg"}, timeout=60
            )
            assert response.status_code == 200, response.text
            return response.json()["results"][0]["detections"]

        with ThreadPoolExecutor(len(jpegs)) as pool:
            got = list(pool.map(post, jpegs))
        assert_same(want, got)

        with grpc.insecure_channel(server.grpc_target) as channel:
            stub = pb_grpc.DetectorStub(channel)
            frames = (pb.DetectRequest(image=pb.Image(encoded=data), frame_id=i) for i, data in enumerate(jpegs))
            responses = list(stub.DetectStream(frames, timeout=60))
        assert [r.frame_id for r in responses] == list(range(len(jpegs)))
        streamed = [
            [
                {"class_id": d.class_id, "box": [d.box.x1, d.box.y1, d.box.x2, d.box.y2], "score": d.score}
                for d in response.detections
            ]
            for response in responses
        ]
        assert_same(want, streamed)
