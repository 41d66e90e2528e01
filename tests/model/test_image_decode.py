"""Reduced-resolution JPEG decode (``model.image_decode``): which reduction a letterbox allows, that reduced pixels
line up with the original's k x k blocks (so boxes map back by k exactly), EXIF rotation, and end to end on real
photos that the default COCO model finds the same objects either way."""

from __future__ import annotations

import struct

import cv2
import numpy as np
import pytest

from model.image_decode import Decoded, decode_jpeg_for_input, jpeg_orientation, jpeg_reduction, jpeg_size
from tests.model.jpeg_samples import jpeg, structured_image, with_exif_orientation


@pytest.mark.parametrize(
    ("image_hw", "input_hw", "k"),
    [
        ((480, 640), (416, 416), 1),  # r = 0.65: the letterbox keeps more than half
        ((832, 832), (416, 416), 2),  # r = 1/2 exactly
        ((1080, 1920), (416, 416), 4),  # r = 0.217
        ((1080, 1920), (640, 640), 2),  # r = 0.333
        ((2160, 3840), (416, 416), 8),  # r = 0.108
        ((20000, 100), (416, 416), 8),  # the tighter side decides
        ((100, 80), (416, 416), 1),  # upscaled
    ],
)
def test_reduction_is_the_largest_the_letterbox_allows(image_hw, input_hw, k) -> None:
    assert jpeg_reduction(image_hw, input_hw) == k


@pytest.mark.parametrize("hw", [(1081, 1923), (1080, 1920), (977, 1303)])
def test_reduced_pixels_are_the_original_blocks(hw: tuple[int, int]) -> None:
    image = structured_image(*hw)
    data = jpeg(image)
    assert jpeg_size(data) == (hw[1], hw[0])
    full = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR).astype(np.float32)
    for k in (2, 4, 8):
        input_side = int(max(hw) / k * 0.9)  # letterbox scale 0.9 / k
        decoded = decode_jpeg_for_input(data, hw, (input_side, input_side))
        assert decoded is not None and decoded.reduction == k and decoded.original_hw == hw
        # libjpeg makes ceil(side / k) pixels: pixel i covers original pixels [k*i, k*i + k)
        assert decoded.image.shape[:2] == (-(-hw[0] // k), -(-hw[1] // k))
        rows, cols = hw[0] // k, hw[1] // k  # whole blocks
        means = full[: rows * k, : cols * k].reshape(rows, k, cols, k, 3).mean(axis=(1, 3))
        reduced = decoded.image[:rows, :cols].astype(np.float32)
        aligned = np.abs(reduced - means).mean()
        shifted = np.abs(reduced[:, 1:] - means[:, :-1]).mean()  # the same comparison one block off
        assert aligned < 2.0 and shifted > 2 * aligned, (k, aligned, shifted)
        assert decoded.scale_to_original(0.5) == 0.5 / k


def test_exif_rotation_gives_the_rotated_original_size() -> None:
    data = with_exif_orientation(jpeg(structured_image(1081, 1923)), 6)  # 90 degrees clockwise
    full = decode_jpeg_for_input(data, (1081, 1923), (1923, 1923))
    reduced = decode_jpeg_for_input(data, (1081, 1923), (416, 416))
    assert full is not None and full.reduction == 1 and full.original_hw == (1923, 1081)
    assert reduced is not None and reduced.reduction == 4 and reduced.original_hw == (1923, 1081)
    assert reduced.image.shape[:2] == (481, 271)


def test_exif_orientation_is_read_from_the_header() -> None:
    plain = jpeg(structured_image(40, 60))
    assert jpeg_orientation(plain) == 1  # no EXIF: as stored
    assert [jpeg_orientation(with_exif_orientation(plain, o)) for o in range(1, 9)] == list(range(1, 9))
    # big-endian TIFF ("MM"), as many cameras write it
    ifd = struct.pack(">H", 1) + struct.pack(">HHIHH", 0x0112, 3, 1, 8, 0) + struct.pack(">I", 0)
    app1 = b"Exif\x00\x00" + b"MM\x00*" + struct.pack(">I", 8) + ifd
    assert jpeg_orientation(plain[:2] + b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1 + plain[2:]) == 8
    # an EXIF segment after the frame header: OpenCV still applies it (it reads every segment before the scan)
    sof = plain.index(b"\xff\xc0")
    sof_end = sof + 2 + struct.unpack_from(">H", plain, sof + 2)[0]
    late = plain[:sof_end] + with_exif_orientation(b"\xff\xd8", 6)[2:] + plain[sof_end:]
    assert cv2.imdecode(np.frombuffer(late, np.uint8), cv2.IMREAD_COLOR).shape[:2] == (60, 40)
    assert jpeg_orientation(late) == 6
    # out of range, or an EXIF segment cut short: as stored, never an error
    assert jpeg_orientation(with_exif_orientation(plain, 9)) == 1
    truncated = b"\xff\xd8\xff\xe1\x00\x10Exif\x00\x00II*\x00\xff\xff\x00\x00"
    assert jpeg_orientation(truncated) == 1 and jpeg_orientation(b"\xff\xd8") == 1


def test_undecodable_and_non_jpeg_inputs() -> None:
    assert decode_jpeg_for_input(b"\xff\xd8\xff" + b"\x00" * 64, (1080, 1920), (416, 416)) is None
    with pytest.raises(ValueError, match="truncated JPEG"):
        jpeg_size(b"\xff\xd8\xff\xe0\x00\x10")
    assert Decoded(np.zeros((4, 4, 3), np.uint8), (4, 4)).scale_to_original(0.25) == 0.25


def test_the_default_model_finds_the_same_objects_in_reduced_photos(shared) -> None:
    """coco-tiny photos enlarged 3x (1500-1920 px wide, so 416 decodes them at 1/4): every detection the full
    decode makes at score >= 0.5 is found by the reduced decode, same class, IoU >= 0.7 (measured on all 80:
    median IoU 0.976, 5th percentile 0.90; boxes differ by a few network pixels because the two paths resample
    differently: bilinear from full size vs libjpeg's block averages), and boxes are in the original pixels."""
    from model.artifacts import default_bundle_dir
    from model.predictor import Predictor

    predictor = Predictor.from_bundle(default_bundle_dir(), backend="onnxruntime", device="cpu", threads=1)
    photos = sorted((shared / "data" / "coco-tiny" / "val2017").glob("*.jpg"))[:8]
    checked = 0
    for path in photos:
        large = cv2.resize(cv2.imread(str(path)), None, fx=3, fy=3, interpolation=cv2.INTER_CUBIC)
        data = jpeg(large)
        full = predictor.predict(data, score_threshold=0.5, reduced_decode=False)[0]
        reduced = predictor.predict(data, score_threshold=0.25)[0]
        assert reduced.image_hw == full.image_hw == large.shape[:2]
        for box, cls in zip(full.boxes_xyxy, full.class_ids, strict=True):
            ious = [box_iou(box, other) for other, c in zip(reduced.boxes_xyxy, reduced.class_ids, strict=True)
                    if c == cls]  # fmt: skip
            assert ious and max(ious) >= 0.7, (path.name, box, reduced.boxes_xyxy)
            checked += 1
    assert checked >= 10


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    inter = np.prod(np.clip(np.minimum(a[2:], b[2:]) - np.maximum(a[:2], b[:2]), 0, None))
    return float(inter / (np.prod(a[2:] - a[:2]) + np.prod(b[2:] - b[:2]) - inter))
