"""Geometric augmentations of one sample (image + boxes_xyxy + labels): random affine, flip, resize, box filters.

Boxes always move with their pixels: a box is transformed through its four corners and replaced by the
axis-aligned hull, clipped to the output. All randomness comes from the caller's ``np.random.Generator``.
Numpy/OpenCV only.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from model.data.augment_config import AugmentConfig, BoxFilter
from model.data.coco import Sample
from model.letterbox import letterbox_scale, resized_hw

PAD_VALUE = 114


def resize_keep_ratio(image: np.ndarray, input_hw: tuple[int, int]) -> tuple[np.ndarray, float]:
    """Resize to fit ``input_hw`` keeping the aspect ratio (no padding); same size rule as ``letterbox``."""
    r = letterbox_scale(image.shape[:2], input_hw)
    new_h, new_w = resized_hw(image.shape[:2], r)
    if (new_h, new_w) == image.shape[:2]:
        return image, r
    return cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR), r


def hflip(sample: Sample) -> Sample:
    """Mirror the image left-right and the boxes with it (x -> W - x)."""
    width = sample.image.shape[1]
    boxes = sample.boxes_xyxy.copy()
    boxes[:, 0] = width - sample.boxes_xyxy[:, 2]
    boxes[:, 2] = width - sample.boxes_xyxy[:, 0]
    return Sample(np.ascontiguousarray(sample.image[:, ::-1]), boxes, sample.labels)


def box_filter_mask(before_xyxy: np.ndarray, after_xyxy: np.ndarray, rule: BoxFilter) -> np.ndarray:
    """bool [n]: which transformed boxes pass ``rule`` (``before`` is the box scaled but not clipped)."""
    w0, h0 = before_xyxy[:, 2] - before_xyxy[:, 0], before_xyxy[:, 3] - before_xyxy[:, 1]
    w1, h1 = after_xyxy[:, 2] - after_xyxy[:, 0], after_xyxy[:, 3] - after_xyxy[:, 1]
    eps = 1e-16  # the references' guard: a zero-size box fails the tests instead of dividing by zero
    aspect = np.maximum(w1 / (h1 + eps), h1 / (w1 + eps))
    return (
        (w1 > rule.min_side_px)
        & (h1 > rule.min_side_px)
        & (w1 * h1 / (w0 * h0 + eps) > rule.min_area_ratio)
        & (aspect < rule.max_aspect_ratio)
    )


def keep_boxes(sample: Sample, keep: np.ndarray) -> Sample:
    """The sample with only the boxes (and labels) where ``keep`` is true."""
    return Sample(sample.image, sample.boxes_xyxy[keep], sample.labels[keep])


def min_side_mask(boxes_xyxy: np.ndarray, min_side_px: float) -> np.ndarray:
    """bool [n]: boxes whose shorter side is strictly longer than ``min_side_px``."""
    sides = np.minimum(boxes_xyxy[:, 2] - boxes_xyxy[:, 0], boxes_xyxy[:, 3] - boxes_xyxy[:, 1])
    return sides > min_side_px


def transform_boxes(boxes_xyxy: np.ndarray, matrix: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
    """Map boxes [n, 4] through the 3x3 affine ``matrix``: hull of the four corners, clipped to ``out_hw``."""
    n = len(boxes_xyxy)
    corners = np.ones((n, 4, 3), np.float64)
    corners[:, :, 0] = boxes_xyxy[:, [0, 2, 2, 0]]
    corners[:, :, 1] = boxes_xyxy[:, [1, 1, 3, 3]]
    moved = corners @ matrix[:2].T  # [n, 4, 2]
    out = np.concatenate([moved.min(axis=1), moved.max(axis=1)], axis=1)
    out[:, 0::2] = out[:, 0::2].clip(0, out_hw[1])
    out[:, 1::2] = out[:, 1::2].clip(0, out_hw[0])
    return out.astype(np.float32)


def random_affine_matrix(
    rng: np.random.Generator, in_hw: tuple[int, int], out_hw: tuple[int, int], cfg: AugmentConfig
) -> tuple[np.ndarray, float]:
    """Draw (3x3 matrix, scale) = translate @ shear @ rotate·scale [@ centre shift]; no perspective term."""
    angle = math.radians(rng.uniform(-cfg.rotate_deg, cfg.rotate_deg))
    scale = float(rng.uniform(*cfg.mosaic_scale))
    shear_x = math.tan(math.radians(rng.uniform(-cfg.shear_deg, cfg.shear_deg)))
    shear_y = math.tan(math.radians(rng.uniform(-cfg.shear_deg, cfg.shear_deg)))
    shift_x = rng.uniform(-cfg.translate_frac, cfg.translate_frac) * out_hw[1]
    shift_y = rng.uniform(-cfg.translate_frac, cfg.translate_frac) * out_hw[0]
    cos, sin = math.cos(angle) * scale, math.sin(angle) * scale
    rotate_scale = np.array([[cos, -sin, 0.0], [sin, cos, 0.0], [0.0, 0.0, 1.0]])
    shear = np.array([[1.0, shear_x, 0.0], [shear_y, 1.0, 0.0], [0.0, 0.0, 1.0]])
    centre_in = np.eye(3)
    translate = np.eye(3)
    translate[:2, 2] = (shift_x, shift_y)
    if cfg.affine_about_center:
        # EasyCV: pivot on the canvas centre and put it at the output centre (± the translation).
        centre_in[:2, 2] = (-in_hw[1] / 2, -in_hw[0] / 2)
        translate[:2, 2] += (out_hw[1] / 2, out_hw[0] / 2)
    return translate @ shear @ rotate_scale @ centre_in, scale


def random_affine(sample: Sample, out_hw: tuple[int, int], cfg: AugmentConfig, rng: np.random.Generator) -> Sample:
    """Warp the sample into an ``out_hw`` image (border 114) with a random affine from ``cfg``."""
    matrix, scale = random_affine_matrix(rng, sample.image.shape[:2], out_hw, cfg)
    image = cv2.warpAffine(
        sample.image,
        matrix[:2],
        (out_hw[1], out_hw[0]),
        flags=cv2.INTER_LINEAR,
        borderValue=(PAD_VALUE, PAD_VALUE, PAD_VALUE),
    )
    boxes = transform_boxes(sample.boxes_xyxy, matrix, out_hw)
    out = Sample(image, boxes, sample.labels)
    if cfg.affine_box_filter is not None and len(boxes):
        out = keep_boxes(out, box_filter_mask(sample.boxes_xyxy * scale, boxes, cfg.affine_box_filter))
    return out
