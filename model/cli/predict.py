"""``yoloxpai predict IMAGE_OR_DIR... --bundle DIR | --weights FILE``: print detections, optionally draw them.

With ``--weights`` (any checkpoint ``load_model`` reads, released ``.onnx`` included) the weights are exported to a
temporary ONNX bundle first, so predictions go through exactly the serving path.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import tempfile
from collections.abc import Iterator
from pathlib import Path

from model.cli.weights_flags import add_calibration_flag

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the command's flags."""
    parser.add_argument("inputs", nargs="+", help="image files or directories")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--bundle", help="bundle directory (from yoloxpai export)")
    source.add_argument("--weights", help="a checkpoint or Megvii .onnx, exported to a temporary bundle first")
    parser.add_argument("--arch", help="with --weights: the preset, for files that do not record it")
    add_calibration_flag(parser)
    parser.add_argument(
        "--backend", default="auto", choices=["auto", "torchscript", "onnxruntime", "openvino", "tensorrt"]
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--score-threshold", type=float)
    parser.add_argument("--max-detections", type=int)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--save-dir", help="write images with boxes and labels drawn here")
    parser.add_argument("--json", action="store_true", help="print one JSON object per image")


def collect_images(inputs: list[str]) -> list[Path]:
    """Expand directories (sorted, image suffixes only); keep files as given."""
    paths: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            paths += sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        else:
            paths.append(path)
    return paths


@contextlib.contextmanager
def bundle_for(args: argparse.Namespace) -> Iterator[str]:
    """``--bundle`` as given, or ``--weights`` exported to a temporary bundle (removed afterwards)."""
    if args.bundle:
        yield args.bundle
        return
    from model.export.bundle import ExportOptions, export_bundle

    with tempfile.TemporaryDirectory(prefix="yoloxpai-predict-") as tmp:
        options = ExportOptions(formats=("onnx",), max_batch=max(1, args.batch_size), parity_check=False)
        export_bundle(args.weights, Path(tmp) / "bundle", options, arch=args.arch,
                      calibration_images=args.calibration_images)  # fmt: skip
        yield str(Path(tmp) / "bundle")


def run(args: argparse.Namespace) -> int:
    """Predict in batches, print, draw."""
    from model.artifacts import BundleError

    try:
        with bundle_for(args) as bundle:
            return predict(args, bundle)
    except (BundleError, ValueError, RuntimeError, FileNotFoundError) as exc:
        print(f"error: {exc}")
        return 1


def predict(args: argparse.Namespace, bundle: str) -> int:
    """Predict in batches, print, draw (bad options raise ``ValueError``). JPEGs the letterbox shrinks 2x or more
    decode at 1/2, 1/4 or 1/8 as in the server (boxes in original pixels); ``--save-dir`` draws on a full decode."""
    import cv2

    from model.drawing import draw_detections
    from model.predictor import Predictor, load_image

    predictor = Predictor.from_bundle(bundle, backend=args.backend, device=args.device, spin=True)
    predictor.resolve_options(args.score_threshold, args.max_detections)
    paths = collect_images(args.inputs)
    if not paths:
        print("error: no images found")
        return 1
    save_dir = Path(args.save_dir) if args.save_dir else None
    if save_dir:
        save_dir.mkdir(parents=True, exist_ok=True)
    failures = 0
    for start in range(0, len(paths), args.batch_size):
        readable = []
        for path in paths[start : start + args.batch_size]:
            try:
                readable.append((path, load_image(path, "bgr", predictor.meta.input_hw)))
            except ValueError:
                print(f"error: cannot read image {path}")
                failures += 1
        if not readable:
            continue
        results = predictor.predict_decoded([loaded for _, loaded in readable], args.score_threshold,
                                            args.max_detections)  # fmt: skip
        for (path, (decoded, _)), det in zip(readable, results, strict=True):
            if args.json:
                print(json.dumps({"image": str(path), **det.to_dict()}))
            else:
                print(f"{path}: {len(det)} detections")
                for box, score, name in zip(det.boxes_xyxy, det.scores, det.class_names, strict=True):
                    print(f"  {name:<16} {score:.3f}  [{', '.join(f'{v:.1f}' for v in box)}]")
            if save_dir:
                full = decoded.image if decoded.reduction == 1 else cv2.imread(str(path), cv2.IMREAD_COLOR)
                cv2.imwrite(str(save_dir / path.name), draw_detections(full, det))
    return 1 if failures else 0
