"""A missing, corrupt or incompatible bundle gives a clear error naming the file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from model.artifacts import BundleError, load_bundle_meta
from model.export.bundle import ExportOptions
from model.predictor import Predictor


@pytest.fixture()
def bundle_copy(tiny_bundle: Path, tmp_path: Path) -> Path:
    target = tmp_path / "copy"
    shutil.copytree(tiny_bundle, target)
    return target


def edit_meta(bundle: Path, **changes) -> None:
    data = json.loads((bundle / "meta.json").read_text())
    data.update(changes)
    (bundle / "meta.json").write_text(json.dumps(data))


def test_missing_directory_and_meta(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="not found"):
        Predictor.from_bundle(tmp_path / "nope")
    with pytest.raises(BundleError, match="meta.json is missing"):
        Predictor.from_bundle(tmp_path)


def test_corrupt_model_file_is_named(bundle_copy: Path) -> None:
    with open(bundle_copy / "model.onnx", "r+b") as f:
        f.seek(100)
        f.write(b"\x00\x01\x02")
    with pytest.raises(BundleError, match=r"sha256 mismatch.*model\.onnx"):
        Predictor.from_bundle(bundle_copy)


def test_deleted_file_is_named(bundle_copy: Path) -> None:
    (bundle_copy / "preprocess.pt").unlink()
    with pytest.raises(BundleError, match=r"missing.*preprocess\.pt"):
        load_bundle_meta(bundle_copy)


def test_incompatible_schema_version(bundle_copy: Path) -> None:
    edit_meta(bundle_copy, schema_version=99)
    with pytest.raises(BundleError, match="schema_version 99 is not supported"):
        load_bundle_meta(bundle_copy)


@pytest.mark.parametrize(
    "changes,message",
    [
        (dict(input_hw=[100, 100]), "multiples of 32"),
        (dict(max_batch=0), "batch range"),
        (dict(class_names=[]), "class_names is empty"),
        (dict(models={"tflite": {}}), "unknown model format"),
        (dict(thresholds="high"), "thresholds"),
        (dict(arch=5), "arch"),
    ],
)
def test_invalid_meta_fields(bundle_copy: Path, changes: dict, message: str) -> None:
    edit_meta(bundle_copy, **changes)
    with pytest.raises(BundleError, match=message):
        load_bundle_meta(bundle_copy, verify=False)


def test_unparseable_meta(bundle_copy: Path) -> None:
    (bundle_copy / "meta.json").write_text("{not json")
    with pytest.raises(BundleError, match="unreadable JSON"):
        load_bundle_meta(bundle_copy)


def test_backend_without_its_artifact(tiny_bundle: Path) -> None:
    with pytest.raises(BundleError, match="no artifact for backend 'torchscript'"):
        Predictor.from_bundle(tiny_bundle, backend="torchscript")
    with pytest.raises(ValueError, match="unknown backend"):
        Predictor.from_bundle(tiny_bundle, backend="tflite")


def test_request_options_outside_the_baked_graph(tiny_bundle: Path) -> None:
    predictor = Predictor.from_bundle(tiny_bundle)
    image = np.zeros((64, 64, 3), np.uint8)
    with pytest.raises(ValueError, match=r"score_threshold must be in \[0.3, 1\]"):
        predictor.predict(image, score_threshold=0.1)
    with pytest.raises(ValueError, match=r"max_detections must be in \[1, 20\]"):
        predictor.predict(image, max_detections=50)


def test_invalid_export_options() -> None:
    with pytest.raises(ValueError, match="onnx does not support fp16"):
        ExportOptions(formats=("onnx",), precision="fp16")
    with pytest.raises(ValueError, match="unknown format"):
        ExportOptions(formats=("tflite",))
