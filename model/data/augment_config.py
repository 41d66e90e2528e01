"""Training augmentation settings: the ``AugmentConfig`` frozen dataclass and one preset per reference recipe.

Presets (values from the references, see ``docs``/``shared/reference``):
- ``default``: Megvii YOLOX s/m/l/x (``yolox_base.py``): mosaic 1.0, mixup 1.0, mosaic scale (0.1, 2), mixup scale
  (0.5, 1.5), HSV gains (5, 30, 30), flip 0.5, rotate ±10°, translate ±0.1, shear ±2°. The affine rotates and scales
  about the mosaic canvas's top-left corner and keeps every box (Megvii ``random_affine``).
- ``nano``: mosaic 0.5, no mixup, mosaic scale (0.5, 1.5). ``tiny``: no mixup, mosaic scale (0.5, 1.5).
- ``pai``: EasyCV YOLOX-PAI: MMMosaic, MMRandomAffine (scale (0.1, 2), about the canvas centre, mmdet box filter
  2 px / area 0.2 / aspect 20), MMMixUp (scale (0.8, 1.6), always, box filter 5 px / 0.2 / 20), mmdet
  PhotoMetricDistortion instead of HSV, flip 0.5.
Pure stdlib.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

Photometric = Literal["hsv", "easycv"]


@dataclass(frozen=True)
class BoxFilter:
    """Keep a transformed box only while it is big enough, mostly kept and not a sliver (mmdet/YOLOv5 rule)."""

    min_side_px: float  # both sides must be strictly larger
    min_area_ratio: float  # area after / area before (before = scaled, unclipped) must be strictly larger
    max_aspect_ratio: float  # max(w/h, h/w) must be strictly smaller


@dataclass(frozen=True)
class AugmentConfig:
    """Every knob of the training augmentation pipeline (see ``model.data.augment.Augmenter``).

    Args:
        mosaic_prob: chance that a sample is a 4-image mosaic (+ random affine, + maybe mixup).
        mosaic_center_ratio: mosaic centre drawn from this range times the input size, per axis.
        mosaic_scale: random-affine scale range applied to the 2H x 2W mosaic canvas.
        rotate_deg, translate_frac, shear_deg: random-affine ranges (±); translation as a fraction of input size.
        affine_about_center: rotate/scale about the canvas centre and centre the output (EasyCV) instead of
            about the top-left corner (Megvii).
        affine_box_filter: box filter after the affine (EasyCV) or ``None`` (Megvii keeps all boxes).
        mixup_prob: chance of mixing a second, letterboxed and rescaled image into a mosaic sample.
        mixup_scale: rescale range of the mixed-in image.
        mixup_needs_labels: mix only when the mosaic kept at least one box (Megvii); EasyCV always mixes.
        mixup_box_filter: filter for the mixed-in boxes after the crop; when set, mixing happens only if one
            survives (EasyCV); ``None`` keeps them all (Megvii).
        photometric: ``hsv`` (Megvii additive HSV gains) or ``easycv`` (mmdet PhotoMetricDistortion).
        photometric_prob: chance of the photometric step (Megvii's ``hsv_prob``; EasyCV applies it always and
            draws each of its operations with p=0.5).
        hsv_gains: maximum additive change of OpenCV's uint8 H (0..179), S and V.
        brightness_delta, contrast_range, saturation_range, hue_delta_deg: the PhotoMetricDistortion ranges.
        flip_prob: horizontal flip probability.
        min_box_side_px: final targets keep boxes with ``min(w, h)`` strictly above this, in input pixels.
    """

    name: str = "default"
    mosaic_prob: float = 1.0
    mosaic_center_ratio: tuple[float, float] = (0.5, 1.5)
    mosaic_scale: tuple[float, float] = (0.1, 2.0)
    rotate_deg: float = 10.0
    translate_frac: float = 0.1
    shear_deg: float = 2.0
    affine_about_center: bool = False
    affine_box_filter: BoxFilter | None = None
    mixup_prob: float = 1.0
    mixup_scale: tuple[float, float] = (0.5, 1.5)
    mixup_needs_labels: bool = True
    mixup_box_filter: BoxFilter | None = None
    photometric: Photometric = "hsv"
    photometric_prob: float = 1.0
    hsv_gains: tuple[int, int, int] = (5, 30, 30)
    brightness_delta: float = 32.0
    contrast_range: tuple[float, float] = (0.5, 1.5)
    saturation_range: tuple[float, float] = (0.5, 1.5)
    hue_delta_deg: float = 18.0
    flip_prob: float = 0.5
    min_box_side_px: float = 1.0

    def __post_init__(self) -> None:
        for name in ("mosaic_prob", "mixup_prob", "photometric_prob", "flip_prob"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        for name in ("mosaic_center_ratio", "mosaic_scale", "mixup_scale", "contrast_range", "saturation_range"):
            low, high = getattr(self, name)
            if not 0.0 < low <= high:
                raise ValueError(f"{name} must satisfy 0 < low <= high, got {(low, high)}")
        if self.photometric not in ("hsv", "easycv"):
            raise ValueError(f"photometric must be 'hsv' or 'easycv', got {self.photometric!r}")
        if min(self.rotate_deg, self.translate_frac, self.shear_deg) < 0:
            raise ValueError("rotate_deg, translate_frac and shear_deg are ± ranges and must be >= 0")


_DEFAULT = AugmentConfig()

AUGMENT_PRESETS: dict[str, AugmentConfig] = {
    "default": _DEFAULT,
    "nano": dataclasses.replace(_DEFAULT, name="nano", mosaic_prob=0.5, mixup_prob=0.0, mosaic_scale=(0.5, 1.5)),
    "tiny": dataclasses.replace(_DEFAULT, name="tiny", mixup_prob=0.0, mosaic_scale=(0.5, 1.5)),
    "pai": dataclasses.replace(
        _DEFAULT,
        name="pai",
        affine_about_center=True,
        affine_box_filter=BoxFilter(min_side_px=2.0, min_area_ratio=0.2, max_aspect_ratio=20.0),
        mixup_scale=(0.8, 1.6),
        mixup_needs_labels=False,
        mixup_box_filter=BoxFilter(min_side_px=5.0, min_area_ratio=0.2, max_aspect_ratio=20.0),
        photometric="easycv",
    ),
}


def augment_config_for(preset_name: str) -> AugmentConfig:
    """The augmentation recipe of a model preset: yolox-nano -> nano, yolox-tiny -> tiny, yolox-pai-* -> pai."""
    if preset_name == "yolox-nano":
        return AUGMENT_PRESETS["nano"]
    if preset_name == "yolox-tiny":
        return AUGMENT_PRESETS["tiny"]
    if preset_name.startswith("yolox-pai"):
        return AUGMENT_PRESETS["pai"]
    return AUGMENT_PRESETS["default"]
