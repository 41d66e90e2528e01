"""Which runtime ``--backend auto`` takes on a GPU, what it says when none can run there, and how the server's
loader reports a runtime that is missing or cannot start. The availability probes are patched to stand for the
images (serve-gpu with TensorRT, onnxruntime-gpu only, torch only, the CPU image); the last tests use this
machine's real ones (no GPU, the CPU onnxruntime wheel)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from model import predictor
from model.artifacts import BundleError, BundleMeta, ModelArtifact, load_bundle_meta
from model.predictor import backend_candidates, select_backend
from service.bundles import ConfigError, load_predictor


@pytest.fixture(scope="module")
def every_format(tiny_bundle: Path) -> BundleMeta:
    """The tiny bundle's meta with an artifact of every format (only ``meta.models`` is read here)."""
    meta = load_bundle_meta(tiny_bundle)
    extra = {
        "torchscript": ModelArtifact("torchscript", "model.pt", "fp32"),
        "tensorrt": ModelArtifact("tensorrt", "model.trt.onnx", "fp32", {"engine_file": None, "engine_spec": None}),
    }
    return dataclasses.replace(meta, models={**meta.models, **extra})


def machine(monkeypatch: pytest.MonkeyPatch, installed: set[str], ort_cuda: bool, torch_cuda: bool) -> list[str]:
    """Patch the probes to a machine with ``installed`` packages; returns the list of GPU probes that ran."""
    probed = []

    def providers() -> list[str]:
        probed.append("onnxruntime")
        return ["CUDAExecutionProvider", "CPUExecutionProvider"] if ort_cuda else ["CPUExecutionProvider"]

    def torch_cuda_available() -> bool:
        probed.append("torch")
        return torch_cuda

    monkeypatch.setattr(predictor, "_importable", lambda module: module in installed)
    monkeypatch.setattr(predictor, "_onnxruntime_providers", providers)
    monkeypatch.setattr(predictor, "_torch_cuda_available", torch_cuda_available)
    return probed


EVERYTHING = {"tensorrt", "cuda.bindings.runtime", "onnxruntime", "openvino", "torch"}


@pytest.mark.parametrize(
    ("installed", "ort_cuda", "torch_cuda", "expected"),
    [
        (EVERYTHING, True, True, "tensorrt"),
        ({"tensorrt", "cuda.cudart", "onnxruntime"}, False, False, "tensorrt"),  # cuda-python's older layout
        (EVERYTHING - {"cuda.bindings.runtime"}, True, True, "onnxruntime"),  # TensorRT without cuda-python
        (EVERYTHING - {"tensorrt"}, True, True, "onnxruntime"),
        (EVERYTHING - {"tensorrt"}, False, True, "torchscript"),  # the CPU onnxruntime wheel
        ({"torch"}, False, True, "torchscript"),
    ],
)
def test_auto_on_cuda_prefers_tensorrt_then_onnxruntime_then_torchscript(
    monkeypatch: pytest.MonkeyPatch, every_format: BundleMeta, installed, ort_cuda, torch_cuda, expected
) -> None:
    probed = machine(monkeypatch, installed, ort_cuda, torch_cuda)
    backend, artifact = select_backend(every_format, "auto", "cuda:0")
    assert backend == expected and artifact is every_format.models[predictor.BACKEND_FORMATS[expected][0]]
    if expected != "torchscript":
        assert "torch" not in probed  # torch is imported only when it is the last resort


def test_no_gpu_runtime_names_what_is_missing(monkeypatch: pytest.MonkeyPatch, every_format: BundleMeta) -> None:
    machine(monkeypatch, {"onnxruntime", "openvino"}, ort_cuda=False, torch_cuda=False)
    with pytest.raises(BundleError) as error:
        select_backend(every_format, "auto", "cuda:0")
    assert str(error.value).startswith(
        "no GPU runtime can run this bundle on cuda:0: tensorrt not installed, "
        "onnxruntime has no CUDAExecutionProvider (install onnxruntime-gpu), torch not installed"
    )
    machine(monkeypatch, EVERYTHING - {"cuda.bindings.runtime"}, ort_cuda=False, torch_cuda=False)
    with pytest.raises(BundleError, match=r"cuda-python not installed.*torch has no CUDA"):
        select_backend(every_format, "auto", "cuda:1")
    onnx_only = dataclasses.replace(every_format, models={"onnx": every_format.models["onnx"]})
    with pytest.raises(BundleError, match="no tensorrt artifact, onnxruntime has no .*, no torchscript artifact"):
        select_backend(onnx_only, "auto", "cuda:0")


def test_the_cpu_choice_is_unchanged(monkeypatch: pytest.MonkeyPatch, every_format: BundleMeta) -> None:
    probed = machine(monkeypatch, EVERYTHING, ort_cuda=True, torch_cuda=True)
    assert select_backend(every_format, "auto", "cpu")[0] == "onnxruntime"
    assert backend_candidates(every_format, "cpu") == [("onnxruntime", "fp32"), ("torchscript", "fp32")]
    tensorrt_only = dataclasses.replace(every_format, models={"tensorrt": every_format.models["tensorrt"]})
    with pytest.raises(BundleError, match=r"no installed runtime can run this bundle on cpu: .*\['tensorrt'\]"):
        select_backend(tensorrt_only, "auto", "cpu")  # TensorRT is no CPU candidate
    assert probed == []  # nothing GPU-specific is looked up for the CPU


def test_gpu_candidates_are_the_runtimes_that_run_there(
    monkeypatch: pytest.MonkeyPatch, every_format: BundleMeta
) -> None:
    machine(monkeypatch, EVERYTHING, ort_cuda=True, torch_cuda=True)
    assert backend_candidates(every_format, "cuda:0") == [
        ("tensorrt", "fp32"),
        ("onnxruntime", "fp32"),
        ("torchscript", "fp32"),
    ]
    machine(monkeypatch, EVERYTHING - {"tensorrt"}, ort_cuda=False, torch_cuda=True)
    assert backend_candidates(every_format, "cuda:0") == [("torchscript", "fp32")]


def test_onnxruntime_on_cuda_without_the_gpu_wheel_is_a_config_error(tiny_bundle: Path) -> None:
    """This machine: the CPU onnxruntime wheel, no CUDA provider."""
    with pytest.raises(ConfigError) as error:
        load_predictor(tiny_bundle, "onnxruntime", "cuda:0", None, False)
    message = str(error.value)
    assert str(tiny_bundle) in message and "CUDAExecutionProvider" in message and "onnxruntime-gpu" in message
    assert "\n" not in message
    with pytest.raises(ConfigError, match="no GPU runtime can run this bundle on cuda:0: .*onnxruntime-gpu"):
        load_predictor(tiny_bundle, "auto", "cuda:0", None, False)


@pytest.mark.parametrize(
    ("failure", "expected"),
    [
        (ModuleNotFoundError("No module named 'tensorrt'", name="tensorrt"), "No module named 'tensorrt'"),
        (RuntimeError("the TensorRT backend needs a CUDA device"), "the TensorRT backend needs a CUDA device"),
        (RuntimeError("cudaSetDevice failed:\n  cudaErrorNoDevice\n"), "cudaSetDevice failed: cudaErrorNoDevice"),
    ],
)
def test_a_runtime_that_cannot_start_is_a_one_line_config_error(
    monkeypatch: pytest.MonkeyPatch, tiny_bundle: Path, failure: Exception, expected: str
) -> None:
    def create_runner(*args, **kwargs):
        raise failure

    monkeypatch.setattr(predictor, "create_runner", create_runner)
    with pytest.raises(ConfigError) as error:
        load_predictor(tiny_bundle, "onnxruntime", "cuda:0", None, False)
    assert str(error.value) == f"cannot load bundle {tiny_bundle} with backend onnxruntime on cuda:0: {expected}"
    assert error.value.__cause__ is failure
