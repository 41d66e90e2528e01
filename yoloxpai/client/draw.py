"""``draw_detections`` for the client's :class:`Detection` objects: an adapter over ``model.drawing``, so the client
and ``yoloxpai predict`` draw with one implementation (one colour per class in both)."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from model.drawing import draw_boxes
from yoloxpai.client.results import Detection


def draw_detections(image: np.ndarray, detections: Iterable[Detection]) -> np.ndarray:
    """Boxes and ``name score`` labels drawn on a copy of ``image`` (uint8 [H, W, 3] BGR)."""
    detections = list(detections)
    return draw_boxes(
        image,
        [d.box_xyxy for d in detections],
        [d.score for d in detections],
        [d.class_id for d in detections],
        [d.class_name for d in detections],
    )
