"""The Python clients (``yoloxpai.client``) against a real server: REST and gRPC detection, a video file
streamed and drawn, the CLI; and importing the client loads none of the server."""

from __future__ import annotations

import json
import subprocess
import sys

import cv2
import grpc
import numpy as np
import pytest

from tests.service.conftest import sample_image
from tests.service.servers import REPO
from yoloxpai.client import DetectError, GrpcClient, RestClient, draw_detections, stream_video
from yoloxpai.client.results import Detection


def test_rest_and_grpc_clients_agree(server, tmp_path):
    image = sample_image(seed=4)
    path = tmp_path / "image.png"
    cv2.imwrite(str(path), image)
    with RestClient(server.http_url) as rest, GrpcClient(server.grpc_target) as rpc:
        via_rest = rest.detect(path)
        via_grpc = rpc.detect(path)
        assert (via_rest.width, via_rest.height) == (via_grpc.width, via_grpc.height) == (128, 96)
        assert [d.class_id for d in via_rest.detections] == [d.class_id for d in via_grpc.detections]
        for a, b in zip(via_rest.detections, via_grpc.detections, strict=True):
            assert a.box_xyxy == pytest.approx(b.box_xyxy, abs=1e-3)
        assert rpc.detect(image, raw=True).width == 128
        assert rest.models()[0]["name"] == rpc.list_models()[0].name == "tiny"
        assert rest.ready()
        with pytest.raises(DetectError) as err:
            rest.detect(b"not an image")
        assert err.value.status == 400 and err.value.code == "invalid_image"
        with pytest.raises(grpc.RpcError):
            rpc.detect(b"not an image")


def test_stream_a_video_file_and_draw(server, tmp_path):
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (128, 96))
    for i in range(12):
        writer.write(sample_image(seed=i))
    writer.release()
    out = tmp_path / "annotated.avi"
    with GrpcClient(server.grpc_target) as client:
        results = [r for _, r in stream_video(client, str(video), out=out)]
    assert [r.frame_id for r in results] == list(range(12))
    assert all(r.error is None and r.width == 128 for r in results)
    assert out.exists() and out.stat().st_size > 0


def test_draw_detections_marks_the_box():
    image = np.zeros((50, 60, 3), np.uint8)
    drawn = draw_detections(image, [Detection((10, 20, 40, 45), 0.9, 3, "cat")])
    assert drawn[30, 10].any() and not image.any()


def test_cli_on_an_image(server, tmp_path):
    path = tmp_path / "image.jpg"
    cv2.imwrite(str(path), sample_image(seed=6))
    out = tmp_path / "out.jpg"
    for flags in (["--rest", server.http_url], ["--grpc", server.grpc_target]):
        done = subprocess.run(
            [sys.executable, "-m", "yoloxpai.client", str(path), *flags, "--out", str(out)],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        assert '"model": "tiny"' in done.stdout and cv2.imread(str(out)).shape == (96, 128, 3)


SERVER_MODULES = (
    "fastapi", "uvicorn", "starlette", "onnxruntime", "openvino", "torch", "prometheus_client", "pydantic",
)  # fmt: skip


def test_client_imports_none_of_the_server():
    # A fresh interpreter: the test process itself has the server loaded.
    code = "import json, sys, yoloxpai.client\nprint(json.dumps(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    loaded = set(json.loads(done.stdout))
    assert "yoloxpai.client" in loaded
    assert [m for m in loaded if m.split(".")[0] in SERVER_MODULES] == []
    service = [m for m in loaded if m.split(".")[0] == "service"]
    assert [m for m in service if m not in ("service", "service.pb") and not m.startswith("service.pb.")] == []
    assert "service.pb.yoloxpai.v1.detection_pb2_grpc" in service
