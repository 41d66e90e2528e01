"""Letterbox geometry in NumPy/OpenCV (torch-free): the serving and prediction path.

Same semantics as :class:`model.transforms.Preprocess` (the TorchScript artifact) and Megvii's ``preproc``:
scale ``r = min(H_in/h, W_in/w)`` (small images are upscaled), new size ``floor(side * r)``, OpenCV bilinear,
top-left placement on a canvas filled with the pad value; boxes map back with ``box / r``.
"""

from __future__ import annotations

import cv2
import numpy as np

from model.config import InputConvention


def letterbox_scale(image_hw: tuple[int, int], input_hw: tuple[int, int]) -> float:
    """The resize ratio ``r`` that fits ``image_hw`` into ``input_hw`` keeping the aspect ratio."""
    return min(input_hw[0] / image_hw[0], input_hw[1] / image_hw[1])


def resized_hw(image_hw: tuple[int, int], r: float) -> tuple[int, int]:
    """Size after resizing by ``r`` (floor, at least one pixel)."""
    return max(int(image_hw[0] * r), 1), max(int(image_hw[1] * r), 1)


def letterbox(image: np.ndarray, input_hw: tuple[int, int], pad_value: float = 114.0) -> tuple[np.ndarray, float]:
    """Resize ``image`` (uint8 [H, W, 3]) into a top-left letterboxed canvas; return ``(canvas, r)``."""
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an image of shape [H, W, 3], got {list(image.shape)}")
    r = letterbox_scale(image.shape[:2], input_hw)
    new_h, new_w = resized_hw(image.shape[:2], r)
    canvas = np.full((input_hw[0], input_hw[1], 3), pad_value, dtype=np.uint8)
    if (new_h, new_w) == image.shape[:2]:
        canvas[:new_h, :new_w] = image
    else:
        canvas[:new_h, :new_w] = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    return canvas, r


def to_network_input(canvas: np.ndarray, channel_order: str, convention: InputConvention) -> np.ndarray:
    """uint8 [H, W, 3] in ``channel_order`` -> float32 [3, H, W] in the convention's order and scale."""
    if channel_order not in ("bgr", "rgb"):
        raise ValueError(f"channel_order must be 'bgr' or 'rgb', got {channel_order!r}")
    chw = canvas.transpose(2, 0, 1)
    if channel_order != convention.channel_order:
        chw = chw[::-1]
    out = chw.astype(np.float32)
    if convention.mean != (0.0, 0.0, 0.0) or convention.std != (1.0, 1.0, 1.0):
        mean = np.asarray(convention.mean, dtype=np.float32).reshape(3, 1, 1)
        std = np.asarray(convention.std, dtype=np.float32).reshape(3, 1, 1)
        out = (out - mean) / std
    return np.ascontiguousarray(out)


def preprocess_image(
    image: np.ndarray, input_hw: tuple[int, int], convention: InputConvention, channel_order: str = "bgr"
) -> tuple[np.ndarray, float]:
    """uint8 [H, W, 3] -> (float32 [3, H_in, W_in] network input, r)."""
    canvas, r = letterbox(image, input_hw, convention.pad_value)
    return to_network_input(canvas, channel_order, convention), r


def boxes_to_original(boxes_xyxy: np.ndarray, r: float, image_hw: tuple[int, int]) -> np.ndarray:
    """Map letterboxed-input boxes [K, 4] back to original pixels (``/ r``) and clip to the image."""
    out = boxes_xyxy.astype(np.float32) / np.float32(r)
    out[:, 0::2] = out[:, 0::2].clip(0.0, image_hw[1])
    out[:, 1::2] = out[:, 1::2].clip(0.0, image_hw[0])
    return out
