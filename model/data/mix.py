"""Multi-image augmentations: 4-image mosaic and two-image mixup (Megvii YOLOX / EasyCV semantics).

The caller chooses which samples take part; these functions only combine them. All randomness comes from the
caller's ``np.random.Generator``. Numpy/OpenCV only.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from model.data.augment_config import AugmentConfig
from model.data.coco import Sample
from model.data.geometry import PAD_VALUE, box_filter_mask, resize_keep_ratio
from model.letterbox import letterbox


def _concat(boxes: Sequence[np.ndarray], labels: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    return (
        np.concatenate([b.reshape(-1, 4) for b in boxes]).astype(np.float32),
        np.concatenate(labels).astype(np.int64),
    )


def mosaic(
    samples: Sequence[Sample], input_hw: tuple[int, int], cfg: AugmentConfig, rng: np.random.Generator
) -> Sample:
    """Tile 4 samples around a random centre of a 2H x 2W canvas filled with 114.

    Each image is first resized by ``min(H/h, W/w)``. Sample 0 ends at the centre from the top-left, 1 from the
    top-right, 2 from the bottom-left, 3 from the bottom-right; parts beyond the canvas are cut and boxes are
    clipped to the canvas. The result is twice the input size: ``random_affine`` brings it back.
    """
    if len(samples) != 4:
        raise ValueError(f"mosaic needs 4 samples, got {len(samples)}")
    in_h, in_w = input_hw
    canvas_h, canvas_w = 2 * in_h, 2 * in_w
    canvas = np.full((canvas_h, canvas_w, 3), PAD_VALUE, np.uint8)
    centre_x = int(rng.uniform(*cfg.mosaic_center_ratio) * in_w)
    centre_y = int(rng.uniform(*cfg.mosaic_center_ratio) * in_h)
    all_boxes, all_labels = [], []
    for quadrant, sample in enumerate(samples):
        image, r = resize_keep_ratio(sample.image, input_hw)
        h, w = image.shape[:2]
        # Where the image's top-left corner lands on the canvas (may be negative: that part is cut).
        origin_x = centre_x - w if quadrant in (0, 2) else centre_x
        origin_y = centre_y - h if quadrant in (0, 1) else centre_y
        x1, y1 = max(origin_x, 0), max(origin_y, 0)
        x2, y2 = min(origin_x + w, canvas_w), min(origin_y + h, canvas_h)
        canvas[y1:y2, x1:x2] = image[y1 - origin_y : y2 - origin_y, x1 - origin_x : x2 - origin_x]
        boxes = sample.boxes_xyxy * np.float32(r)
        boxes[:, 0::2] += origin_x
        boxes[:, 1::2] += origin_y
        all_boxes.append(boxes)
        all_labels.append(sample.labels)
    boxes, labels = _concat(all_boxes, all_labels)
    boxes[:, 0::2] = boxes[:, 0::2].clip(0, canvas_w)
    boxes[:, 1::2] = boxes[:, 1::2].clip(0, canvas_h)
    return Sample(canvas, boxes, labels)


def mixup(
    target: Sample, source: Sample, input_hw: tuple[int, int], cfg: AugmentConfig, rng: np.random.Generator
) -> Sample:
    """Blend ``source`` into ``target`` 0.5/0.5 and append its boxes.

    ``source`` is letterboxed to ``input_hw`` (top-left, pad 114), rescaled by U(``cfg.mixup_scale``), flipped
    left-right with p=0.5, placed top-left on a zero canvas at least as large as ``target`` (both references pad
    with 0 here) and randomly cropped to ``target``'s size. With ``cfg.mixup_box_filter`` set, the mixed-in boxes
    must pass it and nothing is mixed when none does.
    """
    jitter = float(rng.uniform(*cfg.mixup_scale))
    flip = rng.uniform() > 0.5
    canvas, r = letterbox(source.image, input_hw, PAD_VALUE)
    canvas = cv2.resize(canvas, (int(input_hw[1] * jitter), int(input_hw[0] * jitter)), interpolation=cv2.INTER_LINEAR)
    r *= jitter
    if flip:
        canvas = canvas[:, ::-1]
    src_h, src_w = canvas.shape[:2]
    tgt_h, tgt_w = target.image.shape[:2]
    padded = np.zeros((max(src_h, tgt_h), max(src_w, tgt_w), 3), np.uint8)
    padded[:src_h, :src_w] = canvas
    y_off = int(rng.integers(0, padded.shape[0] - tgt_h)) if padded.shape[0] > tgt_h else 0
    x_off = int(rng.integers(0, padded.shape[1] - tgt_w)) if padded.shape[1] > tgt_w else 0
    crop = padded[y_off : y_off + tgt_h, x_off : x_off + tgt_w]

    scaled = source.boxes_xyxy * np.float32(r)
    scaled[:, 0::2] = scaled[:, 0::2].clip(0, src_w)
    scaled[:, 1::2] = scaled[:, 1::2].clip(0, src_h)
    if flip:
        scaled[:, [0, 2]] = src_w - scaled[:, [2, 0]]
    moved = scaled.copy()
    moved[:, 0::2] = (moved[:, 0::2] - x_off).clip(0, tgt_w)
    moved[:, 1::2] = (moved[:, 1::2] - y_off).clip(0, tgt_h)
    labels = source.labels
    if cfg.mixup_box_filter is not None:
        keep = box_filter_mask(scaled, moved, cfg.mixup_box_filter)
        if not keep.any():
            return target
        moved, labels = moved[keep], labels[keep]
    blended = cv2.addWeighted(target.image, 0.5, np.ascontiguousarray(crop), 0.5, 0.0)
    boxes, all_labels = _concat([target.boxes_xyxy, moved], [target.labels, labels])
    return Sample(blended, boxes, all_labels)
