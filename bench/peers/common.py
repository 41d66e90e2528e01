"""What every peer server does around ``session.run``: the work a user's own wrapper would write."""

from __future__ import annotations

import cv2
import numpy as np
import onnxruntime as ort


def session(onnx_path: str) -> ort.InferenceSession:
    """ONNX Runtime with its defaults (every core), as a wrapper would create it."""
    return ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])


def input_hw(sess: ort.InferenceSession) -> tuple[int, int]:
    shape = sess.get_inputs()[0].shape  # [batch, 3, H, W]
    return int(shape[2]), int(shape[3])


def letterbox(jpeg: bytes, hw: tuple[int, int]) -> tuple[np.ndarray, float]:
    """JPEG bytes -> (float32 [3, H, W] BGR 0..255 top-left letterbox padded with 114, scale r)."""
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError("not an image")
    r = min(hw[0] / image.shape[0], hw[1] / image.shape[1])
    new_w, new_h = max(int(image.shape[1] * r), 1), max(int(image.shape[0] * r), 1)
    canvas = np.full((*hw, 3), 114, np.uint8)
    canvas[:new_h, :new_w] = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    return canvas.transpose(2, 0, 1).astype(np.float32), r


def detections(outputs: list[np.ndarray], index: int, r: float, score_threshold: float = 0.3) -> list[dict]:
    """Row ``index`` of the graph's (num_dets, boxes, scores, classes) as JSON-ready dicts in original pixels."""
    num, boxes, scores, classes = outputs
    n = int(np.asarray(num).reshape(-1)[index])
    return [
        {
            "box": (boxes[index, k] / r).round(2).tolist(),
            "score": float(scores[index, k]),
            "class_id": int(classes[index, k]),
        }
        for k in range(n)
        if scores[index, k] >= score_threshold
    ]
