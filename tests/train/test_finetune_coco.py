"""Fine-tuning Megvii's released COCO nano (ONNX, BatchNorm un-folded) keeps what it knows."""

from __future__ import annotations

import json
from pathlib import Path

from yoloxpai.cli import main


def coco_tiny_dataset(shared: Path, root: Path) -> Path:
    """coco-tiny as both splits of a dataset directory (symlinks: the images stay in ../shared)."""
    source = shared / "data" / "coco-tiny"
    (root / "annotations").mkdir(parents=True)
    for split in ("train", "val"):
        (root / "annotations" / f"instances_{split}.json").symlink_to(source / "annotations" / "instances_val2017.json")
        (root / split).symlink_to(source / "val2017", target_is_directory=True)
    return root


def coco_ap(weights: Path, data: Path, out: Path, *extra: str) -> float:
    assert (
        main(["eval", "--weights", str(weights), "--data", str(data), "--workers", "0", "--json", str(out), *extra])
        == 0
    )
    return json.loads(out.read_text())["metrics"]["AP50:95"]


def test_one_epoch_finetune_from_released_onnx_weights_does_not_collapse(shared: Path, tmp_path: Path) -> None:
    onnx = shared / "weights" / "yolox_nano_coco.onnx"
    data = coco_tiny_dataset(shared, tmp_path / "coco-tiny")
    before = coco_ap(onnx, data, tmp_path / "before.json", "--arch", "yolox-nano")
    assert abs(before - 0.307) < 0.005
    run = tmp_path / "run"
    args = ["train", "--arch", "yolox-nano", "--data", str(data), "--out", str(run), "--weights", str(onnx),
            "--epochs", "1", "-b", "8", "--no-aug-epochs", "1", "--lr-per-img", "1e-5", "--workers", "0",
            "--no-progress", "--no-tensorboard"]  # fmt: skip
    assert main(args) == 0
    after = coco_ap(run / "best.pt", data, tmp_path / "after.json")
    # Measured: 0.307 -> 0.310. With the folded weights kept at their own norm the same run gave 0.002.
    assert after >= 0.9 * before, (before, after)
