"""Drawing one synthetic shapes image: background, filled shapes with controlled occlusion, tight boxes.

Objects are rasterised without anti-aliasing into an instance-id map drawn alongside the image, so the box of
an object is exactly the extent of its visible pixels. A new object is placed only if every object already
drawn keeps at least ``MIN_VISIBLE_FRACTION`` of its area visible (and so does the new one inside the image):
objects overlap, but nothing visible is left unlabelled. Numpy/OpenCV only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import cv2
import numpy as np

CLASS_NAMES: tuple[str, ...] = ("circle", "square", "triangle", "star", "hexagon", "cross")
BACKGROUNDS: tuple[str, ...] = ("gradient", "clouds", "stripes", "checker", "flat")
MIN_VISIBLE_FRACTION = 0.5
MIN_VISIBLE_PX = 16
_PLACEMENT_TRIES = 12
_SUBPIXEL_BITS = 4  # fillPoly fixed-point precision: vertices keep 1/16 px


def _regular(n: int, radius: float = 1.0, phase: float = math.pi / 2) -> np.ndarray:
    angles = phase + np.arange(n) * 2 * math.pi / n
    return np.stack([np.cos(angles), -np.sin(angles)], axis=1) * radius


def _star() -> np.ndarray:
    outer, inner = _regular(5), _regular(5, 0.45, math.pi / 2 + math.pi / 5)
    return np.stack([outer, inner], axis=1).reshape(10, 2)


def _cross(half_width: float = 0.34) -> np.ndarray:
    a, b = half_width, 1.0
    return np.array(
        [(-a, -b), (a, -b), (a, -a), (b, -a), (b, a), (a, a), (a, b), (-a, b), (-a, a), (-b, a), (-b, -a), (-a, -a)]
    )


# Unit polygons (extent about [-1, 1]^2), indexed like CLASS_NAMES.
_UNIT_POLYGONS: tuple[np.ndarray, ...] = (
    _regular(48),
    np.array([(-1.0, -1.0), (1.0, -1.0), (1.0, 1.0), (-1.0, 1.0)]),
    _regular(3),
    _star(),
    _regular(6),
    _cross(),
)


class Scene(NamedTuple):
    """One drawn image and its ground truth."""

    image: np.ndarray  # uint8 [H, W, 3] BGR
    id_map: np.ndarray  # int16 [H, W]: 0 background, k = k-th kept object (1-based)
    boxes_xyxy: np.ndarray  # float32 [n, 4]: extent of each object's visible pixels (pixel edges)
    class_ids: np.ndarray  # int64 [n], indices into CLASS_NAMES
    areas_px: np.ndarray  # int64 [n]: visible pixels per object


def _random_colour(rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, 256, 3).astype(np.float32)


def draw_background(rng: np.random.Generator, image_hw: tuple[int, int], style: str) -> np.ndarray:
    """A uint8 [H, W, 3] background: ``gradient``, ``clouds`` (smooth noise), ``stripes``, ``checker`` or ``flat``."""
    h, w = image_hw
    c0, c1 = _random_colour(rng), _random_colour(rng)
    if style == "flat":
        return np.broadcast_to(c0.astype(np.uint8), (h, w, 3)).copy()
    if style == "clouds":
        coarse = rng.integers(0, 256, (int(rng.integers(2, 8)), int(rng.integers(2, 8)), 3)).astype(np.uint8)
        return cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)
    xs = np.arange(w, dtype=np.float32)[None, :]  # broadcast rows/columns instead of two full grids
    ys = np.arange(h, dtype=np.float32)[:, None]
    theta = rng.uniform(0, math.pi)
    along = xs * math.cos(theta) + ys * math.sin(theta)  # [H, W]
    if style == "gradient":
        t = (along - along.min()) / max(float(np.ptp(along)), 1.0)
    elif style == "stripes":
        t = (np.floor(along / rng.uniform(4, 40)) % 2).astype(np.float32)
    elif style == "checker":
        period = rng.uniform(6, 48)
        t = ((np.floor(xs / period) + np.floor(ys / period)) % 2).astype(np.float32)
    else:
        raise ValueError(f"unknown background style {style!r}; choose from {BACKGROUNDS}")
    # Blend through a 256-entry colour ramp: one LUT pass instead of float maths on [H, W, 3].
    ramp = (c0 + np.linspace(0.0, 1.0, 256, dtype=np.float32)[:, None] * (c1 - c0)).astype(np.uint8)
    levels = np.clip(t * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return cv2.LUT(cv2.merge([levels, levels, levels]), ramp.reshape(256, 1, 3))


def _draw_clutter(rng: np.random.Generator, image: np.ndarray) -> None:
    """Unlabelled thin lines: distractors that are not objects."""
    h, w = image.shape[:2]
    for _ in range(int(rng.integers(0, 4))):
        p0 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        p1 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        cv2.line(image, p0, p1, _random_colour(rng).tolist(), int(rng.integers(1, 3)))


def _object_polygon(rng: np.random.Generator, class_id: int, image_hw: tuple[int, int]) -> np.ndarray:
    """Vertices [k, 2] (x, y) of one shape: log-uniform size (tiny to large), aspect ratio, rotation, position."""
    h, w = image_hw
    half_extent = math.exp(rng.uniform(math.log(4.0), math.log(max(0.35 * min(h, w), 5.0))))
    aspect = math.exp(rng.uniform(-math.log(2.0), math.log(2.0)))
    scale = np.array([half_extent * math.sqrt(aspect), half_extent / math.sqrt(aspect)])
    angle = rng.uniform(0, 2 * math.pi)
    rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    centre = np.array([rng.uniform(0, w), rng.uniform(0, h)])
    return (_UNIT_POLYGONS[class_id] * scale) @ rotation.T + centre


def _rasterise(polygon: np.ndarray, image_hw: tuple[int, int]) -> tuple[tuple[slice, slice], np.ndarray] | None:
    """(window, bool mask inside the window) of the polygon's pixels inside the image, or None if none."""
    h, w = image_hw
    x0, y0 = max(int(math.floor(polygon[:, 0].min())), 0), max(int(math.floor(polygon[:, 1].min())), 0)
    x1, y1 = min(int(math.ceil(polygon[:, 0].max())) + 1, w), min(int(math.ceil(polygon[:, 1].max())) + 1, h)
    if x1 <= x0 or y1 <= y0:
        return None
    mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
    # Pixel centres sit at +0.5: shift so that fillPoly's integer grid samples them.
    fixed = np.round((polygon - (x0 + 0.5, y0 + 0.5)) * (1 << _SUBPIXEL_BITS)).astype(np.int32)
    cv2.fillPoly(mask, [fixed], 1, lineType=cv2.LINE_8, shift=_SUBPIXEL_BITS)
    return (slice(y0, y1), slice(x0, x1)), mask.astype(bool)


def _polygon_area(polygon: np.ndarray) -> float:
    x, y = polygon[:, 0], polygon[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def draw_scene(
    rng: np.random.Generator,
    image_hw: tuple[int, int],
    class_ids: Sequence[int],
    *,
    background: str | None = None,
    noise: bool = True,
) -> Scene:
    """Draw an image with up to ``len(class_ids)`` objects (an object that cannot be placed is left out)."""
    style = background if background is not None else BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]
    image = draw_background(rng, image_hw, style)
    if style != "flat":
        _draw_clutter(rng, image)
    id_map = np.zeros(image_hw, np.int16)
    full_areas: list[float] = []
    visible: list[int] = []
    kept: list[int] = []
    windows: list[tuple[slice, slice]] = []  # an object's pixels never leave its raster window
    for class_id in class_ids:
        for _ in range(_PLACEMENT_TRIES):
            polygon = _object_polygon(rng, int(class_id), image_hw)
            raster = _rasterise(polygon, image_hw)
            if raster is None:
                continue
            window, mask = raster
            full_area, own = _polygon_area(polygon), int(mask.sum())
            if own < MIN_VISIBLE_PX or own < MIN_VISIBLE_FRACTION * full_area:
                continue  # too small or too far outside the image
            covered = np.bincount(id_map[window][mask], minlength=len(kept) + 1)[1:]
            remaining = np.asarray(visible, np.int64) - covered
            if np.any(remaining < np.maximum(MIN_VISIBLE_FRACTION * np.asarray(full_areas), MIN_VISIBLE_PX)):
                continue  # would hide too much of an object already drawn
            colour = _random_colour(rng)
            if np.abs(image[window][mask].astype(np.float32).mean(axis=0) - colour).sum() < 90:
                colour = 255.0 - colour  # keep the shape distinguishable from what lies under it
            id_map[window][mask] = len(kept) + 1
            image[window][mask] = colour.astype(np.uint8)
            visible = [*remaining.tolist(), own]
            full_areas.append(full_area)
            kept.append(int(class_id))
            windows.append(window)
            break
    boxes = np.zeros((len(kept), 4), np.float32)
    for k, (rows, cols) in enumerate(windows):
        x, y, bw, bh = cv2.boundingRect((id_map[rows, cols] == k + 1).astype(np.uint8))
        boxes[k] = (cols.start + x, rows.start + y, cols.start + x + bw, rows.start + y + bh)
    if noise:
        # Uniform sensor noise with std 0..8 from raw random bytes (std of a uniform int8 ~ 73.9): several
        # times cheaper than Gaussian draws, and the shape of the distribution does not matter here.
        raw = np.frombuffer(rng.bytes(image.size), np.int8).reshape(image.shape)
        noisy = image.astype(np.float32) + raw.astype(np.float32) * np.float32(rng.uniform(0, 8) / 73.9)
        image = np.clip(noisy, 0, 255).astype(np.uint8)
    return Scene(image, id_map, boxes, np.asarray(kept, np.int64), np.asarray(visible, np.int64).reshape(-1))
