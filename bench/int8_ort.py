"""Probe: ONNX Runtime static INT8 (QDQ) quantisation of a bundle's ONNX graph, and its COCO AP on real photos.

    python bench/int8_ort.py                                   # the default model, two calibration recipes
    python bench/int8_ort.py --bundle DIR --calibration-images 40

Quantises only the convolutions (per-channel int8 weights, uint8 activations), keeping the prediction convs
(``*_preds*``: box regression, objectness, classes) and the decode + NMS tail in fp32, with coco-tiny photos as
calibration data, then evaluates each quantised graph through ONNX Runtime on coco-tiny beside the fp32 bundle and
prints AP50:95 and single-image latency (one thread). Not an export path: it measures whether this recipe could
pass the export's 1.0-point INT8 gate (``model.export.accuracy_gate``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import onnx  # noqa: E402
from onnxruntime.quantization import (  # noqa: E402
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)

from model.artifacts import (  # noqa: E402
    default_bundle_dir,
    load_bundle_meta,
    parse_meta,
    sha256_file,
    write_bundle_meta,
)
from model.data.coco import CocoDetection  # noqa: E402
from model.data.layout import resolve_split  # noqa: E402
from model.evaluate_bundle import evaluate_bundle  # noqa: E402
from model.letterbox import preprocess_image  # noqa: E402
from model.predictor import Predictor  # noqa: E402

COCO_TINY = REPO.parent / "shared" / "data" / "coco-tiny"
# (name, calibration method, percentile, also keep the stem conv in fp32)
RECIPES = (("minmax", "MinMax", None, False), ("percentile-99.99, stem fp32", "Percentile", 99.99, True))


class Photos(CalibrationDataReader):
    """Letterboxed network inputs of the first ``n`` photos, one per call."""

    def __init__(self, paths: list[Path], input_hw: tuple[int, int], convention) -> None:
        self._inputs = iter([{"images": preprocess_image(cv2.imread(str(p)), input_hw, convention)[0][None]}
                             for p in paths])  # fmt: skip

    def get_next(self) -> dict | None:
        """The next input, or None at the end."""
        return next(self._inputs, None)


def quantized_bundle(bundle: Path, out: Path, photos: list[Path], recipe: tuple) -> Path:
    """A copy of ``bundle`` whose ONNX artifact is the quantised graph (meta updated, other artifacts dropped)."""
    _, method, percentile, stem_fp32 = recipe
    meta = load_bundle_meta(bundle)
    graph = onnx.load(str(bundle / meta.models["onnx"].file))
    convs = [n.name for n in graph.graph.node if n.op_type == "Conv"]
    keep_fp32 = [c for c in convs if "_preds" in c] + (convs[:1] if stem_fp32 else [])
    shutil.copytree(bundle, out)
    extra = {"CalibPercentile": percentile} if percentile else {}
    quantize_static(str(bundle / meta.models["onnx"].file), str(out / "model.onnx"),
                    Photos(photos, meta.input_hw, meta.convention), quant_format=QuantFormat.QDQ,
                    op_types_to_quantize=["Conv"], nodes_to_exclude=keep_fp32, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    calibrate_method=getattr(CalibrationMethod, method), extra_options=extra)  # fmt: skip
    data = json.loads((out / "meta.json").read_text())
    data["models"] = {"onnx": {**data["models"]["onnx"], "file": "model.onnx", "precision": "int8"}}
    data["files"] = {name: sha256_file(out / name) for name in data["files"] if (out / name).is_file()}
    write_bundle_meta(out, parse_meta(data))
    return out


def latency_ms(predictor: Predictor, runs: int = 30) -> float:
    """Median single-image inference time."""
    x = np.random.default_rng(0).uniform(0, 255, (1, 3, *predictor.meta.input_hw)).astype(np.float32)
    for _ in range(5):
        predictor.infer(x)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        predictor.infer(x)
        times.append((time.perf_counter() - start) * 1e3)
    return float(np.median(times))


def main(argv: list[str] | None = None) -> int:
    """Quantise with each recipe, evaluate, print the table."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", help="bundle directory with an ONNX artifact (default: the embedded COCO model)")
    p.add_argument("--data", default=str(COCO_TINY), help="COCO folder: calibration photos and evaluation")
    p.add_argument("--calibration-images", type=int, default=40)
    args = p.parse_args(argv)
    bundle = Path(args.bundle) if args.bundle else default_bundle_dir()
    ann_file, image_dir = resolve_split(args.data, "val")
    coco = CocoDetection(ann_file, image_dir)
    photos = sorted(Path(image_dir).glob("*.jpg"))[: args.calibration_images]
    rows = [("fp32 (the bundle)", bundle)]
    with tempfile.TemporaryDirectory() as tmp:
        for recipe in RECIPES:
            rows.append((f"int8 QDQ, {recipe[0]}", quantized_bundle(bundle, Path(tmp) / recipe[0].split(",")[0], photos,
                                                                    recipe)))  # fmt: skip
        print(f"{'model':<40} {'AP50:95':>8} {'AP50':>7} {'ms (1 thread, batch 1)':>24}")
        for name, path in rows:
            predictor = Predictor.from_bundle(path, backend="onnxruntime", device="cpu", threads=1)
            result = evaluate_bundle(predictor, coco, str(ann_file))
            print(f"{name:<40} {result.ap50_95:>8.4f} {result.ap50:>7.4f} {latency_ms(predictor):>24.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
