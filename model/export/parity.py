"""Comparing detections of two backends: same count, boxes and scores within tolerances after matching."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# fp32 on CUDA: cuDNN's convolution algorithms round differently from the CPU's (TF32 off). Measured on an H200
# with the trained default nano: boxes 0.02 px, scores 1.4e-3 (docs/benchmarks.md, GPU check).
CUDA_FP32_SCORE_TOL = 3e-3


@dataclass(frozen=True)
class ParityReport:
    """Worst differences over a set of images."""

    images: int
    count_mismatches: int
    max_box_diff_px: float
    max_score_diff: float
    class_mismatches: int

    def ok(self, box_tol_px: float = 0.1, score_tol: float = 1e-3) -> bool:
        """The fp32 criteria: same counts and classes, boxes within 0.1 px, scores within 1e-3."""
        return (
            self.count_mismatches == 0
            and self.class_mismatches == 0
            and self.max_box_diff_px <= box_tol_px
            and self.max_score_diff <= score_tol
        )


def compare_detections(reference: list, candidate: list) -> ParityReport:
    """Match each reference detection to the candidate one of the same class with the closest box."""
    count_mismatches = class_mismatches = 0
    box_diff = score_diff = 0.0
    for ref, cand in zip(reference, candidate, strict=True):
        if len(ref) != len(cand):
            count_mismatches += 1
        used = np.zeros(len(cand), bool)
        for box, score, cls in zip(ref.boxes_xyxy, ref.scores, ref.class_ids, strict=True):
            options = np.nonzero((cand.class_ids == cls) & ~used)[0]
            if options.size == 0:
                class_mismatches += 1
                continue
            diffs = np.abs(cand.boxes_xyxy[options] - box).max(axis=1)
            best = options[int(diffs.argmin())]
            used[best] = True
            box_diff = max(box_diff, float(diffs.min()))
            score_diff = max(score_diff, float(abs(cand.scores[best] - score)))
    return ParityReport(len(reference), count_mismatches, box_diff, score_diff, class_mismatches)


def parity_images(seed: int = 0) -> list[np.ndarray]:
    """Three BGR test images of different sizes and aspect ratios with simple high-contrast shapes."""
    import cv2

    rng = np.random.default_rng(seed)
    images = []
    for h, w in ((480, 640), (720, 400), (300, 300)):
        image = (rng.integers(0, 60, (h, w, 3)) + 90).astype(np.uint8)
        for _ in range(6):
            colour = tuple(int(c) for c in rng.integers(0, 256, 3))
            x, y = int(rng.integers(0, w - 40)), int(rng.integers(0, h - 40))
            s = int(rng.integers(20, min(h, w) // 3))
            if rng.random() < 0.5:
                cv2.rectangle(image, (x, y), (min(x + s, w - 1), min(y + s, h - 1)), colour, -1)
            else:
                cv2.circle(image, (x + s // 2, y + s // 2), s // 2, colour, -1)
        images.append(image)
    return images
