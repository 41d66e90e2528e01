"""ONNX Runtime's I/O-binding path (the one CUDA serving takes) run on the CPU provider: the same outputs as
``session.run``, at every batch size, and the precision reported is the artifact's."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from model.artifacts import load_bundle_meta
from model.export.parity import parity_images
from model.predictor import Predictor, create_runner
from model.runtime.onnxruntime_runner import OnnxRuntimeRunner


@pytest.fixture(scope="module")
def batches(tiny_bundle: Path) -> dict[int, np.ndarray]:
    """Preprocessed parity images, repeated to batches of 1, 3 and 8 (the bundle's max)."""
    predictor = Predictor.from_bundle(tiny_bundle, backend="onnxruntime")
    tensors = [predictor.preprocess(image)[0] for image in parity_images()]
    return {b: np.stack([tensors[i % len(tensors)] for i in range(b)]) for b in (1, 3, 8)}


def test_binding_path_equals_session_run(tiny_bundle: Path, batches: dict[int, np.ndarray]) -> None:
    runner = OnnxRuntimeRunner(tiny_bundle / "model.onnx", "cpu", threads=1, io_binding=True)
    reference = {b: runner.session.run(runner.output_names, {runner.input_name: x}) for b, x in batches.items()}

    def refuse(*args, **kwargs):
        raise AssertionError("the binding path must not call session.run")

    runner.session.run = refuse
    for b in (1, 3, 8, 1, 3):  # sizes up and down: nothing from an earlier run's shapes may leak into a later one
        raw = runner.run(batches[b])
        num, boxes, scores, classes = reference[b]
        assert raw.num_dets.dtype == np.int32 and raw.classes.dtype == np.int32
        assert raw.boxes.dtype == np.float32 and raw.scores.dtype == np.float32
        assert np.array_equal(raw.num_dets, np.asarray(num).reshape(-1))
        assert np.array_equal(raw.boxes, boxes) and np.array_equal(raw.scores, scores)
        assert np.array_equal(raw.classes, classes)
    assert raw.num_dets.sum() > 0, "the comparison needs detections"


def test_binding_is_on_for_cuda_only_by_default(tiny_bundle: Path) -> None:
    assert OnnxRuntimeRunner(tiny_bundle / "model.onnx", "cpu").io_binding is False
    with pytest.raises(RuntimeError, match="CUDAExecutionProvider.*onnxruntime-gpu"):
        OnnxRuntimeRunner(tiny_bundle / "model.onnx", "cuda:0")  # this machine's wheel has no CUDA provider


def test_precision_is_the_artifacts(tiny_bundle: Path) -> None:
    meta = load_bundle_meta(tiny_bundle)
    artifact = meta.models["onnx"]
    assert create_runner(tiny_bundle, meta, "onnxruntime", artifact, "cpu", 1, False).precision == "fp32"
    fp16 = dataclasses.replace(artifact, precision="fp16")
    assert create_runner(tiny_bundle, meta, "onnxruntime", fp16, "cpu", 1, False).precision == "fp16"
