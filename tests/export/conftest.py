"""A bundle with every CPU format, exported once per session, plus the eager model it came from."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import make_tiny_bundle


@pytest.fixture(scope="session")
def full_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """TorchScript + ONNX + OpenVINO + TensorRT-ONNX, parity-checked by the exporter itself."""
    return make_tiny_bundle(
        tmp_path_factory.mktemp("full") / "bundle", formats=("torchscript", "onnx", "openvino", "tensorrt"), max_batch=4
    )


@pytest.fixture(scope="session")
def eager_model(full_bundle: Path):
    from model.checkpoint import load_model

    model, _ = load_model(full_bundle.parent / "bundle.safetensors")
    return model
