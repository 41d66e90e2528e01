"""The synthetic "shapes" dataset in COCO format: ``make_shapes_dataset(out_dir, ...) -> out_dir``.

Layout written under ``DIR`` (the one ``model.data.layout.resolve_split`` reads first)::

    DIR/annotations/instances_train.json
    DIR/annotations/instances_val.json
    DIR/train/000001.jpg ...
    DIR/val/000001.jpg ...

Six classes (``shapes_draw.CLASS_NAMES``: circle, square, triangle, star, hexagon, cross; category ids 1..6) of
random colour, size (a few pixels to most of the image), aspect ratio (1:2 to 2:1) and rotation, partly occluding
each other and cut by the image border, on gradient / smooth-noise / striped / checkered / flat backgrounds with
unlabelled line clutter, Gaussian noise and JPEG quality 70..95. Images are ``img_size`` pixels on their long side
(short side 0.6..1 of it, either orientation); about 8% have no objects. Boxes are the extent of each object's
visible pixels; ``area`` is the visible pixel count; ``segmentation`` is empty.

Deterministic: image ``i`` of a split depends only on ``(seed, split, i, img_size)``, so a larger dataset starts
with the images of a smaller one. The first six images of each split start with one object of each class, so every
class is present whenever a split has at least six images. Numpy/OpenCV only.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from model.data.shapes_draw import CLASS_NAMES, draw_scene

EMPTY_IMAGE_PROB = 0.08
MAX_OBJECTS = 10
_SPLIT_CODES = {"train": 0, "val": 1}


def _image_hw(rng: np.random.Generator, img_size: int) -> tuple[int, int]:
    short = int(round(img_size * rng.uniform(0.6, 1.0)))
    return (short, img_size) if rng.random() < 0.5 else (img_size, short)


def _class_ids(rng: np.random.Generator, index: int) -> list[int]:
    num_classes = len(CLASS_NAMES)
    if index >= num_classes and rng.random() < EMPTY_IMAGE_PROB:
        return []
    count = 1 + min(int(rng.poisson(2.5)), MAX_OBJECTS - 1)
    ids = rng.integers(0, num_classes, count).tolist()
    if index < num_classes:
        ids[0] = index  # guarantees every class appears in the first six images
    return ids


def render_image(seed: int, split: str, index: int, img_size: int) -> tuple[bytes, tuple[int, int], list[dict]]:
    """(JPEG bytes, (h, w), annotation dicts without ids) of image ``index`` of ``split``."""
    rng = np.random.default_rng([seed, _SPLIT_CODES[split], index, img_size])
    image_hw = _image_hw(rng, img_size)
    scene = draw_scene(rng, image_hw, _class_ids(rng, index))
    quality = int(rng.integers(70, 96))
    ok, encoded = cv2.imencode(".jpg", scene.image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError(f"JPEG encoding failed for {split} image {index}")
    annotations = []
    for (x1, y1, x2, y2), class_id, area in zip(
        scene.boxes_xyxy.tolist(), scene.class_ids, scene.areas_px, strict=True
    ):
        annotations.append(
            {
                "category_id": int(class_id) + 1,
                "bbox": [x1, y1, x2 - x1, y2 - y1],
                "area": float(area),
                "iscrowd": 0,
                "segmentation": [],
            }
        )
    return encoded.tobytes(), image_hw, annotations


def _write_split(out_dir: Path, split: str, count: int, img_size: int, seed: int) -> Path:
    image_dir = out_dir / split
    image_dir.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for index in range(count):
        jpeg, (h, w), anns = render_image(seed, split, index, img_size)
        image_id = index + 1
        file_name = f"{image_id:06d}.jpg"
        (image_dir / file_name).write_bytes(jpeg)
        images.append({"id": image_id, "file_name": file_name, "width": w, "height": h})
        for ann in anns:
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, **ann})
    dataset = {
        "info": {"description": f"yoloxpai synthetic shapes ({split}, seed {seed}, img_size {img_size})"},
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": [{"id": i + 1, "name": name, "supercategory": "shape"} for i, name in enumerate(CLASS_NAMES)],
    }
    ann_file = out_dir / "annotations" / f"instances_{split}.json"
    ann_file.parent.mkdir(parents=True, exist_ok=True)
    ann_file.write_text(json.dumps(dataset, separators=(",", ":")), encoding="utf-8")
    return ann_file


def make_shapes_dataset(
    out_dir: str | Path, *, train: int = 2000, val: int = 200, img_size: int = 320, seed: int = 0
) -> Path:
    """Write the shapes dataset (layout in the module docstring) and return ``out_dir``."""
    if train < 0 or val < 0:
        raise ValueError(f"image counts must be >= 0, got train={train}, val={val}")
    if img_size < 32:
        raise ValueError(f"img_size must be >= 32 pixels, got {img_size}")
    out = Path(out_dir)
    _write_split(out, "train", train, img_size, seed)
    _write_split(out, "val", val, img_size, seed)
    return out
