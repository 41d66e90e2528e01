"""COCO reading: category mapping, crowd/tiny boxes, empty images, bad files named in errors, split layouts."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from model.data.coco import CocoDetection, DatasetError, resolve_split


def _write_dataset(root: Path, annotations: list[dict], *, image_dir: str = "imgs") -> Path:
    """Three images (1: 40x60, 2: 30x30 without boxes, 3: 50x20) and categories 7, 3, 12 (non-contiguous)."""
    folder = root / image_dir
    folder.mkdir(parents=True, exist_ok=True)
    images = [(1, "a.jpg", 40, 60), (2, "b.png", 30, 30), (3, "sub/c.jpg", 50, 20)]
    for image_id, name, h, w in images:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(folder / name), np.full((h, w, 3), image_id * 40, np.uint8))
    data = {
        # Listed out of id order on purpose: the dataset orders images and categories by id.
        "images": [{"id": i, "file_name": n, "height": h, "width": w} for i, n, h, w in reversed(images)],
        "annotations": annotations,
        "categories": [{"id": 7, "name": "seven"}, {"id": 3, "name": "three"}, {"id": 12, "name": "twelve"}],
    }
    ann_file = root / "ann.json"
    ann_file.write_text(json.dumps(data))
    return ann_file


def _ann(ann_id: int, image_id: int, category_id: int, bbox: list[float], **extra) -> dict:
    return {"id": ann_id, "image_id": image_id, "category_id": category_id, "bbox": bbox, "iscrowd": 0, **extra}


def test_category_ids_map_to_sorted_contiguous_labels(tmp_path: Path) -> None:
    ann_file = _write_dataset(
        tmp_path,
        [_ann(1, 1, 12, [1, 2, 10, 20]), _ann(2, 1, 3, [5, 5, 4, 4]), _ann(3, 3, 7, [0, 0, 19, 49])],
    )
    coco = CocoDetection(ann_file, tmp_path / "imgs")
    assert coco.cat_ids == (3, 7, 12)
    assert coco.class_names == ("three", "seven", "twelve")
    assert coco.num_classes == 3
    image, boxes, labels = coco.load(0)
    assert image.dtype == np.uint8 and image.shape == (40, 60, 3)
    np.testing.assert_allclose(boxes, [[1, 2, 11, 22], [5, 5, 9, 9]])
    assert boxes.dtype == np.float32 and labels.dtype == np.int64
    assert labels.tolist() == [2, 0]
    assert [coco.cat_ids[label] for label in labels] == [12, 3]
    assert coco.image_info(2).file_name == "sub/c.jpg" and coco.image_info(2).hw == (50, 20)
    assert [coco.image_info(i).image_id for i in range(len(coco))] == [1, 2, 3]


def test_crowd_tiny_and_out_of_image_boxes(tmp_path: Path) -> None:
    ann_file = _write_dataset(
        tmp_path,
        [
            _ann(1, 1, 3, [10, 10, 20, 20], iscrowd=1),  # crowd: ignored
            _ann(2, 1, 3, [10, 10, 1.0, 30]),  # 1 px wide: dropped
            _ann(3, 1, 3, [10, 10, 30, 0.5]),  # half a pixel high: dropped
            _ann(4, 1, 7, [50, 30, 40, 40]),  # clipped to the image: (50, 30, 60, 40)
            _ann(5, 1, 7, [70, 10, 5, 5]),  # entirely outside: dropped
            _ann(6, 1, 7, [-5, -5, 10, 10]),  # clipped: (0, 0, 5, 5)
        ],
    )
    coco = CocoDetection(ann_file, tmp_path / "imgs")
    boxes, labels = coco.annotations(0)
    np.testing.assert_allclose(boxes, [[50, 30, 60, 40], [0, 0, 5, 5]])
    assert labels.tolist() == [1, 1]


def test_images_without_boxes_are_kept(tmp_path: Path) -> None:
    coco = CocoDetection(_write_dataset(tmp_path, []), tmp_path / "imgs")
    assert len(coco) == 3
    sample = coco.load(1)
    assert sample.image.shape == (30, 30, 3)
    assert sample.boxes_xyxy.shape == (0, 4) and sample.labels.shape == (0,)


def test_missing_image_is_named_or_skipped_with_a_warning(tmp_path: Path) -> None:
    ann_file = _write_dataset(tmp_path, [_ann(1, 3, 7, [0, 0, 10, 10])])
    (tmp_path / "imgs" / "b.png").unlink()
    with pytest.raises(DatasetError, match="b.png"):
        CocoDetection(ann_file, tmp_path / "imgs")
    with pytest.warns(UserWarning, match="b.png"):
        coco = CocoDetection(ann_file, tmp_path / "imgs", skip_bad_images=True)
    assert [coco.image_info(i).image_id for i in range(len(coco))] == [1, 3]
    assert coco.num_boxes(1) == 1  # annotations stay with their image


def test_corrupt_image_is_named_or_skipped_with_a_warning(tmp_path: Path) -> None:
    ann_file = _write_dataset(tmp_path, [])
    (tmp_path / "imgs" / "a.jpg").write_bytes(b"\xff\xd8 this is not a jpeg")
    coco = CocoDetection(ann_file, tmp_path / "imgs")  # strict mode decodes lazily
    with pytest.raises(DatasetError, match="a.jpg"):
        coco.load(0)
    with pytest.warns(UserWarning, match="a.jpg"):
        skipping = CocoDetection(ann_file, tmp_path / "imgs", skip_bad_images=True)
    assert [skipping.image_info(i).file_name for i in range(len(skipping))] == ["b.png", "sub/c.jpg"]


def test_size_mismatch_names_the_file(tmp_path: Path) -> None:
    ann_file = _write_dataset(tmp_path, [])
    cv2.imwrite(str(tmp_path / "imgs" / "b.png"), np.zeros((31, 30, 3), np.uint8))
    with pytest.raises(DatasetError, match=r"b\.png.*31x30"):
        CocoDetection(ann_file, tmp_path / "imgs").load(1)


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("{not json", "not valid JSON"),
        (json.dumps({"annotations": []}), "no 'images'"),
        (json.dumps({"images": [], "categories": []}), "no 'categories'"),
        (
            json.dumps(
                {
                    "images": [{"id": 1, "file_name": "x.jpg", "height": 4, "width": 4}],
                    "annotations": [{"id": 9, "image_id": 1, "category_id": 5, "bbox": [0, 0, 2, 2]}],
                    "categories": [{"id": 1, "name": "a"}],
                }
            ),
            "id=9",
        ),
    ],
)
def test_malformed_annotation_files_are_named(tmp_path: Path, content: str, match: str) -> None:
    ann_file = tmp_path / "broken.json"
    ann_file.write_text(content)
    with pytest.raises(DatasetError, match=match) as info:
        CocoDetection(ann_file, tmp_path)
    assert "broken.json" in str(info.value)
    with pytest.raises(DatasetError, match="nothing.json"):
        CocoDetection(tmp_path / "nothing.json", tmp_path)


def test_resolve_split_directory_layouts(tmp_path: Path, shapes_dir: Path) -> None:
    assert resolve_split(shapes_dir, "val") == (shapes_dir / "annotations" / "instances_val.json", shapes_dir / "val")
    coco2017 = tmp_path / "coco"
    (coco2017 / "annotations").mkdir(parents=True)
    (coco2017 / "train2017").mkdir()
    shutil.copy(
        shapes_dir / "annotations" / "instances_train.json", coco2017 / "annotations" / "instances_train2017.json"
    )
    assert resolve_split(coco2017, "train") == (
        coco2017 / "annotations" / "instances_train2017.json",
        coco2017 / "train2017",
    )
    with pytest.raises(DatasetError, match="instances_val2017.json"):
        resolve_split(coco2017, "val")
    with pytest.raises(DatasetError, match="does not exist"):
        resolve_split(tmp_path / "nope", "train")
    with pytest.raises(ValueError, match="split"):
        resolve_split(coco2017, "test")  # type: ignore[arg-type]


def test_resolve_split_json_file_finds_the_images(tmp_path: Path, shapes_dir: Path) -> None:
    ann_file = (shapes_dir / "annotations" / "instances_train.json").resolve()
    assert resolve_split(ann_file, "train") == (ann_file, shapes_dir.resolve() / "train")

    beside = tmp_path / "beside"
    ann_file2 = _write_dataset(beside, [], image_dir=".")
    assert resolve_split(ann_file2, "val")[1] == beside.resolve()

    in_images = tmp_path / "in_images"
    ann_file3 = _write_dataset(in_images, [], image_dir="images")
    assert resolve_split(ann_file3, "val")[1] == in_images.resolve() / "images"

    nowhere = tmp_path / "nowhere"
    ann_file4 = _write_dataset(nowhere, [], image_dir="elsewhere")
    with pytest.raises(DatasetError, match="c.jpg"):
        resolve_split(ann_file4, "train")
