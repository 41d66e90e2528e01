"""COCO-format detection data: one annotation json plus its image folder, read into numpy.

Owns the category mapping (COCO category ids, possibly non-contiguous, become contiguous labels 0..C-1 in sorted
category-id order; ``cat_ids[label]`` maps back for writing detections) and the rules for which annotations become
training boxes. Where the files of a split live is ``model.data.layout``'s job (``resolve_split`` is
re-exported here). Pure numpy/OpenCV: must not import torch.
"""

from __future__ import annotations

import json
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np

from model.data.errors import DatasetError
from model.data.layout import resolve_split

__all__ = ["CocoDetection", "DatasetError", "ImageInfo", "Sample", "read_image", "resolve_split"]

# Keep the stored pixel orientation: COCO boxes refer to the raw pixels, not an EXIF-rotated view.
_IMREAD_FLAGS = cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION


class Sample(NamedTuple):
    """One image with its boxes, as every augmentation consumes and produces it."""

    image: np.ndarray  # uint8 [H, W, 3] BGR
    boxes_xyxy: np.ndarray  # float32 [n, 4] pixels
    labels: np.ndarray  # int64 [n] contiguous labels 0..C-1


@dataclass(frozen=True)
class ImageInfo:
    """Identity and size of one image as the annotation file states them."""

    image_id: int
    file_name: str
    hw: tuple[int, int]


def read_image(path: Path) -> np.ndarray:
    """Decode ``path`` to uint8 [H, W, 3] BGR; raise ``DatasetError`` naming the file when that fails."""
    image = cv2.imread(str(path), _IMREAD_FLAGS)
    if image is None:
        raise DatasetError(f"cannot read image {path}: missing, unreadable or not a decodable image")
    return image


def _read_json(path: Path) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except OSError as exc:
        raise DatasetError(f"cannot read annotation file {path}: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise DatasetError(f"annotation file {path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise DatasetError(f"annotation file {path} has no 'images' list (not a COCO detection file)")
    if not isinstance(data.get("categories"), list) or not data["categories"]:
        raise DatasetError(f"annotation file {path} has no 'categories' list")
    return data


def _decodes(path: Path) -> bool:
    # A 1/8-scale greyscale decode touches every JPEG segment at a fraction of the cost of a full decode.
    return cv2.imread(str(path), cv2.IMREAD_REDUCED_GRAYSCALE_8) is not None


class CocoDetection:
    """A COCO detection json and its image folder: ``load(index) -> Sample``.

    Crowd annotations (``iscrowd=1``) are ignored; boxes are clipped to the image and dropped when their width or
    height is <= 1 pixel; images without boxes stay in the dataset. Missing image files raise ``DatasetError``
    at construction; with ``skip_bad_images=True`` missing and undecodable images are dropped with one warning
    instead (this decodes every image once at a reduced scale, a few ms each). Images are ordered by image id.
    """

    def __init__(self, ann_file: str | Path, image_dir: str | Path, *, skip_bad_images: bool = False) -> None:
        self.ann_file = Path(ann_file)
        self.image_dir = Path(image_dir)
        data = _read_json(self.ann_file)
        try:
            categories = sorted((int(c["id"]), str(c["name"])) for c in data["categories"])
            images = sorted(data["images"], key=lambda im: int(im["id"]))
            self._infos = [
                ImageInfo(int(im["id"]), str(im["file_name"]), (int(im["height"]), int(im["width"]))) for im in images
            ]
        except (KeyError, TypeError, ValueError) as exc:
            raise DatasetError(f"malformed image or category entry in {self.ann_file}: {exc!r}") from exc
        self.cat_ids: tuple[int, ...] = tuple(cid for cid, _ in categories)
        self.class_names: tuple[str, ...] = tuple(name for _, name in categories)
        if len(set(self.cat_ids)) != len(self.cat_ids):
            raise DatasetError(f"duplicate category ids in {self.ann_file}")
        if len({info.image_id for info in self._infos}) != len(self._infos):
            raise DatasetError(f"duplicate image ids in {self.ann_file}")
        self._boxes, self._labels = self._parse_annotations(data.get("annotations") or [])
        self._drop_bad_images(skip_bad_images)

    def _parse_annotations(self, annotations: list) -> tuple[list[np.ndarray], list[np.ndarray]]:
        label_of = {cid: label for label, cid in enumerate(self.cat_ids)}
        row_of = {info.image_id: row for row, info in enumerate(self._infos)}
        rows: list[list[tuple[float, float, float, float, int]]] = [[] for _ in self._infos]
        for ann in annotations:
            try:
                if ann.get("iscrowd", 0):
                    continue  # crowd regions are "ignore" areas in COCO eval, never training targets
                row, label = row_of[int(ann["image_id"])], label_of[int(ann["category_id"])]
                x, y, w, h = (float(v) for v in ann["bbox"])
            except (AttributeError, KeyError, TypeError, ValueError) as exc:
                raise DatasetError(
                    f"bad annotation id={ann.get('id') if isinstance(ann, dict) else '?'} in {self.ann_file}: "
                    f"{exc!r} (unknown image/category id or malformed bbox)"
                ) from exc
            height, width = self._infos[row].hw
            x1, y1 = max(x, 0.0), max(y, 0.0)
            x2, y2 = min(x + max(w, 0.0), float(width)), min(y + max(h, 0.0), float(height))
            if x2 - x1 > 1.0 and y2 - y1 > 1.0:  # also rejects NaN
                rows[row].append((x1, y1, x2, y2, label))
        boxes = [np.asarray([r[:4] for r in rs], np.float32).reshape(-1, 4) for rs in rows]
        labels = [np.asarray([r[4] for r in rs], np.int64) for rs in rows]
        return boxes, labels

    def _drop_bad_images(self, skip_bad_images: bool) -> None:
        paths = [self.image_dir / info.file_name for info in self._infos]
        good = [p.is_file() for p in paths]
        missing = [p for p, ok in zip(paths, good, strict=True) if not ok]
        if missing and not skip_bad_images:
            raise DatasetError(
                f"{len(missing)} image file(s) listed in {self.ann_file} are missing, first: {missing[0]} "
                "(pass skip_bad_images=True to drop them)"
            )
        if skip_bad_images:
            with ThreadPoolExecutor(max_workers=4) as pool:  # cv2 releases the GIL while decoding
                decodable = list(pool.map(lambda p: _decodes(p) if p.is_file() else False, paths))
            bad = [p for p, ok in zip(paths, decodable, strict=True) if not ok]
            if bad:
                shown = ", ".join(str(p) for p in bad[:5])
                warnings.warn(
                    f"skipping {len(bad)} missing or undecodable image(s) of {self.ann_file}: {shown}",
                    stacklevel=3,
                )
            good = decodable
        keep = [i for i, ok in enumerate(good) if ok]
        self._infos = [self._infos[i] for i in keep]
        self._boxes = [self._boxes[i] for i in keep]
        self._labels = [self._labels[i] for i in keep]

    @property
    def num_classes(self) -> int:
        """Number of categories C (labels are 0..C-1)."""
        return len(self.cat_ids)

    def __len__(self) -> int:
        return len(self._infos)

    def image_info(self, index: int) -> ImageInfo:
        """Image id, file name and (height, width) from the annotation file."""
        return self._infos[index]

    def image_path(self, index: int) -> Path:
        """Absolute location of image ``index``."""
        return self.image_dir / self._infos[index].file_name

    def annotations(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """(boxes_xyxy float32 [n, 4], labels int64 [n]) of image ``index`` without decoding it (copies)."""
        return self._boxes[index].copy(), self._labels[index].copy()

    def num_boxes(self, index: int) -> int:
        """Number of training boxes of image ``index``."""
        return len(self._labels[index])

    def load(self, index: int) -> Sample:
        """Decode image ``index`` (uint8 [H, W, 3] BGR) with its boxes and labels."""
        path = self.image_path(index)
        image = read_image(path)
        if image.shape[:2] != self._infos[index].hw:
            raise DatasetError(
                f"image {path} decodes to {image.shape[0]}x{image.shape[1]} (HxW) but {self.ann_file} says "
                f"{self._infos[index].hw[0]}x{self._infos[index].hw[1]}"
            )
        boxes, labels = self.annotations(index)
        return Sample(image, boxes, labels)
