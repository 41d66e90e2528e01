"""Backend runners: each loads one model artifact and maps ``float32 [B, 3, H, W]`` to ``RawOutput``.

Chosen once, at load time (``select_backend``); each imports its runtime lazily so a serving image carries only
what it uses. One runner instance per worker thread: sessions / infer requests are not shared across threads.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol

import numpy as np


class RawOutput(NamedTuple):
    """The bundle output contract, batch-major NumPy arrays."""

    num_dets: np.ndarray  # int32 [B]
    boxes: np.ndarray  # float32 [B, K, 4] xyxy, letterboxed-input pixels
    scores: np.ndarray  # float32 [B, K]
    classes: np.ndarray  # int32 [B, K]


class Runner(Protocol):
    """What every backend runner provides."""

    backend: str
    device: str
    precision: str

    def run(self, batch: np.ndarray) -> RawOutput:
        """Run one batch (1 <= B <= max batch)."""
        ...


def as_raw_output(outputs: list[np.ndarray] | tuple[np.ndarray, ...]) -> RawOutput:
    """Normalise dtypes/shapes of the four outputs (some runtimes return int64 or [B, 1] counts)."""
    num, boxes, scores, classes = outputs
    return RawOutput(
        num_dets=np.asarray(num).reshape(-1).astype(np.int32, copy=False),
        boxes=np.asarray(boxes, dtype=np.float32),
        scores=np.asarray(scores, dtype=np.float32),
        classes=np.asarray(classes).astype(np.int32, copy=False),
    )
