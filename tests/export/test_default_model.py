"""The embedded default model: Megvii's COCO YOLOX-Nano, consistent with the shipped weights, right on real photos
and as accurate through our bundle as Megvii's own pipeline on real COCO images."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import pytest

from model.artifacts import default_bundle_dir, load_bundle_meta, sha256_file
from model.assets.build_default import OPTIONS, WEIGHTS
from model.bn_unfold import DEFAULT_CALIBRATION_DIR
from model.classes import COCO_CLASSES
from model.predictor import Predictor

# Megvii's decode + class-aware NMS 0.65 + score floor 0.001 on the 80 coco-tiny images (../shared READMEs).
REFERENCE_AP = 0.307
ASSETS = WEIGHTS.parent


def test_bundle_and_weights_ship_together() -> None:
    meta = load_bundle_meta(default_bundle_dir())  # verifies every sha256
    assert meta.class_names == COCO_CLASSES and meta.name == "yolox-nano-coco" and meta.arch == "yolox-nano"
    assert meta.source_checkpoint_sha256 == sha256_file(WEIGHTS)  # exported from exactly the shipped weights
    assert meta.input_hw == OPTIONS.input_hw == (416, 416) and meta.max_batch == OPTIONS.max_batch
    assert (ASSETS / "NOTICE.md").read_text().count("Apache") >= 1
    size_mb = sum(p.stat().st_size for p in ASSETS.rglob("*") if p.is_file() and "__pycache__" not in p.parts) / 1e6
    assert size_mb <= 10.0


@pytest.mark.parametrize(
    ("photo", "expected"), [("chelsea.jpg", "cat"), ("coffee.jpg", "cup"), ("astronaut.jpg", "person")]
)
def test_the_photos_in_the_package_get_the_right_class_first(photo: str, expected: str) -> None:
    predictor = Predictor.from_bundle(default_bundle_dir(), backend="onnxruntime")
    detections = predictor.predict([cv2.imread(str(DEFAULT_CALIBRATION_DIR / photo))])[0]
    assert len(detections) >= 1 and detections.class_names[0] == expected, detections.class_names


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_coco_ap_through_the_bundle_matches_megviis_reference(shared: Path, backend: str) -> None:
    from model.data.coco import CocoDetection
    from model.data.layout import resolve_split
    from model.evaluate_bundle import evaluate_bundle

    ann_file, image_dir = resolve_split(shared / "data" / "coco-tiny", "val")  # the COCO 2017 layout, ids 1..90
    predictor = Predictor.from_bundle(default_bundle_dir(), backend=backend)
    result = evaluate_bundle(predictor, CocoDetection(ann_file, image_dir), str(ann_file))
    assert abs(result.ap50_95 - REFERENCE_AP) <= 0.005, result.metrics()


def test_eval_cli_on_the_default_bundle(shared: Path, tmp_path: Path) -> None:
    from yoloxpai.cli import main

    out = tmp_path / "metrics.json"
    data = shared / "data" / "coco-tiny"
    assert main(["eval", "--bundle", str(default_bundle_dir()), "--data", str(data), "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert len(result["metrics"]) == 12 and len(result["per_class"]) == 80
    assert result["per_class"][0]["name"] == "person" and abs(result["metrics"]["AP50:95"] - REFERENCE_AP) <= 0.005
