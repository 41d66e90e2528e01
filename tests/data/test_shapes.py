"""The synthetic shapes dataset: valid COCO, deterministic, tight boxes, every class, some empty images."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
from pycocotools.coco import COCO

from model.data.shapes import make_shapes_dataset
from model.data.shapes_draw import CLASS_NAMES, draw_scene
from yoloxpai.cli import main as cli_main


def _load(shapes_dir: Path, split: str) -> dict:
    return json.loads((shapes_dir / "annotations" / f"instances_{split}.json").read_text())


def test_layout_and_pycocotools_loads(shapes_dir: Path) -> None:
    for split, count in (("train", 24), ("val", 8)):
        coco = COCO(str(shapes_dir / "annotations" / f"instances_{split}.json"))
        assert len(coco.getImgIds()) == count
        assert sorted(c["name"] for c in coco.loadCats(coco.getCatIds())) == sorted(CLASS_NAMES)
        for image in coco.dataset["images"]:
            path = shapes_dir / split / image["file_name"]
            decoded = cv2.imread(str(path))
            assert decoded is not None, path
            assert decoded.shape[:2] == (image["height"], image["width"])
            assert max(decoded.shape[:2]) == 128


def test_boxes_inside_images_and_fields(shapes_dir: Path) -> None:
    data = _load(shapes_dir, "train")
    sizes = {im["id"]: (im["width"], im["height"]) for im in data["images"]}
    ids = [a["id"] for a in data["annotations"]]
    assert len(set(ids)) == len(ids)
    for ann in data["annotations"]:
        x, y, w, h = ann["bbox"]
        width, height = sizes[ann["image_id"]]
        assert x >= 0 and y >= 0 and x + w <= width and y + h <= height
        assert w >= 1 and h >= 1
        assert 0 < ann["area"] <= w * h
        assert ann["iscrowd"] == 0 and ann["category_id"] in range(1, len(CLASS_NAMES) + 1)


def test_every_class_present_sizes_vary_and_some_images_empty(tmp_path: Path) -> None:
    out = make_shapes_dataset(tmp_path, train=120, val=0, img_size=96, seed=1)
    data = _load(out, "train")
    assert {a["category_id"] for a in data["annotations"]} == set(range(1, len(CLASS_NAMES) + 1))
    with_boxes = {a["image_id"] for a in data["annotations"]}
    assert 0 < len(data["images"]) - len(with_boxes) < 30  # ~8% empty
    sides = np.array([max(a["bbox"][2:]) for a in data["annotations"]])
    assert sides.min() < 12 and sides.max() > 48  # tiny to large at 96 px
    shapes = {(im["height"], im["width"]) for im in data["images"]}
    assert len(shapes) > 5  # aspect ratios and orientations vary


def test_deterministic_for_a_seed(tmp_path: Path) -> None:
    a = make_shapes_dataset(tmp_path / "a", train=6, val=2, img_size=64, seed=3)
    b = make_shapes_dataset(tmp_path / "b", train=6, val=2, img_size=64, seed=3)
    c = make_shapes_dataset(tmp_path / "c", train=6, val=2, img_size=64, seed=4)
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert len(files) == 2 + 8
    for rel in files:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
    assert (a / "train" / "000001.jpg").read_bytes() != (c / "train" / "000001.jpg").read_bytes()


def test_scene_boxes_are_tight_around_visible_pixels() -> None:
    checked = 0
    for seed in range(20):
        rng = np.random.default_rng(seed)
        scene = draw_scene(rng, (80, 100), [seed % len(CLASS_NAMES)], background="flat", noise=False)
        if len(scene.class_ids) == 0:
            continue
        # Flat background, no clutter, no noise: everything that differs from the corner colour is the shape.
        background = scene.image[0, 0] if scene.id_map[0, 0] == 0 else scene.image[-1, -1]
        ys, xs = np.nonzero(np.any(scene.image != background, axis=2))
        expected = [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
        np.testing.assert_array_equal(scene.boxes_xyxy[0], expected)
        assert scene.areas_px[0] == len(xs)
        checked += 1
    assert checked >= 15


def test_occluded_objects_keep_most_of_their_area() -> None:
    rng = np.random.default_rng(0)
    overlaps = 0
    for _ in range(30):
        scene = draw_scene(rng, (96, 96), [0, 1, 2, 3, 4, 5, 0, 1])
        for k, box in enumerate(scene.boxes_xyxy):
            visible = scene.id_map == k + 1
            assert visible.sum() == scene.areas_px[k] >= 16
            x1, y1, x2, y2 = box.astype(int)
            assert visible[y1:y2, x1:x2].sum() == visible.sum()  # nothing visible outside its box
        boxes = scene.boxes_xyxy
        for i in range(len(boxes)):
            for j in range(i + 1, len(boxes)):
                ix = min(boxes[i, 2], boxes[j, 2]) - max(boxes[i, 0], boxes[j, 0])
                iy = min(boxes[i, 3], boxes[j, 3]) - max(boxes[i, 1], boxes[j, 1])
                overlaps += ix > 0 and iy > 0
    assert overlaps > 0  # objects do overlap


def test_cli_writes_the_dataset(tmp_path: Path) -> None:
    argv = ["make-dataset", "shapes", "--out", str(tmp_path), "--train", "3", "--val", "2", "--img-size", "64"]
    assert cli_main(argv) == 0
    assert len(list((tmp_path / "train").glob("*.jpg"))) == 3
    assert len(_load(tmp_path, "val")["images"]) == 2
    assert cli_main(["make-dataset", "shapes", "--out", str(tmp_path), "--img-size", "8"]) == 2
