"""A missing, corrupt or incompatible bundle gives a clear error naming the file."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from model.artifacts import BundleError, load_bundle_meta
from model.export.bundle import ExportOptions
from model.predictor import Predictor, create_runner


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


# --- file names in meta.json stay inside the bundle ------------------------------------------------------------


def _outside_copy(bundle: Path, relative: bool) -> str:
    """A valid copy of the bundle's model.onnx outside the bundle, named as meta.json would name it."""
    outside = bundle.parent / "outside.onnx"
    shutil.copy(bundle / "model.onnx", outside)
    return "../outside.onnx" if relative else str(outside.resolve())


@pytest.mark.parametrize("relative", [True, False], ids=["dotdot", "absolute"])
def test_model_file_outside_the_bundle_is_refused(bundle_copy: Path, relative: bool) -> None:
    name = _outside_copy(bundle_copy, relative)
    data = json.loads((bundle_copy / "meta.json").read_text())
    data["models"]["onnx"]["file"] = name
    data["files"][name] = data["files"]["model.onnx"]  # a correct sha256: only the location is wrong
    edit_meta(bundle_copy, models=data["models"], files=data["files"])
    for verify in (True, False):
        with pytest.raises(BundleError, match=rf"{re.escape(repr(name))} is outside the bundle directory"):
            load_bundle_meta(bundle_copy, verify=verify)
        with pytest.raises(BundleError, match=re.escape(repr(name))):
            Predictor.from_bundle(bundle_copy, verify=verify)


@pytest.mark.parametrize("relative", [True, False], ids=["dotdot", "absolute"])
def test_listed_file_outside_the_bundle_is_refused(bundle_copy: Path, relative: bool) -> None:
    """Only the ``files`` table names it: it must still not be read (hashed) outside the bundle."""
    name = _outside_copy(bundle_copy, relative)
    data = json.loads((bundle_copy / "meta.json").read_text())
    edit_meta(bundle_copy, files={**data["files"], name: data["files"]["model.onnx"]})
    with pytest.raises(BundleError, match=rf"{re.escape(repr(name))} is outside the bundle directory"):
        load_bundle_meta(bundle_copy)


@pytest.mark.parametrize("engine_file", ["../model.engine", "/tmp/model.engine"])
def test_tensorrt_engine_file_outside_the_bundle_is_refused(bundle_copy: Path, engine_file: str) -> None:
    data = json.loads((bundle_copy / "meta.json").read_text())
    trt = {"format": "tensorrt", "file": "model.onnx", "precision": "fp32", "extra": {"engine_file": engine_file}}
    edit_meta(bundle_copy, models={**data["models"], "tensorrt": trt})
    with pytest.raises(BundleError, match=rf"{re.escape(repr(engine_file))} is outside the bundle directory"):
        load_bundle_meta(bundle_copy, verify=False)


def test_symlink_out_of_the_bundle_is_refused(bundle_copy: Path) -> None:
    """A plain name whose file is a symlink to elsewhere: refused at verification and when the runner opens it."""
    outside = Path(_outside_copy(bundle_copy, relative=False))
    (bundle_copy / "model.onnx").unlink()
    (bundle_copy / "model.onnx").symlink_to(outside)
    with pytest.raises(BundleError, match=r"'model\.onnx' resolves outside the bundle directory"):
        load_bundle_meta(bundle_copy)
    with pytest.raises(BundleError, match=r"'model\.onnx' resolves outside the bundle directory"):
        Predictor.from_bundle(bundle_copy, verify=False)


@pytest.mark.parametrize("relative", [True, False], ids=["dotdot", "absolute"])
def test_runner_refuses_a_file_outside_the_bundle(bundle_copy: Path, relative: bool) -> None:
    """``create_runner`` checks on its own, for metas that did not come through ``load_bundle_meta``."""
    name = _outside_copy(bundle_copy, relative)
    meta = load_bundle_meta(bundle_copy)
    artifact = dataclasses.replace(meta.models["onnx"], file=name)
    with pytest.raises(BundleError, match=re.escape(repr(name))):
        create_runner(bundle_copy, meta, "onnxruntime", artifact, "cpu", 1, False)


def test_bundle_inside_a_symlinked_directory_loads(bundle_copy: Path, tmp_path: Path) -> None:
    """Resolving symlinks is about the files, not the bundle's own location (e.g. a repository of links)."""
    link = tmp_path / "linked"
    link.symlink_to(bundle_copy, target_is_directory=True)
    assert load_bundle_meta(link).models["onnx"].file == "model.onnx"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_batch": 0}, "max_batch must be in"),
        ({"default_score_threshold": 0.01}, "default_score_threshold must be between"),
        ({"formats": ("onnx", "openvino"), "precision": "int8"}, "needs --calibration-data"),
        ({"formats": ("onnx",), "precision": "int8", "calibration_data": "x"}, "does not support int8"),
        ({"formats": ("openvino",), "precision": "int8", "calibration_data": "x", "calibration_count": 0},
         "calibration_count must be >= 1"),
        ({"formats": ("onnx", "openvino"), "precision": "int8", "calibration_data": "x", "openvino_reads_onnx": True},
         "quantised IR"),
    ],
)  # fmt: skip
def test_export_options_are_checked_before_any_work(options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ExportOptions(**options)
