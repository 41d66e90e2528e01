"""``model.device_pipeline``: decode and letterbox next to the model. Its CUDA figures come from bench/gpu_check.py
on a GPU; here the same code runs on the CPU and must give the host path's detections."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from model.device_pipeline import DevicePipeline, orient
from model.export.parity import compare_detections, parity_images
from model.letterbox import letterbox_scale
from model.predictor import Predictor


@pytest.fixture(scope="module")
def predictor(full_bundle: Path) -> Predictor:
    return Predictor.from_bundle(full_bundle, backend="torchscript")


def encoded(ext: str = ".jpg") -> list[bytes]:
    return [cv2.imencode(ext, image)[1].tobytes() for image in parity_images()]


def test_detections_match_the_host_path(predictor: Predictor) -> None:
    images = encoded()
    host = predictor.predict(images, score_threshold=0.3, reduced_decode=False)
    device = DevicePipeline(predictor).detect(images, score_threshold=0.3)
    assert sum(len(d) for d in host) > 0  # something to compare
    for h, d in zip(host, device, strict=True):
        assert d.image_hw == h.image_hw
        report = compare_detections([h], [d])
        # torch's bilinear letterbox and OpenCV's differ by at most one grey level per pixel (tests/model/
        # test_preprocess.py): the same detections, boxes within one network pixel
        assert report.count_mismatches == 0 and report.class_mismatches == 0, report
        network_px = 1.0 / letterbox_scale(h.image_hw, predictor.meta.input_hw)
        assert report.max_box_diff_px <= network_px and report.max_score_diff < 0.03, report


def test_gpu_decoder_gets_the_jpegs_in_one_call_and_a_refused_one_falls_back(predictor: Predictor) -> None:
    calls: list[tuple[int, str]] = []

    def fake_nvjpeg(tensors, device):  # torchvision's contract: 1-D uint8 tensors in, RGB [3, H, W] out
        import torch

        calls.append((len(tensors), device))
        if len(tensors) > 1 and any(t.numel() < 100 for t in tensors):
            raise RuntimeError("nvjpeg: bad file in the batch")
        out = []
        for t in tensors:
            image = cv2.imdecode(t.numpy(), cv2.IMREAD_COLOR)
            if image is None:
                raise RuntimeError("nvjpeg: cannot decode")
            out.append(torch.from_numpy(np.ascontiguousarray(image[:, :, ::-1].transpose(2, 0, 1))))
        return out

    jpegs, png = encoded(), encoded(".png")[0]
    broken = b"\xff\xd8\xff" + b"\x00" * 20  # a JPEG header and nothing else
    pipeline = DevicePipeline(predictor, gpu_decode=fake_nvjpeg)
    results = pipeline.detect([*jpegs, png, broken], score_threshold=0.3)
    assert calls[0] == (len(jpegs) + 1, "cpu")  # every JPEG in one call, on the predictor's device
    assert len(calls) == 1 + len(jpegs) + 1  # the refused batch retried one by one
    assert isinstance(results[-1], ValueError) and "cannot decode" in str(results[-1])
    reference = DevicePipeline(predictor).detect([*jpegs, png], score_threshold=0.3)
    report = compare_detections(reference, results[:-1])  # the PNG went through the host decoder
    assert report.count_mismatches == 0 and report.max_box_diff_px == 0.0, report


def decoded_as_stored(tensors, device):
    """nvJPEG's behaviour: RGB [3, H, W], EXIF orientation ignored."""
    import torch

    flags = cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION
    images = [cv2.imdecode(t.numpy(), flags)[:, :, ::-1] for t in tensors]
    return [torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).to(device) for image in images]


@pytest.mark.parametrize("orientation", range(1, 9))
def test_device_decode_applies_exif_orientation_as_the_host_does(predictor: Predictor, orientation: int) -> None:
    from tests.model.jpeg_samples import structured_image, with_exif_orientation

    data = with_exif_orientation(cv2.imencode(".jpg", structured_image(48, 80))[1].tobytes(), orientation)
    host = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)[:, :, ::-1]  # OpenCV applies EXIF
    [device] = DevicePipeline(predictor, gpu_decode=decoded_as_stored).decode([data])
    assert tuple(device.shape) == host.shape  # quarter turns swap height and width
    np.testing.assert_array_equal(device.numpy(), host)


def test_orient_turns_a_tensor_as_exif_says() -> None:
    import torch

    image = torch.arange(6).reshape(2, 3, 1)  # [[0, 1, 2], [3, 4, 5]]
    turned = {o: orient(image, o)[..., 0].tolist() for o in range(1, 9)}
    assert turned[1] == [[0, 1, 2], [3, 4, 5]]
    assert turned[3] == [[5, 4, 3], [2, 1, 0]]
    assert turned[6] == [[3, 0], [4, 1], [5, 2]]  # 90 degrees clockwise
    assert turned[8] == [[2, 5], [1, 4], [0, 3]]  # 90 degrees counter-clockwise


def test_oversized_images_and_bad_options_are_refused(predictor: Predictor) -> None:
    pipeline = DevicePipeline(predictor, max_pixels=100)
    result = pipeline.detect(encoded()[:1])[0]
    assert isinstance(result, ValueError) and "exceeds 100 pixels" in str(result)
    with pytest.raises(ValueError, match="max_detections"):
        pipeline.detect(encoded()[:1], max_detections=10_000)


def test_only_torchscript_bundles(full_bundle: Path) -> None:
    with pytest.raises(ValueError, match="TorchScript"):
        DevicePipeline(Predictor.from_bundle(full_bundle, backend="onnxruntime"))
