"""Letterbox geometry round-trips and TorchScript ``Preprocess`` == NumPy/OpenCV path."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model.config import EASYCV, MEGVII
from model.letterbox import boxes_to_original, letterbox, preprocess_image
from model.transforms import Preprocess

INPUT_HW = (320, 320)
# (image h, w), object box (x1, y1, x2, y2) in original pixels
CASES = {
    "portrait": ((900, 400), (100, 300, 300, 700)),
    "landscape": ((360, 1280), (900, 50, 1200, 300)),
    "tiny": ((24, 40), (10, 6, 30, 18)),  # upscaled ~8x
    "huge": ((3000, 4000), (1000, 1200, 2600, 2400)),
    "extreme_aspect": ((30, 2000), (500, 5, 900, 25)),
}


def draw(hw: tuple[int, int], box: tuple[int, int, int, int]) -> np.ndarray:
    image = np.zeros((*hw, 3), np.uint8)
    x1, y1, x2, y2 = box
    image[y1:y2, x1:x2] = (0, 0, 255)  # pure red (BGR)
    return image


@pytest.mark.parametrize("case", list(CASES))
def test_boxes_mapped_back_land_on_the_object(case: str) -> None:
    hw, box = CASES[case]
    canvas, r = letterbox(draw(hw, box), INPUT_HW)
    assert canvas.shape == (*INPUT_HW, 3)
    assert r == pytest.approx(min(INPUT_HW[0] / hw[0], INPUT_HW[1] / hw[1]))
    ys, xs = np.nonzero(canvas[..., 2] > 127)
    found = np.array([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]], np.float32)  # in letterboxed pixels
    back = boxes_to_original(found, r, hw)[0]
    tolerance = 1.5 / r + 1  # one letterboxed pixel of rounding, in original pixels
    assert np.abs(back - np.array(box)).max() <= tolerance, (back, box)
    # Padding is at the bottom/right only and filled with 114.
    new_h, new_w = int(hw[0] * r), int(hw[1] * r)
    if new_w < INPUT_HW[1]:
        assert (canvas[:, new_w:] == 114).all()
    if new_h < INPUT_HW[0]:
        assert (canvas[new_h:, :] == 114).all()


def test_boxes_are_clipped_to_the_image() -> None:
    out = boxes_to_original(np.array([[-5.0, -5.0, 500.0, 500.0]], np.float32), 0.5, (100, 200))
    assert out.tolist() == [[0.0, 0.0, 200.0, 100.0]]


@pytest.mark.parametrize("convention", [MEGVII, EASYCV], ids=["megvii", "easycv"])
@pytest.mark.parametrize("channel_order", ["bgr", "rgb"])
def test_scripted_preprocess_matches_numpy_path(convention, channel_order: str) -> None:
    rng = np.random.default_rng(0)
    module = torch.jit.script(Preprocess(INPUT_HW, convention))
    images = [rng.integers(0, 256, (*hw, 3), dtype=np.uint8) for hw, _ in CASES.values()]
    batch, scales = module([torch.from_numpy(im) for im in images], channel_order)
    assert batch.shape == (len(images), 3, *INPUT_HW)
    std = np.asarray(convention.std, np.float32).reshape(3, 1, 1)
    for i, image in enumerate(images):
        expected, r = preprocess_image(image, INPUT_HW, convention, channel_order)
        assert scales[i].item() == pytest.approx(r, rel=1e-6)
        # OpenCV's fixed-point bilinear rounds differently by at most one intensity level.
        assert (np.abs(batch[i].numpy() - expected) * std).max() <= 1.0 + 1e-3


def test_conventions_order_and_normalise() -> None:
    image = np.zeros((32, 32, 3), np.uint8)
    image[..., 0] = 10  # B
    image[..., 2] = 200  # R
    megvii, _ = preprocess_image(image, (32, 32), MEGVII, "bgr")
    assert megvii[0, 0, 0] == 10 and megvii[2, 0, 0] == 200  # BGR kept, 0..255
    easycv, _ = preprocess_image(image, (32, 32), EASYCV, "bgr")
    assert easycv[0, 0, 0] == pytest.approx((200 - 123.675) / 58.395)  # R first, normalised
    rgb_in, _ = preprocess_image(image[..., ::-1].copy(), (32, 32), EASYCV, "rgb")
    assert np.allclose(rgb_in, easycv)
    with pytest.raises(ValueError, match="channel_order"):
        preprocess_image(image, (32, 32), MEGVII, "bgra")
