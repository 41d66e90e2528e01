"""Rebuild the embedded default model from a training run (``make default-model`` calls this).

Writes ``model/assets/default_weights.safetensors`` (the run's best EMA weights, config and class names) and
exports ``model/assets/default_bundle`` from exactly that file, so the bundle's ``source_checkpoint_sha256`` is the
shipped weights' sha256.

    python -m model.assets.build_default --run runs/default-nano
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
# Serving settings of the default bundle: 320x320 input, dynamic batch up to 16, K = 100, requests default to 0.3.
OPTIONS = ExportOptions(
    formats=("onnx",),  # OpenVINO reads the ONNX graph too, so one file serves both CPU runtimes
    max_batch=16,
    input_hw=(320, 320),
    nms=NmsSettings(score_threshold=0.05, iou_threshold=0.65, max_detections=100),
    default_score_threshold=0.3,
    name="shapes-nano",
)


def main(argv: list[str] | None = None) -> int:
    """Weights from ``RUN/best.pt`` -> safetensors -> bundle (parity-checked)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="training run directory (uses best.pt)")
    args = parser.parse_args(argv)
    model, info = load_model(args.run / "best.pt")
    save_weights(WEIGHTS, model.state_dict(), info.config, info.class_names)
    meta, reports = export_bundle(WEIGHTS, default_bundle_dir(), OPTIONS, overwrite=True)
    print(f"wrote {WEIGHTS} and {default_bundle_dir()} ({meta.name}, {meta.arch}, classes {list(meta.class_names)})")
    for backend, report in reports.items():
        print(f"  parity {backend}: {report}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
