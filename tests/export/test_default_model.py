"""The embedded default model: a real trained bundle, consistent with the shipped weights, and good at its task."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from model.artifacts import default_bundle_dir, load_bundle_meta, sha256_file
from model.assets.build_default import OPTIONS, WEIGHTS
from model.predictor import Predictor

SHAPES = ("circle", "square", "triangle", "star", "hexagon", "cross")


def test_bundle_and_weights_ship_together() -> None:
    meta = load_bundle_meta(default_bundle_dir())  # verifies every sha256
    assert meta.class_names == SHAPES and meta.name == "shapes-nano" and meta.arch == "yolox-nano"
    assert meta.source_checkpoint_sha256 == sha256_file(WEIGHTS)  # exported from exactly the shipped weights
    assert meta.input_hw == OPTIONS.input_hw and meta.max_batch == OPTIONS.max_batch
    size_mb = sum(p.stat().st_size for p in [WEIGHTS, *default_bundle_dir().iterdir()]) / 1e6
    assert size_mb < 10.0


@pytest.fixture(scope="module")
def unseen_shapes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from model.data.shapes import make_shapes_dataset

    # A seed the default model never saw in training or validation.
    return make_shapes_dataset(tmp_path_factory.mktemp("unseen"), train=0, val=60, img_size=320, seed=4242)


def test_default_model_detects_unseen_shapes(unseen_shapes: Path) -> None:
    from model.data.coco import CocoDetection
    from model.data.layout import resolve_split
    from model.evaluate_bundle import evaluate_bundle

    ann_file, image_dir = resolve_split(unseen_shapes, "val")
    predictor = Predictor.from_bundle(default_bundle_dir(), backend="onnxruntime")
    result = evaluate_bundle(predictor, CocoDetection(ann_file, image_dir), str(ann_file))
    assert result.ap50 >= MIN_AP50, result.metrics()


def test_eval_cli_on_a_bundle(unseen_shapes: Path, tmp_path: Path) -> None:
    from yoloxpai.cli import main

    out = tmp_path / "metrics.json"
    assert main(["eval", "--bundle", str(default_bundle_dir()), "--data", str(unseen_shapes), "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert set(data["metrics"]) >= {"AP50:95", "AP50", "AR100"} and len(data["per_class"]) == len(SHAPES)
    assert data["metrics"]["AP50"] >= MIN_AP50


# Measured AP50 on this unseen set when the model was built: 0.569 (ONNX Runtime and OpenVINO alike), minus a margin.
MIN_AP50 = 0.5
