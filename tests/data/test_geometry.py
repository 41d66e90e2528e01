"""Geometric augmentations move boxes with the pixels: flip, random affine, mosaic and mixup round trips.

Each test paints rectangles in unique colours, augments, then finds the colours again in the output and checks
that the boxes cover exactly those pixels (within interpolation tolerance).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from model.data.augment_config import AUGMENT_PRESETS, BoxFilter
from model.data.coco import Sample
from model.data.geometry import box_filter_mask, hflip, random_affine
from model.data.mix import mixup, mosaic

TOL_PX = 2.0  # linear interpolation blurs an edge by about a pixel on each side


def _assert_box_matches_pixels(
    box: np.ndarray, extent: np.ndarray | None, out_hw: tuple[int, int] | None = None
) -> None:
    """The box covers the pixels of its colour; it is tight unless clipped at the ``out_hw`` border.

    A rotated box cut by the border keeps the clipped hull of its corners (both references do), which can
    reach beyond the visible part, even to a corner of the output the rectangle itself misses: only
    containment holds there.
    """
    clipped = out_hw is not None and (box[0] <= 0 or box[1] <= 0 or box[2] >= out_hw[1] or box[3] >= out_hw[0])
    if extent is None:
        assert clipped, f"box {box} has no pixels of its colour"
        return
    message = f"box {box} vs pixels {extent}"
    assert np.all(box[:2] <= extent[:2] + TOL_PX) and np.all(box[2:] >= extent[2:] - TOL_PX), message
    if not clipped:
        np.testing.assert_allclose(box, extent, atol=TOL_PX, err_msg=message)


def test_hflip_mirrors_boxes_with_pixels(rects) -> None:
    source = rects.Source([((40, 60), [(5, 10, 20, 30, 0), (50, 0, 60, 8, 1)])])
    out = hflip(source.load(0))
    for box, label in zip(out.boxes_xyxy, out.labels, strict=True):
        np.testing.assert_array_equal(box, rects.extent(rects.mask(out.image, rects.PALETTE[label])))
    np.testing.assert_array_equal(out.boxes_xyxy[0], [40, 10, 55, 30])


@pytest.mark.parametrize("preset", ["default", "pai"])
def test_random_affine_boxes_follow_pixels(rects, preset: str) -> None:
    cfg = dataclasses.replace(AUGMENT_PRESETS[preset], mosaic_scale=(0.5, 1.5))
    source = rects.Source([((200, 240), [(30, 40, 90, 80, 0), (130, 100, 200, 190, 1), (60, 140, 75, 150, 2)])])
    checked = 0
    for seed in range(25):
        out = random_affine(source.load(0), (160, 160), cfg, np.random.default_rng(seed))
        assert out.image.shape == (160, 160, 3)
        for box, label in zip(out.boxes_xyxy, out.labels, strict=True):
            if min(box[2] - box[0], box[3] - box[1]) <= 2 * TOL_PX:
                continue  # (Megvii) a box pushed out of view collapses to the border; nothing to see
            _assert_box_matches_pixels(box, rects.extent(rects.mask(out.image, rects.PALETTE[label])), (160, 160))
            checked += 1
        if preset == "default":  # Megvii keeps every box: no visible rectangle may lose its box
            for label in range(3):
                if rects.mask(out.image, rects.PALETTE[label]).sum() > 20:
                    assert label in out.labels
    assert checked > 40


def test_random_affine_rotates_about_the_right_pivot() -> None:
    image = np.zeros((100, 100, 3), np.uint8)
    still = dataclasses.replace(AUGMENT_PRESETS["default"], mosaic_scale=(0.5, 0.5), rotate_deg=0, shear_deg=0)
    sample = Sample(image, np.array([[0, 0, 100, 100]], np.float32), np.array([0]))
    rng = np.random.default_rng(0)
    corner = random_affine(sample, (100, 100), dataclasses.replace(still, translate_frac=0), rng)
    np.testing.assert_allclose(corner.boxes_xyxy, [[0, 0, 50, 50]])  # Megvii: scaled towards the top-left
    centred = random_affine(
        sample, (100, 100), dataclasses.replace(still, translate_frac=0, affine_about_center=True), rng
    )
    np.testing.assert_allclose(centred.boxes_xyxy, [[25, 25, 75, 75]], atol=1e-4)  # EasyCV: about the centre


def test_box_filter_rules() -> None:
    rule = BoxFilter(min_side_px=2, min_area_ratio=0.2, max_aspect_ratio=20)
    before = np.array([[0, 0, 10, 10]] * 4, np.float32)
    after = np.array([[0, 0, 10, 10], [0, 0, 10, 2], [0, 0, 4, 4], [0, 0, 5, 5]], np.float32)
    # kept / too thin (side 2 is not > 2) / 16% of the area left / 25% left
    assert box_filter_mask(before, after, rule).tolist() == [True, False, False, True]
    sliver = np.array([[0, 0, 100, 4]], np.float32)
    assert not box_filter_mask(sliver, sliver, BoxFilter(2, 0.2, 20)).any()  # aspect 25 >= 20


def test_mosaic_places_images_and_boxes_together(rects) -> None:
    source = rects.Source(
        [
            ((60, 80), [(10, 10, 40, 50, 0)]),
            ((90, 45), [(5, 30, 40, 80, 1)]),
            ((50, 50), [(20, 5, 45, 30, 2)]),
            ((64, 100), [(60, 20, 95, 60, 3)]),
        ]
    )
    cfg = AUGMENT_PRESETS["default"]
    for seed in range(10):
        out = mosaic([source.load(i) for i in range(4)], (64, 64), cfg, np.random.default_rng(seed))
        assert out.image.shape == (128, 128, 3)
        assert out.labels.tolist() == [0, 1, 2, 3]
        for box, label in zip(out.boxes_xyxy, out.labels, strict=True):
            extent = rects.extent(rects.mask(out.image, rects.PALETTE[label]))
            if extent is None:  # cut off by the canvas: the box must have collapsed too
                assert min(box[2] - box[0], box[3] - box[1]) <= TOL_PX
            else:
                _assert_box_matches_pixels(box, extent)


@pytest.mark.parametrize("preset", ["default", "pai"])
def test_mixup_blends_and_adds_boxes_on_their_pixels(rects, preset: str) -> None:
    cfg = AUGMENT_PRESETS[preset]
    target = Sample(np.zeros((64, 64, 3), np.uint8), np.array([[1, 1, 9, 9]], np.float32), np.array([3]))
    source = rects.Source([((50, 70), [(4, 5, 30, 40, 2)])])  # off-centre: a missed flip shows
    mixed_colour = rects.PALETTE[2] // 2  # 0.5 * colour + 0.5 * black target
    added = 0
    for seed in range(20):
        out = mixup(target, source.load(0), (64, 64), cfg, np.random.default_rng(seed))
        np.testing.assert_array_equal(out.boxes_xyxy[0], target.boxes_xyxy[0])  # the target's boxes come first
        mask = rects.mask(out.image, mixed_colour, tol=20)
        if len(out.labels) == 1:
            assert preset == "pai"  # only a box filter can refuse the partner...
            assert out.image.max() == 0  # ...and then nothing is blended in
            continue
        assert out.labels.tolist() == [3, 2]
        box = out.boxes_xyxy[1]
        if min(box[2] - box[0], box[3] - box[1]) > 2 * TOL_PX:
            _assert_box_matches_pixels(box, rects.extent(mask))
            added += 1
    assert added >= 8
