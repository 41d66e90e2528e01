"""The Python clients against a real server: REST and gRPC detection, a video file streamed and drawn, the CLI."""

from __future__ import annotations

import subprocess
import sys

import cv2
import grpc
import numpy as np
import pytest

from service.client import DetectError, GrpcClient, RestClient, draw_detections, stream_video
from service.client.results import Detection
from tests.service.conftest import sample_image
from tests.service.servers import REPO


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
            [sys.executable, "-m", "service.client", str(path), *flags, "--out", str(out)],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        assert '"model": "tiny"' in done.stdout and cv2.imread(str(out)).shape == (96, 128, 3)
