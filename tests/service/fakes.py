"""A fake of the bundle runtime (``model.predictor.Predictor``) for unit tests of the batcher and the engine.

Used only to test the service layers against a fake of the layer below; every server-level test runs a real
bundle (the ``tiny_bundle`` fixture). The fake follows the contract in ``docs/contracts.md``: ``preprocess``
returns ``(float32 [3, H, W], r)``, ``infer`` returns a batch-major ``RawOutput``, ``postprocess`` maps one image.
Each image's top-left blue value is a *marker* carried through the tensor: it becomes the detection's score
(marker / 255) and class (marker % num_classes), so tests can tell which output belongs to which input.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np


@dataclass(frozen=True)
class FakeThresholds:
    score_threshold: float = 0.01
    default_score_threshold: float = 0.25
    max_detections: int = 4


@dataclass(frozen=True)
class FakeMeta:
    name: str = "fake"
    class_names: tuple[str, ...] = ("cat", "dog", "bird")
    input_hw: tuple[int, int] = (32, 32)
    max_batch: int = 8
    thresholds: FakeThresholds = field(default_factory=FakeThresholds)
    version: str = "1"


class FakeRaw(NamedTuple):
    num_dets: np.ndarray  # int32 [B]
    boxes: np.ndarray  # float32 [B, K, 4]
    scores: np.ndarray  # float32 [B, K]
    classes: np.ndarray  # int32 [B, K]


@dataclass(frozen=True)
class FakeDetections:
    boxes_xyxy: np.ndarray
    scores: np.ndarray
    class_ids: np.ndarray
    class_names: tuple[str, ...]
    image_hw: tuple[int, int]


@dataclass
class FakePredictor:
    """Records batch sizes; ``infer_delay_s`` simulates compute; a batch holding ``fail_marker`` raises."""

    meta: FakeMeta = field(default_factory=FakeMeta)
    infer_delay_s: float = 0.0
    fail_marker: int | None = None
    backend: str = "fake"
    device: str = "cpu"
    batch_sizes: list[int] = field(default_factory=list)
    warmed: list[int] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _running: bool = False

    def resolve_options(self, score_threshold: float | None, max_detections: int | None) -> tuple[float, int]:
        t = self.meta.thresholds
        score = t.default_score_threshold if score_threshold is None else score_threshold
        k = t.max_detections if max_detections is None else max_detections
        if t.score_threshold <= score <= 1.0 and 1 <= k <= t.max_detections:
            return score, k
        raise ValueError(f"options outside [{t.score_threshold}, 1] x [1, {t.max_detections}]: {score}, {k}")

    def preprocess(self, image: np.ndarray, channel_order: str = "bgr") -> tuple[np.ndarray, float]:
        h_in, w_in = self.meta.input_hw
        tensor = np.zeros((3, h_in, w_in), np.float32)
        tensor[0, 0, 0] = float(image[0, 0, 0])
        return tensor, min(h_in / image.shape[0], w_in / image.shape[1])

    def infer(self, batch: np.ndarray) -> FakeRaw:
        assert batch.ndim == 4 and 1 <= len(batch) <= self.meta.max_batch, batch.shape
        with self._lock:
            assert not self._running, "one session used by two threads at once"
            self._running = True
            self.batch_sizes.append(len(batch))
        try:
            if self.infer_delay_s:
                time.sleep(self.infer_delay_s)
        finally:
            self._running = False
        markers = batch[:, 0, 0, 0].astype(np.int32)
        if self.fail_marker is not None and (markers == self.fail_marker).any():
            raise RuntimeError("backend exploded")
        b, k = len(batch), self.meta.thresholds.max_detections
        h_in, w_in = self.meta.input_hw
        boxes = np.zeros((b, k, 4), np.float32)
        boxes[:, 0] = (0.0, 0.0, w_in / 2, h_in / 2)
        scores = np.zeros((b, k), np.float32)
        scores[:, 0] = markers / 255.0
        classes = np.zeros((b, k), np.int32)
        classes[:, 0] = markers % len(self.meta.class_names)
        return FakeRaw(np.ones(b, np.int32), boxes, scores, classes)

    def postprocess(self, raw, index, r, image_hw, score_threshold=None, max_detections=None, class_ids=None):
        if score_threshold is not None and score_threshold < self.meta.thresholds.score_threshold:
            raise ValueError("score_threshold below the bundle minimum")
        threshold = self.meta.thresholds.default_score_threshold if score_threshold is None else score_threshold
        n = int(raw.num_dets[index])
        boxes = raw.boxes[index, :n] / r
        boxes[:, 0::2] = boxes[:, 0::2].clip(0, image_hw[1])
        boxes[:, 1::2] = boxes[:, 1::2].clip(0, image_hw[0])
        scores, classes = raw.scores[index, :n], raw.classes[index, :n]
        keep = scores >= threshold
        if class_ids is not None:
            keep &= np.isin(classes, class_ids)
        keep_idx = np.flatnonzero(keep)[: max_detections or self.meta.thresholds.max_detections]
        return FakeDetections(
            boxes[keep_idx], scores[keep_idx], classes[keep_idx].astype(np.int32), self.meta.class_names, image_hw
        )

    def warmup(self, batch_sizes) -> None:
        for size in batch_sizes:
            self.warmed.append(size)
            self.infer(np.zeros((size, 3, *self.meta.input_hw), np.float32))
        self.batch_sizes.clear()


def fake_loader(**predictor_kwargs):
    """A ``PredictorLoader`` building FakePredictors; the bundle directory name becomes the model name."""
    created: list[FakePredictor] = []
    sessions: list[tuple[int | None, bool]] = []  # (threads, spin) of each load

    def load(path: Path, backend: str, device: str, threads: int | None, spin: bool = False) -> FakePredictor:
        predictor = FakePredictor(meta=FakeMeta(name=Path(path).name), device=device, **predictor_kwargs)
        created.append(predictor)
        sessions.append((threads, spin))
        return predictor

    load.created = created  # type: ignore[attr-defined]
    load.sessions = sessions  # type: ignore[attr-defined]
    return load


def marker_image(marker: int, hw: tuple[int, int] = (24, 40)) -> np.ndarray:
    """A uint8 [H, W, 3] BGR image whose top-left blue value is ``marker``."""
    image = np.full((*hw, 3), 90, np.uint8)
    image[0, 0, 0] = marker
    return image
