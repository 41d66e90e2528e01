"""Export -> predict round trips: every CPU backend equals eager PyTorch (fp32 parity criteria)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import onnx
import pytest

from model.artifacts import load_bundle_meta
from model.export.bundle import eager_detections
from model.export.parity import compare_detections, parity_images
from model.predictor import Predictor, select_backend

BACKENDS = ["torchscript", "onnxruntime", "openvino"]


def mixed_images() -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    images = parity_images(seed=3)
    images.append(rng.integers(0, 256, (57, 90, 3), dtype=np.uint8))  # tiny, upscaled
    images.append(rng.integers(0, 256, (1200, 300, 3), dtype=np.uint8))  # tall
    return images


@pytest.mark.parametrize("backend", BACKENDS)
def test_batch_one_and_mixed_batch_match_eager(backend: str, full_bundle, eager_model) -> None:
    predictor = Predictor.from_bundle(full_bundle, backend=backend)
    meta = predictor.meta
    images = mixed_images()
    reference = eager_detections(eager_model, meta, images)
    assert sum(len(d) for d in reference) > 10  # the comparison is not vacuous
    single = [predictor.predict(image)[0] for image in images]  # batch 1
    mixed = predictor.predict(images)  # one call, five sizes; splits above max_batch=4
    for result in (single, mixed):
        report = compare_detections(reference, result)
        assert report.ok(), report
    for det, image in zip(mixed, images, strict=True):
        assert det.image_hw == image.shape[:2]
        assert (det.boxes_xyxy[:, 0::2] <= image.shape[1]).all() and (det.boxes_xyxy >= 0).all()
        assert list(det.scores) == sorted(det.scores, reverse=True)


def test_output_contract_in_the_onnx_graph(full_bundle) -> None:
    graph = onnx.load(str(full_bundle / "model.onnx")).graph
    assert [i.name for i in graph.input] == ["images"]
    dims = [d.dim_param or d.dim_value for d in graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 3, 160, 192]
    outputs = {o.name: o.type.tensor_type for o in graph.output}
    assert list(outputs) == ["num_dets", "boxes", "scores", "classes"]
    assert outputs["num_dets"].elem_type == onnx.TensorProto.INT32
    assert outputs["classes"].elem_type == onnx.TensorProto.INT32
    assert outputs["boxes"].elem_type == onnx.TensorProto.FLOAT
    assert [d.dim_param or d.dim_value for d in outputs["scores"].shape.dim] == ["batch", 20]
    assert any(node.op_type == "NonMaxSuppression" for node in graph.node)


def test_tensorrt_graph_has_efficient_nms_with_scalar_attributes(full_bundle) -> None:
    graph = onnx.load(str(full_bundle / "model.trt.onnx")).graph
    nodes = [n for n in graph.node if n.op_type == "EfficientNMS_TRT"]
    assert len(nodes) == 1 and nodes[0].domain == "TRT"
    attrs = {a.name: a for a in nodes[0].attribute}
    expected_types = {
        "background_class": onnx.AttributeProto.INT,
        "box_coding": onnx.AttributeProto.INT,
        "iou_threshold": onnx.AttributeProto.FLOAT,
        "max_output_boxes": onnx.AttributeProto.INT,
        "plugin_version": onnx.AttributeProto.STRING,
        "score_activation": onnx.AttributeProto.INT,
        "score_threshold": onnx.AttributeProto.FLOAT,
        "class_agnostic": onnx.AttributeProto.INT,
    }
    for name, kind in expected_types.items():
        assert attrs[name].type == kind, name  # scalars, not the reference's accidental tuples
    value = {k: onnx.helper.get_attribute_value(v) for k, v in attrs.items()}
    assert value["background_class"] == -1 and value["box_coding"] == 0 and value["score_activation"] == 0
    assert value["max_output_boxes"] == 20 and value["plugin_version"] == b"1"
    assert value["iou_threshold"] == pytest.approx(0.65) and value["score_threshold"] == pytest.approx(0.3)
    assert [o.name for o in graph.output] == ["num_dets", "boxes", "scores", "classes"]


def test_meta_records_everything(full_bundle) -> None:
    meta = load_bundle_meta(full_bundle)
    data = json.loads((full_bundle / "meta.json").read_text())
    for key in (
        "schema_version", "arch", "class_names", "input_hw", "convention", "min_batch", "max_batch", "thresholds",
        "outputs", "files", "source_checkpoint_sha256", "yoloxpai_version", "created_at", "models",
    ):  # fmt: skip
        assert key in data, key
    assert meta.arch == "yolox-nano" and meta.class_names == ("circle", "square", "triangle")
    assert meta.input_hw == (160, 192) and (meta.min_batch, meta.max_batch) == (1, 4)
    assert set(meta.models) == {"torchscript", "onnx", "openvino", "tensorrt"}
    assert set(meta.files) == {p.name for p in full_bundle.iterdir() if p.name != "meta.json"}
    assert meta.convention.channel_order == "bgr" and meta.thresholds.max_detections == 20
    assert data["outputs"]["boxes"]["frame"] == "letterboxed input pixels"


def test_auto_backend_on_cpu_follows_the_preference(full_bundle) -> None:
    meta = load_bundle_meta(full_bundle, verify=False)
    backend, artifact = select_backend(meta, "auto", "cpu")
    assert backend == "onnxruntime" and artifact.format == "onnx"
    assert Predictor.from_bundle(full_bundle).backend == "onnxruntime"
    # A bundle only OpenVINO can run (e.g. bf16 IR) still gets it; one with TorchScript alone gets TorchScript.
    for only, expected in (("openvino", "openvino"), ("torchscript", "torchscript")):
        narrowed = dataclasses.replace(meta, models={only: meta.models[only]})
        assert select_backend(narrowed, "auto", "cpu") == (expected, meta.models[only])
