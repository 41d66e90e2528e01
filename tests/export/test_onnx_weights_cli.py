"""Released ONNX weights through the commands that take --weights: export and predict."""

from __future__ import annotations

import json
from pathlib import Path

from model.artifacts import load_bundle_meta
from model.bn_unfold import DEFAULT_CALIBRATION_DIR
from model.classes import COCO_CLASSES
from yoloxpai.cli import main


def test_export_from_released_onnx_weights(shared: Path, tmp_path: Path, capsys) -> None:
    onnx = shared / "weights" / "yolox_nano_coco.onnx"
    args = ["export", "--weights", str(onnx), "--arch", "yolox-nano", "--out", str(tmp_path / "b"), "--format",
            "onnx,torchscript", "--calibration-images", str(DEFAULT_CALIBRATION_DIR), "--max-batch", "2"]  # fmt: skip
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "parity onnxruntime  ok" in printed and "parity torchscript  ok" in printed
    meta = load_bundle_meta(tmp_path / "b")
    assert meta.class_names == COCO_CLASSES and meta.input_hw == (416, 416) and meta.arch == "yolox-nano"


def test_predict_from_released_onnx_weights(shared: Path, capsys) -> None:
    onnx = shared / "weights" / "yolox_nano_coco.onnx"
    photo = DEFAULT_CALIBRATION_DIR / "chelsea.jpg"
    assert main(["predict", str(photo), "--weights", str(onnx), "--arch", "yolox-nano", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["detections"][0]["class_name"] == "cat"
    assert main(["predict", str(photo), "--weights", str(onnx), "--arch", "yolox-tiny"]) == 1
    assert "is not yolox-tiny" in capsys.readouterr().out
