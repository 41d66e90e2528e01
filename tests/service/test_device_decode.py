"""Decode mode ``device``: real servers on a TorchScript tiny bundle, run on the CPU (``model.device_pipeline``'s
host decoder stands in for nvJPEG), against a server in decode mode ``batch`` on the same bundle."""

from __future__ import annotations

import asyncio
import struct
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest

from model.export.parity import compare_detections, parity_images
from model.letterbox import letterbox_scale
from model.predictor import Predictor
from service.batch_exec import device_decode_capable, resolve_decode_mode
from service.bundles import ConfigError
from service.imaging import RawImage
from tests.conftest import TINY_INPUT_HW, make_tiny_bundle
from tests.service.conftest import encode, sample_image, server_settings
from tests.service.servers import ServerThread
from tests.service.test_bad_input import png_bomb

BATCH = 4  # every test sends one full batch: the batcher dispatches it at once, as one execution
MAX_PIXELS = 400_000


@dataclass(frozen=True)
class Dets:
    """One image's detections from a response, in the shape ``compare_detections`` reads."""

    boxes_xyxy: np.ndarray
    scores: np.ndarray
    class_ids: np.ndarray

    def __len__(self) -> int:
        return len(self.scores)

    @classmethod
    def from_json(cls, image: dict) -> Dets:
        dets = image["detections"]
        boxes = np.array([d["box"] for d in dets], np.float32).reshape(-1, 4)
        return cls(boxes, np.array([d["score"] for d in dets], np.float32), np.array([d["class_id"] for d in dets]))


@pytest.fixture(scope="module")
def torchscript_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_bundle(tmp_path_factory.mktemp("bundles") / "tiny-ts", formats=("torchscript",))


def settings_for(bundle: Path, decode_mode: str):
    # Full-or-delay batching of BATCH images, no direct path: each test's images share one batch.
    return server_settings(
        bundle,
        decode_mode=decode_mode,
        max_batch_size=BATCH,
        direct_when_idle=False,
        eager_dispatch=False,
        max_queue_delay_ms=2000.0,
        max_image_pixels=MAX_PIXELS,
        reduced_decode=False,  # the device decodes full size: compare like with like
    )


@pytest.fixture(scope="module")
def servers(torchscript_bundle: Path):
    """``(device, batch)``: the same bundle served in decode modes ``device`` and ``batch``."""
    device, batch = (ServerThread(settings_for(torchscript_bundle, mode)) for mode in ("device", "batch"))
    with device, batch:
        yield device, batch


def post_together(server: ServerThread, images: list[bytes]) -> list[tuple[int, dict]]:
    """One request per image, all at once (one batch); ``(status, body)`` each."""
    assert len(images) == BATCH

    def post(image: bytes) -> tuple[int, dict]:
        url = f"{server.http_url}/v1/detect"
        response = httpx.post(url, content=image, params={"score_threshold": "0.3"}, timeout=60)
        return response.status_code, response.json()

    with ThreadPoolExecutor(BATCH) as pool:
        return list(pool.map(post, images))


def executions(server: ServerThread) -> tuple[int, int]:
    """(batches executed, images inferred) so far."""
    snap = server.engine.telemetry.statistics("tiny")
    return snap.execution_count, snap.inference_count


def assert_same_detections(reference: Dets, candidate: Dets, image_hw: tuple[int, int]) -> None:
    report = compare_detections([reference], [candidate])
    # torch's bilinear letterbox and OpenCV's differ by at most one grey level (tests/export/test_device_pipeline.py)
    assert report.count_mismatches == 0 and report.class_mismatches == 0, report
    network_px = 1.0 / letterbox_scale(image_hw, TINY_INPUT_HW)
    assert report.max_box_diff_px <= network_px and report.max_score_diff < 0.03, report


def test_auto_picks_device_only_on_cuda_with_torchscript(torchscript_bundle: Path, tiny_bundle: Path) -> None:
    assert device_decode_capable(Predictor.from_bundle(torchscript_bundle, backend="torchscript"))
    assert not device_decode_capable(Predictor.from_bundle(tiny_bundle, backend="onnxruntime"))
    assert resolve_decode_mode("auto", ("cuda:0", "cuda:1"), device_capable=True) == "device"
    assert resolve_decode_mode("auto", ("cuda:0",), device_capable=False) == "pool"
    assert resolve_decode_mode("auto", ("cuda:0", "cpu"), device_capable=True) == "pool"
    assert resolve_decode_mode("auto", ("cpu",), device_capable=True) == "batch"
    assert resolve_decode_mode("device", ("cpu",), device_capable=True) == "device"  # forced: how the CPU tests it
    assert resolve_decode_mode("batch", ("cuda:0",), device_capable=True) == "batch"
    with pytest.raises(ConfigError, match="decode-mode device needs a TorchScript bundle"):
        resolve_decode_mode("device", ("cuda:0",), device_capable=False)


def test_an_onnx_bundle_in_device_mode_is_refused_at_load(tiny_bundle: Path) -> None:
    server = ServerThread(server_settings(tiny_bundle, decode_mode="device"))
    with pytest.raises(ConfigError, match="decode-mode device needs a TorchScript bundle"), server:
        pass


def test_detections_match_batch_mode(servers) -> None:
    device, batch = servers
    # The images tests/export/test_device_pipeline.py compares: the tiny random model's detections on them keep
    # clear of its K = 20 cap, where a one-grey-level letterbox difference may swap the last box for another.
    originals = parity_images()  # 480x640, 720x400, 300x300
    images = [*(encode(image) for image in originals), encode(originals[1], ".png")]
    assert [server.engine._registry.route("tiny").decode_mode for server in servers] == ["device", "batch"]
    before = executions(device)
    got, want = post_together(device, images), post_together(batch, images)
    assert executions(device) == (before[0] + 1, before[1] + BATCH)  # one batch, decoded on the "device"
    assert sum(len(body["results"][0]["detections"]) for _, body in want) > 0  # something to compare
    for (status, body), (ref_status, ref_body) in zip(got, want, strict=True):
        assert status == ref_status == 200, body
        image, ref = body["results"][0], ref_body["results"][0]
        assert (image["height"], image["width"]) == (ref["height"], ref["width"])
        assert_same_detections(Dets.from_json(ref), Dets.from_json(image), (ref["height"], ref["width"]))


def test_raw_pixels_in_either_channel_order_match_batch_mode(servers) -> None:
    device, batch = servers
    bgr = parity_images()[2]  # 300 x 300
    rgb = np.ascontiguousarray(bgr[:, :, ::-1])
    raws = [RawImage(bgr.tobytes(), 300, 300, "bgr"), RawImage(rgb.tobytes(), 300, 300, "rgb")]

    def detect_all(server: ServerThread) -> list:
        async def run() -> list:
            return await asyncio.gather(*(server.engine.detect(raw) for raw in [*raws, *raws]))

        return asyncio.run_coroutine_threadsafe(run(), server._loop).result(60)

    got, want = detect_all(device), detect_all(batch)
    for result, ref in zip(got, want, strict=True):
        assert (result.height, result.width) == (ref.height, ref.width) == (300, 300)
        ref_dets, dets = (Dets(r.boxes_xyxy, r.scores, r.class_ids) for r in (ref, result))
        assert_same_detections(ref_dets, dets, (300, 300))
    # the same pixels in either order: the device path converted both to one order
    np.testing.assert_array_equal(got[0].boxes_xyxy, got[1].boxes_xyxy)


def corrupt_png(image: np.ndarray) -> bytes:
    """A PNG whose header is sound (so the host checks pass) and whose pixel data is not zlib: no decoder reads it."""
    data = encode(image, ".png")
    start = data.index(b"IDAT") + 4
    (length,) = struct.unpack(">I", data[start - 8 : start - 4])
    garbage = bytes(length)
    crc = struct.pack(">I", zlib.crc32(b"IDAT" + garbage))
    return data[:start] + garbage + crc + data[start + length + 4 :]


def test_a_bad_image_fails_alone_as_in_batch_mode(servers) -> None:
    device, batch = servers
    good = encode(sample_image(seed=5))
    truncated_jpeg = good[: len(good) // 2]  # refused on the host (no end-of-image marker)
    undecodable_png = corrupt_png(sample_image(seed=6))  # passes the header checks, fails the device decode
    images = [good, truncated_jpeg, undecodable_png, encode(sample_image(seed=7), ".png")]
    before = executions(device)
    got, want = post_together(device, images), post_together(batch, images)
    assert [status for status, _ in got] == [status for status, _ in want] == [200, 400, 400, 200]
    for (_, body), (_, ref_body) in zip(got[1:3], want[1:3], strict=True):
        assert body["error"]["code"] == ref_body["error"]["code"] == "invalid_image"
        assert body["error"]["message"] == ref_body["error"]["message"]
    assert executions(device) == (before[0] + 1, before[1] + 2)  # the two good images ran, in one batch


def test_an_oversized_image_is_refused_before_decoding(servers) -> None:
    device, batch = servers
    too_big = encode(sample_image(600, 800, seed=8))  # 480,000 pixels > MAX_PIXELS
    images = [png_bomb(), too_big, encode(sample_image(seed=9)), encode(sample_image(seed=10))]
    got, want = post_together(device, images), post_together(batch, images)
    # 413, not the 400 a decode of the bomb's missing pixels would give: the header was read, nothing decoded
    assert [status for status, _ in got] == [status for status, _ in want] == [413, 413, 200, 200]
    for (_, body), (_, ref_body) in zip(got[:2], want[:2], strict=True):
        assert body["error"] == ref_body["error"] and body["error"]["code"] == "payload_too_large"
