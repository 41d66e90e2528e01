"""The export's accuracy gate (``--eval-data``) with the released COCO nano on real coco-tiny photos: OpenVINO
bf16 passes and is recorded in meta.json; a deliberately broken reduced-precision artifact is refused (nothing
published) unless ``--force``, which publishes it with the failure on record."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnx.numpy_helper
import pytest

import model.export.bundle as bundle_module
from model.artifacts import load_bundle_meta
from model.bn_unfold import DEFAULT_CALIBRATION_DIR
from yoloxpai.cli import main

IMAGES = 24  # a subset keeps CI short; docs/benchmarks.md has the 80-image figures


@pytest.fixture(scope="module")
def eval_subset(shared: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first ``IMAGES`` coco-tiny photos as a COCO folder (annotations/instances_val2017.json + val2017/)."""
    source = shared / "data" / "coco-tiny"
    data = json.loads((source / "annotations" / "instances_val2017.json").read_text())
    data["images"] = sorted(data["images"], key=lambda i: i["id"])[:IMAGES]
    kept = {i["id"] for i in data["images"]}
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] in kept]
    out = tmp_path_factory.mktemp("coco-subset")
    (out / "annotations").mkdir()
    (out / "annotations" / "instances_val2017.json").write_text(json.dumps(data))
    (out / "val2017").mkdir()
    for info in data["images"]:
        (out / "val2017" / info["file_name"]).symlink_to(source / "val2017" / info["file_name"])
    return out


def export_args(shared: Path, out: Path, eval_data: Path, precision: str = "bf16") -> list[str]:
    return ["export", "--weights", str(shared / "weights" / "yolox_nano_coco.onnx"), "--arch", "yolox-nano",
            "--out", str(out), "--format", "onnx,openvino", "--precision", precision, "--calibration-images",
            str(DEFAULT_CALIBRATION_DIR), "--max-batch", "2", "--score-threshold", "0.001",
            "--eval-data", str(eval_data)]  # fmt: skip


def test_bf16_passes_the_gate_and_is_recorded(shared: Path, eval_subset: Path, tmp_path: Path, capsys) -> None:
    assert main(export_args(shared, tmp_path / "b", eval_subset)) == 0
    printed = capsys.readouterr().out
    assert "openvino     openvino     bf16" in printed and "PASS" in printed and "FAIL" not in printed
    meta = load_bundle_meta(tmp_path / "b")
    bf16 = meta.models["openvino"].extra["accuracy"]
    fp32 = meta.models["onnx"].extra["accuracy"]
    assert bf16["precision"] == "bf16" and bf16["max_drop_ap_points"] == 0.5 and bf16["passed"]
    assert bf16["images"] == IMAGES and bf16["drop_ap_points"] <= 0.5
    assert fp32["max_drop_ap_points"] is None and abs(fp32["drop_ap_points"]) < 0.1  # ONNX Runtime = eager
    assert bf16["reference_ap50_95"] == fp32["reference_ap50_95"] > 0.2  # a real detector on real photos


def _break_reduced_precision_artifact(original):
    """``_write_models`` whose OpenVINO artifact is a broken conversion: one backbone conv's weights scrambled."""

    def write_models(net, options, input_hw, convention, out):
        models = original(net, options, input_hw, convention, out)
        import openvino as ov

        graph = onnx.load(str(out / "model.onnx"))
        target = next(n for n in graph.graph.node if n.op_type == "Conv" and "dark3" in n.name)
        weight = next(i for i in graph.graph.initializer if i.name == target.input[1])
        values = onnx.numpy_helper.to_array(weight)
        broken = np.random.default_rng(0).permutation(values.reshape(-1)).reshape(values.shape)
        weight.CopyFrom(onnx.numpy_helper.from_array(broken, weight.name))
        with tempfile.TemporaryDirectory() as scratch:
            onnx.save(graph, f"{scratch}/broken.onnx")
            ov.save_model(ov.convert_model(f"{scratch}/broken.onnx"), str(out / "model.xml"), compress_to_fp16=False)
        return models

    return write_models


def test_a_broken_artifact_is_refused_unless_forced(
    shared: Path, eval_subset: Path, tmp_path: Path, capsys, monkeypatch
) -> None:
    monkeypatch.setattr(bundle_module, "_write_models", _break_reduced_precision_artifact(bundle_module._write_models))
    out = tmp_path / "b"
    assert main(export_args(shared, out, eval_subset)) == 1
    printed = capsys.readouterr().out
    assert "accuracy gate failed" in printed and "FAIL" in printed and "nothing was written" in printed
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no leftovers
    assert main([*export_args(shared, out, eval_subset), "--force"]) == 0
    record = load_bundle_meta(out).models["openvino"].extra["accuracy"]
    assert not record["passed"] and record["drop_ap_points"] > 1.0


def test_int8_is_quantised_on_real_images_passes_the_gate_and_records_its_calibration(
    shared: Path, eval_subset: Path, tmp_path: Path, capsys
) -> None:
    photos = shared / "data" / "coco-tiny" / "val2017"
    args = [*export_args(shared, tmp_path / "b", eval_subset, "int8"), "--calibration-data", str(photos)]
    assert main([*args, "--calibration-count", "32"]) == 0
    printed = capsys.readouterr().out
    assert "openvino     openvino     int8" in printed and "FAIL" not in printed
    artifact = load_bundle_meta(tmp_path / "b").models["openvino"]
    assert artifact.file == "model.xml" and artifact.precision == "int8"
    assert artifact.extra["calibration"] == {"images": 32, "unreadable": 0, "data": "coco-tiny/val2017"}
    assert artifact.extra["quantizer"].startswith("nncf ")
    record = artifact.extra["accuracy"]
    assert record["passed"] and record["max_drop_ap_points"] == 1.0 and record["drop_ap_points"] <= 1.0
    # really quantised: int8 weights behind FakeQuantize/Convert nodes, the prediction convs left in fp32
    ir = (tmp_path / "b" / "model.xml").read_text()
    assert 'element_type="i8"' in ir and "FakeQuantize" in ir


def test_int8_calibrated_on_blank_images_is_refused(shared: Path, eval_subset: Path, tmp_path: Path, capsys) -> None:
    # A deliberately broken quantisation through the real quantiser: activation ranges measured on flat grey
    # frames clip every real photo's activations.
    import cv2

    blank = tmp_path / "blank"
    blank.mkdir()
    for i in range(4):
        cv2.imwrite(str(blank / f"{i}.png"), np.full((480, 640, 3), 114 + i, np.uint8))
    out = tmp_path / "b"
    assert main([*export_args(shared, out, eval_subset, "int8"), "--calibration-data", str(blank)]) == 1
    printed = capsys.readouterr().out
    assert "accuracy gate failed" in printed and "int8" in printed and "nothing was written" in printed
    assert not out.exists()


def test_int8_needs_calibration_data(shared: Path, eval_subset: Path, tmp_path: Path, capsys) -> None:
    assert main(export_args(shared, tmp_path / "b", eval_subset, "int8")) == 1
    assert "--precision int8 needs --calibration-data DIR" in capsys.readouterr().out


def test_int8_calibration_skips_an_unreadable_image_as_the_batchnorm_calibration_does(tmp_path: Path) -> None:
    import cv2

    from model.config import InputConvention
    from model.export.int8_openvino import calibration_inputs

    good, broken = tmp_path / "good.jpg", tmp_path / "broken.jpg"
    cv2.imwrite(str(good), np.full((48, 64, 3), 90, np.uint8))
    broken.write_bytes(b"\xff\xd8 not a jpeg")
    convention = InputConvention("megvii", "bgr", (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), 114.0)
    [tensor] = calibration_inputs([good, broken], (32, 32), convention)
    assert tensor.shape == (1, 3, 32, 32) and tensor.dtype == np.float32
    with pytest.raises(FileNotFoundError, match="none of 1 files"):
        calibration_inputs([broken], (32, 32), convention)
