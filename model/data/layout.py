"""Where a split's annotation file and images live: ``resolve_split(data, split) -> (ann_file, image_dir)``.

``data`` is either a dataset directory or a COCO json file.

A directory is tried in this order:
1. this project's layout (``yoloxpai make-dataset``): ``DIR/annotations/instances_{split}.json`` + ``DIR/{split}/``;
2. the standard COCO 2017 layout: ``DIR/annotations/instances_{split}2017.json`` + ``DIR/{split}2017/``.

For a json file the images are looked up, in order, in: the json's directory, ``../{split}``, ``../{split}2017``,
``./images``, ``../images`` and ``..`` (all relative to the json's directory); the first folder that holds the
first listed image wins. Pure stdlib.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from model.data.errors import DatasetError

Split = Literal["train", "val"]


def _first_file_name(ann_file: Path) -> str | None:
    try:
        with open(ann_file, encoding="utf-8") as f:
            images = json.load(f).get("images") or []
    except (OSError, ValueError, AttributeError) as exc:
        raise DatasetError(f"cannot read annotation file {ann_file}: {exc}") from exc
    return str(images[0]["file_name"]) if images and isinstance(images[0], dict) else None


def image_dir_candidates(ann_file: Path, split: str) -> list[Path]:
    """Folders searched, in order, for the images of a json passed directly (see the module docstring)."""
    here = ann_file.parent
    up = here.parent
    return [here, up / split, up / f"{split}2017", here / "images", up / "images", up]


def _resolve_json(ann_file: Path, split: str) -> tuple[Path, Path]:
    candidates = image_dir_candidates(ann_file, split)
    first = _first_file_name(ann_file)
    if first is None:  # no images listed: any folder will do
        return ann_file, candidates[0]
    for folder in candidates:
        if (folder / first).is_file():
            return ann_file, folder
    tried = ", ".join(str(c) for c in candidates)
    raise DatasetError(f"cannot find the images of {ann_file}: {first!r} is in none of {tried}")


def resolve_split(data: str | Path, split: Split) -> tuple[Path, Path]:
    """(annotation json, image folder) of ``split`` in ``data`` (a dataset directory or a json file)."""
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    path = Path(data).expanduser()
    if path.is_file():
        return _resolve_json(path.resolve(), split)
    if not path.is_dir():
        raise DatasetError(f"dataset {path} does not exist (expected a dataset directory or a COCO json file)")
    layouts = [
        (path / "annotations" / f"instances_{split}.json", path / split),
        (path / "annotations" / f"instances_{split}2017.json", path / f"{split}2017"),
    ]
    for ann_file, image_dir in layouts:
        if ann_file.is_file():
            if not image_dir.is_dir():
                raise DatasetError(f"{ann_file} exists but its image folder {image_dir} does not")
            return ann_file, image_dir
    tried = ", ".join(str(a) for a, _ in layouts)
    raise DatasetError(f"no {split} annotations in {path}: looked for {tried}")
