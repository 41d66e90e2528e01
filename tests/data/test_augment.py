"""The augmentation pipeline, colour steps, presets and the targets layout."""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest

from model.data.augment import Augmenter, to_targets
from model.data.augment_config import AUGMENT_PRESETS, AugmentConfig, augment_config_for
from model.data.photometric import augment_hsv, photometric_distortion
from model.letterbox import letterbox

SPECS = [
    ((60, 80), [(5, 5, 30, 40, 0), (50, 20, 75, 55, 1)]),
    ((90, 45), [(5, 10, 40, 50, 2)]),
    ((50, 50), []),
    ((64, 100), [(60, 20, 95, 60, 3), (5, 5, 35, 25, 0)]),
    ((70, 70), [(10, 40, 60, 65, 1)]),
]


@pytest.mark.parametrize("preset", ["default", "pai"])
def test_pipeline_boxes_cover_their_pixels(rects, preset: str) -> None:
    """Mosaic + affine + flip + letterbox end to end: every box lies on its colour, every colour under a box."""
    cfg = dataclasses.replace(AUGMENT_PRESETS[preset], mixup_prob=0.0, photometric_prob=0.0, mosaic_scale=(0.5, 1.5))
    augmenter = Augmenter(rects.Source(SPECS), (96, 96), cfg)
    boxes_seen = 0
    for seed in range(80):
        out = augmenter(seed % len(SPECS), np.random.default_rng(seed))
        assert out.image.shape == (96, 96, 3) and out.image.dtype == np.uint8
        assert out.boxes_xyxy.dtype == np.float32 and out.labels.dtype == np.int64
        assert np.all(out.boxes_xyxy >= 0) and np.all(out.boxes_xyxy <= 96)
        for label in range(4):
            mask = rects.mask(out.image, rects.PALETTE[label])
            covered = np.zeros_like(mask)
            for box in out.boxes_xyxy[out.labels == label]:
                x1, y1 = np.floor(box[:2] - 1).clip(0).astype(int)
                x2, y2 = np.ceil(box[2:] + 1).astype(int)
                covered[y1:y2, x1:x2] = True
                if box.min() <= 0 or box.max() >= 96:
                    continue  # a rotated box cut by the border keeps its corners' clipped hull: may be empty
                w, h = box[2] - box[0], box[3] - box[1]
                if min(w, h) < 8 or max(w, h) > 3 * min(w, h):
                    continue  # the hull of a rotated sliver is mostly background, by geometry
                inside = mask[int(box[1]) : int(np.ceil(box[3])), int(box[0]) : int(np.ceil(box[2]))]
                assert inside.mean() > 0.5, f"seed {seed}: box {box} of label {label} is mostly not its colour"
                boxes_seen += 1
            if preset == "default":  # Megvii keeps every box: all of a colour lies under its boxes
                assert mask[~covered].sum() <= 2, f"seed {seed}: label {label} pixels outside its boxes"
    assert boxes_seen > 40


def test_no_aug_mode_is_a_plain_letterbox(rects) -> None:
    cfg = dataclasses.replace(AUGMENT_PRESETS["default"], photometric_prob=0.0, flip_prob=0.0)
    source = rects.Source(SPECS)
    augmenter = Augmenter(source, (64, 96), cfg)
    for index in range(len(SPECS)):
        out = augmenter(index, np.random.default_rng(index), mosaic=False)
        sample = source.load(index)
        canvas, r = letterbox(sample.image, (64, 96))
        np.testing.assert_array_equal(out.image, canvas)
        np.testing.assert_allclose(out.boxes_xyxy, sample.boxes_xyxy * r, rtol=1e-6)
        np.testing.assert_array_equal(out.labels, sample.labels)


def test_no_aug_mode_keeps_colour_and_flip(rects) -> None:
    augmenter = Augmenter(rects.Source(SPECS), (64, 64), AUGMENT_PRESETS["default"])
    plain = letterbox(rects.Source(SPECS).load(0).image, (64, 64))[0]
    outputs = [augmenter(0, np.random.default_rng(seed), mosaic=False) for seed in range(8)]
    assert all(out.image.shape == (64, 64, 3) for out in outputs)
    assert sum(not np.array_equal(out.image, plain) for out in outputs) >= 6
    flipped_x1 = {round(float(out.boxes_xyxy[0, 0]), 3) for out in outputs}
    assert len(flipped_x1) == 2  # the first box sits at one of two mirrored places


@pytest.mark.parametrize("photometric", ["hsv", "easycv"])
def test_photometric_changes_pixels_not_boxes(rects, photometric: str) -> None:
    base = dataclasses.replace(AUGMENT_PRESETS["default"], mosaic_prob=0.0, flip_prob=0.0, photometric=photometric)
    source = rects.Source(SPECS)
    coloured = Augmenter(source, (80, 80), base)
    plain = Augmenter(source, (80, 80), dataclasses.replace(base, photometric_prob=0.0))
    changed = 0
    for seed in range(10):
        a = coloured(seed % len(SPECS), np.random.default_rng(seed))
        b = plain(seed % len(SPECS), np.random.default_rng(seed))
        np.testing.assert_array_equal(a.boxes_xyxy, b.boxes_xyxy)
        np.testing.assert_array_equal(a.labels, b.labels)
        changed += not np.array_equal(a.image, b.image)
    assert changed >= 6


def test_hsv_value_gain_is_additive() -> None:
    image = np.random.default_rng(0).integers(40, 200, (16, 16, 3)).astype(np.uint8)
    v_before = cv2.cvtColor(image, cv2.COLOR_BGR2HSV)[..., 2].astype(int)
    deltas = set()
    for seed in range(12):
        out = augment_hsv(image, np.random.default_rng(seed), gains=(0, 0, 30))
        shift = cv2.cvtColor(out, cv2.COLOR_BGR2HSV)[..., 2].astype(int) - v_before
        assert np.ptp(shift) <= 2  # one brightness offset for the whole image (± rounding)
        deltas.add(int(np.median(shift)))
    assert 0 in deltas and len(deltas) >= 4  # the channel is sometimes off; otherwise offsets vary within ±30
    assert max(abs(d) for d in deltas) <= 31
    np.testing.assert_array_equal(augment_hsv(image, np.random.default_rng(0), gains=(0, 0, 0)), image)


def test_photometric_distortion_output_and_channel_swap() -> None:
    blue = np.zeros((8, 8, 3), np.uint8)
    blue[..., 0] = 200
    dominant = set()
    for seed in range(20):
        out = photometric_distortion(blue, np.random.default_rng(seed), AUGMENT_PRESETS["pai"])
        assert out.dtype == np.uint8 and out.shape == blue.shape
        dominant.add(int(out[0, 0].argmax()))
    assert len(dominant) > 1  # the random channel permutation moved the blue elsewhere at least once


def test_presets_match_the_references() -> None:
    default, nano, tiny, pai = (AUGMENT_PRESETS[k] for k in ("default", "nano", "tiny", "pai"))
    assert (default.mosaic_prob, default.mixup_prob, default.mosaic_scale, default.mixup_scale) == (
        1.0,
        1.0,
        (0.1, 2.0),
        (0.5, 1.5),
    )
    assert (default.rotate_deg, default.translate_frac, default.shear_deg, default.flip_prob) == (10.0, 0.1, 2.0, 0.5)
    assert (default.photometric, default.photometric_prob, default.hsv_gains) == ("hsv", 1.0, (5, 30, 30))
    assert (nano.mosaic_prob, nano.mixup_prob, nano.mosaic_scale) == (0.5, 0.0, (0.5, 1.5))
    assert (tiny.mosaic_prob, tiny.mixup_prob, tiny.mosaic_scale) == (1.0, 0.0, (0.5, 1.5))
    assert (pai.photometric, pai.mosaic_scale, pai.mixup_scale, pai.mixup_prob) == (
        "easycv",
        (0.1, 2.0),
        (0.8, 1.6),
        1.0,
    )
    assert pai.affine_about_center and not pai.mixup_needs_labels
    assert (pai.brightness_delta, pai.contrast_range, pai.saturation_range, pai.hue_delta_deg) == (
        32.0,
        (0.5, 1.5),
        (0.5, 1.5),
        18.0,
    )
    assert augment_config_for("yolox-nano") is nano and augment_config_for("yolox-tiny") is tiny
    assert augment_config_for("yolox-pai-s-asff") is pai and augment_config_for("yolox-s") is default
    assert augment_config_for("yolox-x") is default
    easy_colour_megvii_geometry = dataclasses.replace(default, photometric="easycv")
    assert easy_colour_megvii_geometry.photometric == "easycv" and not easy_colour_megvii_geometry.affine_about_center


@pytest.mark.parametrize(
    "kwargs",
    [
        {"mosaic_prob": 1.5},
        {"flip_prob": -0.1},
        {"mosaic_scale": (2.0, 1.0)},
        {"photometric": "rgb"},
        {"shear_deg": -1},
    ],
)
def test_config_rejects_bad_values(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        AugmentConfig(**kwargs)


def test_to_targets_layout_and_padding() -> None:
    boxes = np.array([[10, 20, 30, 60], [0, 0, 4, 2]], np.float32)
    targets = to_targets(boxes, np.array([3, 1]), max_labels=4)
    assert targets.dtype == np.float32 and targets.shape == (4, 5)
    np.testing.assert_allclose(targets[:2], [[3, 20, 40, 20, 40], [1, 2, 1, 4, 2]])
    assert not targets[2:].any()
    many = np.tile(boxes[:1], (7, 1))
    assert to_targets(many, np.zeros(7, np.int64), max_labels=5).shape == (5, 5)


def test_mixup_only_when_mosaic_has_boxes_for_megvii(rects) -> None:
    """Megvii gates mixup on the mosaic keeping boxes; EasyCV mixes regardless."""
    empty_specs = [((40, 40), [])] * 3 + [((40, 40), [(5, 5, 30, 30, 2)])]
    for preset, expect_mix_on_empty in (("default", False), ("pai", True)):
        cfg = dataclasses.replace(AUGMENT_PRESETS[preset], photometric_prob=0.0, flip_prob=0.0)
        augmenter = Augmenter(rects.Source(empty_specs), (48, 48), cfg)
        mixed_on_empty = False
        for seed in range(40):
            rng = np.random.default_rng(seed)
            mosaic_only = dataclasses.replace(cfg, mixup_prob=0.0)
            reference = Augmenter(rects.Source(empty_specs), (48, 48), mosaic_only).mosaic_affine_mixup(
                0, np.random.default_rng(seed)
            )
            out = augmenter.mosaic_affine_mixup(0, rng)
            if len(reference.labels) == 0 and len(out.labels) > 0:
                mixed_on_empty = True
        assert mixed_on_empty == expect_mix_on_empty, preset
