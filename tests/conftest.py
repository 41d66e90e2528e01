"""Session fixtures shared by all test packages."""

from __future__ import annotations

from pathlib import Path

import pytest

TINY_CLASSES = ("circle", "square", "triangle")
# Megvii's COCO YOLOX-Nano and 80 COCO val images, beside the repository (never copied into it).
SHARED = Path(__file__).resolve().parents[1].parent / "shared"
TINY_INPUT_HW = (160, 192)


def make_tiny_bundle(out_dir: Path, formats: tuple[str, ...] = ("onnx",), max_batch: int = 8) -> Path:
    """Export a small random-weight yolox-nano (BN recalibrated so scores vary like a trained model's)."""
    import torch

    from model.checkpoint import save_weights
    from model.export.bundle import ExportOptions, export_bundle
    from model.export.e2e import NmsSettings
    from model.yolox import build_model
    from tests.model.helpers import calibrated

    with torch.random.fork_rng():
        torch.manual_seed(0)  # the same tiny model whatever ran before in this session
        model = build_model("yolox-nano", num_classes=len(TINY_CLASSES), input_hw=TINY_INPUT_HW)
    model = calibrated(model, TINY_INPUT_HW)
    weights = out_dir.parent / f"{out_dir.name}.safetensors"
    save_weights(weights, model.state_dict(), model.cfg, TINY_CLASSES)
    options = ExportOptions(
        formats=formats,
        max_batch=max_batch,
        nms=NmsSettings(score_threshold=0.3, iou_threshold=0.65, max_detections=20),
        default_score_threshold=0.4,
        name="tiny",
    )
    export_bundle(weights, out_dir, options)
    return out_dir


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An ONNX bundle of a tiny 3-class model (input 160x192, max batch 8, K = 20)."""
    return make_tiny_bundle(tmp_path_factory.mktemp("bundles") / "tiny")


@pytest.fixture(scope="session")
def shared() -> Path:
    """``../shared`` with the released COCO nano and coco-tiny; skips where they are absent."""
    needed = [SHARED / "weights" / "yolox_nano_coco.onnx", SHARED / "data" / "coco-tiny" / "annotations"]
    missing = [str(p) for p in needed if not p.exists()]
    if missing:
        pytest.skip(f"needs ../shared (COCO weights and images), missing: {', '.join(missing)}")
    return SHARED
