"""Drawing detections on an image (OpenCV)."""

from __future__ import annotations

import colorsys
from collections.abc import Iterable

import cv2
import numpy as np

from service.client.results import Detection


def class_color(class_id: int) -> tuple[int, int, int]:
    """A stable, well-separated BGR colour per class id (golden-angle hues)."""
    r, g, b = colorsys.hsv_to_rgb((class_id * 0.618033988749895) % 1.0, 0.85, 0.95)
    return int(b * 255), int(g * 255), int(r * 255)


def draw_detections(image: np.ndarray, detections: Iterable[Detection], thickness: int = 2) -> np.ndarray:
    """Boxes and ``name score`` labels drawn on a copy of ``image`` (uint8 [H, W, 3] BGR)."""
    out = image.copy()
    for det in detections:
        x1, y1, x2, y2 = (int(round(v)) for v in det.box_xyxy)
        color = class_color(det.class_id)
        cv2.rectangle(out, (x1, y1), (x2, y2), color, thickness)
        label = f"{det.class_name} {det.score:.2f}"
        (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, 0.5, 1)
        top = max(y1 - th - base - 2, 0)
        cv2.rectangle(out, (x1, top), (x1 + tw + 2, top + th + base + 2), color, -1)
        cv2.putText(out, label, (x1 + 1, top + th + 1), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    return out
