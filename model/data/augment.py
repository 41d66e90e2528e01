"""The training augmentation pipeline: ``Augmenter(source, input_hw, cfg)(index, rng, mosaic=...) -> Sample``.

With mosaic (probability ``cfg.mosaic_prob``): 4-image mosaic -> random affine back to ``input_hw`` -> mixup
(``cfg.mixup_prob``). Then, for every sample (Megvii ``TrainTransform`` / EasyCV's tail of the pipeline):
photometric (``cfg.photometric``, probability ``cfg.photometric_prob``) -> horizontal flip (``cfg.flip_prob``) ->
``model.letterbox.letterbox`` (top-left, pad 114) -> drop boxes with ``min(w, h) <= cfg.min_box_side_px``.
``mosaic=False`` is the no-augmentation phase of the last epochs: no mosaic, affine or mixup; colour and flip stay.

Deliberate differences from the references (documented, not accidental):
- Megvii skips HSV and flip for images without boxes and falls back to the un-augmented image when every box was
  filtered out; here every image gets the same treatment and empty targets are allowed.
- The mixup partner is drawn uniformly among images that have boxes (Megvii loops until it hits one; EasyCV tries 15
  times), which is the same distribution without the retry loop.
- Resizing floors the new size (as ``letterbox`` does); EasyCV's mmcv resize rounds (reference quirk #14).
Numpy/OpenCV only; all randomness comes from the ``np.random.Generator`` passed in.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from model.data.augment_config import AugmentConfig
from model.data.coco import Sample
from model.data.geometry import PAD_VALUE, hflip, min_side_mask, random_affine
from model.data.mix import mixup, mosaic
from model.data.photometric import apply_photometric
from model.letterbox import letterbox


class SampleSource(Protocol):
    """What the augmenter reads from (``CocoDetection`` satisfies it)."""

    def __len__(self) -> int: ...

    def load(self, index: int) -> Sample:
        """Image ``index`` with its boxes and labels."""
        ...

    def num_boxes(self, index: int) -> int:
        """Box count of image ``index`` without decoding it."""
        ...


class Augmenter:
    """Turns dataset index + generator into one augmented ``input_hw`` sample (boxes in input pixels)."""

    def __init__(self, source: SampleSource, input_hw: tuple[int, int], cfg: AugmentConfig) -> None:
        if len(source) == 0:
            raise ValueError("cannot augment an empty dataset")
        self.source = source
        self.input_hw = (int(input_hw[0]), int(input_hw[1]))
        self.cfg = cfg
        # Mixup partners must have boxes; finding them once avoids a retry loop per sample.
        self._indices_with_boxes = np.flatnonzero([source.num_boxes(i) > 0 for i in range(len(source))])

    def __call__(self, index: int, rng: np.random.Generator, *, mosaic: bool = True) -> Sample:
        """Augment sample ``index``; ``mosaic=False`` keeps only colour + flip + letterbox."""
        if mosaic and self.cfg.mosaic_prob > 0 and rng.random() < self.cfg.mosaic_prob:
            sample = self.mosaic_affine_mixup(index, rng)
        else:
            sample = self.source.load(index)
        return self.finish(sample, rng)

    def mosaic_affine_mixup(self, index: int, rng: np.random.Generator) -> Sample:
        """Mosaic of ``index`` and 3 random images, random affine to ``input_hw``, then maybe mixup."""
        partners = rng.integers(0, len(self.source), 3)
        samples = [self.source.load(i) for i in (index, *partners.tolist())]
        sample = random_affine(mosaic(samples, self.input_hw, self.cfg, rng), self.input_hw, self.cfg, rng)
        wants_mixup = (
            self.cfg.mixup_prob > 0
            and len(self._indices_with_boxes) > 0
            and (len(sample.labels) > 0 or not self.cfg.mixup_needs_labels)
        )
        if wants_mixup and rng.random() < self.cfg.mixup_prob:
            partner = int(self._indices_with_boxes[rng.integers(len(self._indices_with_boxes))])
            sample = mixup(sample, self.source.load(partner), self.input_hw, self.cfg, rng)
        return sample

    def finish(self, sample: Sample, rng: np.random.Generator) -> Sample:
        """Photometric -> flip -> letterbox -> min-side box filter (applied to every sample)."""
        if self.cfg.photometric_prob > 0 and rng.random() < self.cfg.photometric_prob:
            sample = Sample(apply_photometric(sample.image, rng, self.cfg), sample.boxes_xyxy, sample.labels)
        if self.cfg.flip_prob > 0 and rng.random() < self.cfg.flip_prob:
            sample = hflip(sample)
        canvas, r = letterbox(sample.image, self.input_hw, PAD_VALUE)
        boxes = sample.boxes_xyxy * np.float32(r)
        keep = min_side_mask(boxes, self.cfg.min_box_side_px)
        return Sample(canvas, boxes[keep], sample.labels[keep])


def to_targets(boxes_xyxy: np.ndarray, labels: np.ndarray, max_labels: int = 120) -> np.ndarray:
    """float32 [max_labels, 5] rows (class, cx, cy, w, h), zero-padded; boxes beyond ``max_labels`` are cut."""
    targets = np.zeros((max_labels, 5), np.float32)
    n = min(len(labels), max_labels)
    boxes = boxes_xyxy[:n]
    targets[:n, 0] = labels[:n]
    targets[:n, 1] = (boxes[:, 0] + boxes[:, 2]) * 0.5
    targets[:n, 2] = (boxes[:, 1] + boxes[:, 3]) * 0.5
    targets[:n, 3] = boxes[:, 2] - boxes[:, 0]
    targets[:n, 4] = boxes[:, 3] - boxes[:, 1]
    return targets
