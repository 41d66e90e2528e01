"""Drawing detections on images (OpenCV), shared by ``yoloxpai predict`` and the client."""

from __future__ import annotations

import cv2
import numpy as np


def class_colour(class_id: int) -> tuple[int, int, int]:
    """A stable, distinct BGR colour per class id."""
    hue = (class_id * 47) % 180
    hsv = np.uint8([[[hue, 200, 255]]])
    b, g, r = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0]
    return int(b), int(g), int(r)


def draw_boxes(image: np.ndarray, boxes_xyxy, scores, class_ids, class_names) -> np.ndarray:
    """Return a copy of a BGR image with labelled boxes."""
    out = image.copy()
    thickness = max(1, round(min(out.shape[:2]) / 300))
    for box, score, cls, name in zip(boxes_xyxy, scores, class_ids, class_names, strict=True):
        x1, y1, x2, y2 = (int(round(float(v))) for v in box)
        colour = class_colour(int(cls))
        cv2.rectangle(out, (x1, y1), (x2, y2), colour, thickness)
        label = f"{name} {float(score):.2f}"
        (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, 0.5, 1)
        top = max(y1 - th - base, 0)
        cv2.rectangle(out, (x1, top), (x1 + tw, top + th + base), colour, -1)
        cv2.putText(out, label, (x1, top + th), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    return out


def draw_detections(image: np.ndarray, detections) -> np.ndarray:
    """Draw a ``model.predictor.Detections``."""
    return draw_boxes(image, detections.boxes_xyxy, detections.scores, detections.class_ids, detections.class_names)
