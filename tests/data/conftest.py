"""Shared fixtures of the data tests: one small shapes dataset per session and a fake in-memory sample source."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from model.data.coco import Sample
from model.data.shapes import make_shapes_dataset


@pytest.fixture(scope="session")
def shapes_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 24 + 8 image shapes dataset at 128 px (seed 7)."""
    return make_shapes_dataset(tmp_path_factory.mktemp("shapes"), train=24, val=8, img_size=128, seed=7)


# Label k is painted in PALETTE[k]: colours far apart in every channel so interpolation cannot fake one.
PALETTE = np.array([(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)], np.uint8)  # BGR


class RectSource:
    """In-memory ``SampleSource``: flat-grey images with filled rectangles painted in ``PALETTE[label]``."""

    def __init__(self, specs: list[tuple[tuple[int, int], list[tuple[int, int, int, int, int]]]]) -> None:
        self.samples = []
        for (h, w), rects in specs:
            image = np.full((h, w, 3), 60, np.uint8)
            boxes, labels = [], []
            for x1, y1, x2, y2, label in rects:
                image[y1:y2, x1:x2] = PALETTE[label]
                boxes.append((x1, y1, x2, y2))
                labels.append(label)
            self.samples.append(
                Sample(image, np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(labels, np.int64))
            )

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, index: int) -> Sample:
        s = self.samples[index]
        return Sample(s.image.copy(), s.boxes_xyxy.copy(), s.labels.copy())

    def num_boxes(self, index: int) -> int:
        return len(self.samples[index].labels)


def colour_mask(image: np.ndarray, colour: np.ndarray, tol: int = 40) -> np.ndarray:
    """bool [H, W]: pixels within ``tol`` of ``colour`` in every channel."""
    return np.all(np.abs(image.astype(np.int16) - colour.astype(np.int16)) <= tol, axis=2)


def mask_extent(mask: np.ndarray) -> np.ndarray | None:
    """(x1, y1, x2, y2) pixel-edge extent of a mask, or None when empty."""
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return None
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)


@pytest.fixture
def rects() -> SimpleNamespace:
    """The rectangle toolkit (``Source``, ``PALETTE``, ``mask``, ``extent``) without importing conftest."""
    return SimpleNamespace(Source=RectSource, PALETTE=PALETTE, mask=colour_mask, extent=mask_extent)
