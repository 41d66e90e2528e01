"""Rebuild the embedded default model from Megvii's released COCO YOLOX-Nano (``make default-model`` calls this).

Imports the ONNX export (``model.onnx_import``: weights matched by graph structure, BatchNorms un-folded with
statistics measured on real COCO images), writes ``model/assets/default_weights.safetensors`` and exports
``model/assets/default_bundle`` from exactly that file, so the bundle's ``source_checkpoint_sha256`` is the
shipped weights' sha256. Attribution: ``model/assets/NOTICE.md``.

    python -m model.assets.build_default --onnx ../shared/weights/yolox_nano_coco.onnx \
        --calibration-images ../shared/data/coco-tiny
"""

from __future__ import annotations

import argparse
from pathlib import Path

from model.artifacts import default_bundle_dir
from model.checkpoint import load_model, save_weights
from model.export.bundle import ExportOptions, export_bundle
from model.export.e2e import NmsSettings

ASSETS = Path(__file__).resolve().parent
WEIGHTS = ASSETS / "default_weights.safetensors"
SHARED = ASSETS.parents[2] / "shared"
ARCH = "yolox-nano"
# Serving settings: Megvii's 416x416, dynamic batch up to 16. The baked floor is the COCO protocol's (score 0.001,
# NMS 0.65, K = 100) so `yoloxpai eval --bundle` reproduces the published way of measuring; requests default to 0.3.
OPTIONS = ExportOptions(
    formats=("onnx",),  # OpenVINO reads the ONNX graph too, so one file serves both CPU runtimes
    max_batch=16,
    input_hw=(416, 416),
    nms=NmsSettings(score_threshold=0.001, iou_threshold=0.65, max_detections=100),
    default_score_threshold=0.3,
    name="yolox-nano-coco",
)


def main(argv: list[str] | None = None) -> int:
    """Released ONNX -> safetensors (BN un-folded) -> bundle (parity-checked)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--onnx", type=Path, default=SHARED / "weights" / "yolox_nano_coco.onnx")
    parser.add_argument("--calibration-images", type=Path, default=SHARED / "data" / "coco-tiny",
                        help="images for the BatchNorm statistics (default: coco-tiny)")  # fmt: skip
    args = parser.parse_args(argv)
    model, info = load_model(args.onnx, arch=ARCH, calibration_images=args.calibration_images)
    print(info.report.summary())
    save_weights(WEIGHTS, model.state_dict(), info.config, info.class_names)
    meta, reports = export_bundle(WEIGHTS, default_bundle_dir(), OPTIONS, overwrite=True)
    print(f"wrote {WEIGHTS} and {default_bundle_dir()} ({meta.name}, {meta.arch}, {meta.num_classes} classes)")
    for backend, report in reports.items():
        print(f"  parity {backend}: {report}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
