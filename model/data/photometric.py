"""Colour augmentations of a uint8 BGR image: Megvii HSV gains and EasyCV's (mmdet) PhotoMetricDistortion.

Neither touches geometry, so boxes pass through unchanged. All randomness comes from the caller's
``np.random.Generator``. Numpy/OpenCV only.
"""

from __future__ import annotations

import cv2
import numpy as np

from model.data.augment_config import AugmentConfig


def augment_hsv(image: np.ndarray, rng: np.random.Generator, gains: tuple[int, int, int] = (5, 30, 30)) -> np.ndarray:
    """Megvii HSV jitter: add U(-g, g) to OpenCV's uint8 H (mod 180), S and V (clipped); each channel 50% on."""
    deltas = rng.uniform(-1.0, 1.0, 3) * np.asarray(gains, np.float64)
    deltas *= rng.integers(0, 2, 3)  # randomly switch each of h, s, v off
    deltas = deltas.astype(np.int16)  # integer steps, truncated toward zero as in the reference
    if not deltas.any():
        return image  # skips a lossy uint8 HSV round trip that would change nothing on purpose
    values = np.arange(256, dtype=np.int16)
    lut_h = ((values + deltas[0]) % 180).astype(np.uint8)
    lut_s = np.clip(values + deltas[1], 0, 255).astype(np.uint8)
    lut_v = np.clip(values + deltas[2], 0, 255).astype(np.uint8)
    hue, sat, val = cv2.split(cv2.cvtColor(image, cv2.COLOR_BGR2HSV))
    hsv = cv2.merge((cv2.LUT(hue, lut_h), cv2.LUT(sat, lut_s), cv2.LUT(val, lut_v)))
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)


def _maybe(rng: np.random.Generator, low: float, high: float) -> float | None:
    """With p=0.5 a value from U(low, high), else ``None`` (mmdet draws the coin, then the value)."""
    return float(rng.uniform(low, high)) if rng.integers(2) else None


def photometric_distortion(image: np.ndarray, rng: np.random.Generator, cfg: AugmentConfig) -> np.ndarray:
    """EasyCV/mmdet PhotoMetricDistortion on float pixels, each step with p=0.5, result clipped to uint8.

    Order: brightness (+U(-d, d)); contrast (×U) either here or at the end (coin); in OpenCV float HSV
    (H in degrees) saturation ×U and hue +U(-hue_delta_deg, hue_delta_deg) wrapped to [0, 360]; back to BGR;
    then a random permutation of the three channels.
    """
    img = image.astype(np.float32)
    brightness = _maybe(rng, -cfg.brightness_delta, cfg.brightness_delta)
    if brightness is not None:
        img += brightness
    contrast_first = bool(rng.integers(2))
    if contrast_first:
        contrast = _maybe(rng, *cfg.contrast_range)
        if contrast is not None:
            img *= contrast
    saturation = _maybe(rng, *cfg.saturation_range)
    hue_shift = _maybe(rng, -cfg.hue_delta_deg, cfg.hue_delta_deg)
    if saturation is not None or hue_shift is not None:
        hsv = cv2.cvtColor(img, cv2.COLOR_BGR2HSV)
        if saturation is not None:
            hsv[..., 1] *= saturation
        if hue_shift is not None:
            hue = hsv[..., 0] + hue_shift
            hue[hue > 360] -= 360
            hue[hue < 0] += 360
            hsv[..., 0] = hue
        img = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)
    if not contrast_first:
        contrast = _maybe(rng, *cfg.contrast_range)
        if contrast is not None:
            img *= contrast
    if rng.integers(2):
        img = img[..., rng.permutation(3)]
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def apply_photometric(image: np.ndarray, rng: np.random.Generator, cfg: AugmentConfig) -> np.ndarray:
    """The colour step ``cfg.photometric`` selects (``hsv`` or ``easycv``), applied unconditionally."""
    if cfg.photometric == "hsv":
        return augment_hsv(image, rng, cfg.hsv_gains)
    return photometric_distortion(image, rng, cfg)
