"""GPU check + latency table: run on a CUDA machine (e.g. the lent H100/H200) as one script.

    python bench/gpu_check.py [--weights CKPT] [--arch yolox-s] [--img-size 640 640] [--batch-sizes 1 8 32]

1. Parity: the TorchScript bundle on CUDA (fp32 and fp16) and, when TensorRT is installed, the TensorRT engine
   (built from the bundle's EfficientNMS ONNX through the engine cache), against eager PyTorch on the CPU, on
   --weights or else the embedded trained default model (a random model detects nothing to compare).
2. Latency: eager PyTorch CUDA fp32 (baseline, same run), TorchScript CUDA fp32/fp16, TensorRT fp16; per batch size:
   ms per batch (model incl. decode + NMS, host<->device copies included), ms per image, images/s.
Exit code 1 if CUDA is unavailable or a parity check fails.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def median_ms(fn, runs: int) -> float:
    """Median wall time of ``fn()`` (it must synchronise itself), after two warm-up calls."""
    fn(), fn()
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1e3)
    return statistics.median(samples)


def main() -> int:
    import torch

    from model.artifacts import default_weights_path
    from model.checkpoint import load_model, read_checkpoint, save_weights
    from model.classes import default_class_names
    from model.export.bundle import ExportOptions, eager_detections, export_bundle
    from model.export.parity import CUDA_FP32_SCORE_TOL, compare_detections, parity_images
    from model.predictor import Predictor, runtime_available
    from model.yolox import build_model

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights")
    parser.add_argument("--arch", default="yolox-s")
    parser.add_argument("--img-size", nargs=2, type=int, default=None)
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 8, 32])
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("CUDA is not available: nothing to check")
        return 1
    print(f"GPU: {torch.cuda.get_device_name(0)}, torch {torch.__version__}, CUDA {torch.version.cuda}")
    work = Path(tempfile.mkdtemp())
    formats = ["torchscript"] + (["tensorrt"] if runtime_available("tensorrt") else [])
    candidates = [("torchscript", "fp32"), ("torchscript", "fp16")]
    if "tensorrt" in formats:
        candidates.append(("tensorrt", "fp16"))

    def export_both(weights: Path, out: Path, arch: str | None) -> dict[str, Path]:
        bundles = {}
        for precision in ("fp32", "fp16"):
            options = ExportOptions(formats=tuple(formats), precision=precision, max_batch=max(args.batch_sizes))
            export_bundle(weights, out / precision, options, arch=arch)
            bundles[precision] = out / precision
        return bundles

    # Parity on a trained model (--weights, else the embedded default): a random one detects nothing to compare.
    parity_weights = Path(args.weights) if args.weights else default_weights_path()
    # Checkpoints that record their config need no arch; official Megvii / EasyCV files do.
    parity_arch = None if isinstance(read_checkpoint(parity_weights).get("config"), dict) else args.arch
    bundles = export_both(parity_weights, work / "parity", parity_arch)
    eager, _ = load_model(parity_weights, arch=parity_arch)
    meta = Predictor.from_bundle(bundles["fp32"], backend="torchscript").meta
    images = parity_images()
    reference = eager_detections(eager, meta, images)
    status = 0
    print(
        f"\nparity vs eager PyTorch (CPU fp32), {meta.arch} {meta.input_hw[0]}x{meta.input_hw[1]}, "
        f"{sum(len(d) for d in reference)} reference detections: counts / max box px / max score"
    )
    for backend, precision in candidates:
        predictor = Predictor.from_bundle(bundles[precision], backend=backend, device="cuda:0")
        report = compare_detections(reference, predictor.predict(images))
        strict = precision == "fp32"
        ok = (
            report.ok(score_tol=CUDA_FP32_SCORE_TOL)
            if strict
            else report.count_mismatches <= 1 and report.max_box_diff_px <= 1.0 and report.max_score_diff <= 0.02
        )
        status |= 0 if ok else 1
        print(f"  {backend:<12} {precision}: {report} -> {'ok' if ok else 'FAILED'}")

    # Latency on --arch (random weights unless --weights): speed does not depend on the weights' values.
    if args.weights is None:
        model = build_model(args.arch, **({"input_hw": tuple(args.img_size)} if args.img_size else {}))
        weights = work / "random.safetensors"
        save_weights(weights, model.state_dict(), model.cfg, default_class_names(80))
        bundles = export_both(weights, work / "latency", None)
        eager, _ = load_model(weights)
        meta = Predictor.from_bundle(bundles["fp32"], backend="torchscript").meta
    predictors = {
        f"{backend} {precision}": Predictor.from_bundle(bundles[precision], backend=backend, device="cuda:0")
        for backend, precision in candidates
    }
    gpu_eager = eager.to("cuda:0").eval()
    print(f"\nlatency, {meta.arch} {meta.input_hw[0]}x{meta.input_hw[1]}, median of {args.runs}")
    print(f"{'runtime':<22} {'batch':>5} {'ms/batch':>9} {'ms/img':>8} {'img/s':>9} {'vs eager':>9}")
    for b in args.batch_sizes:
        batch = np.random.default_rng(0).random((b, 3, *meta.input_hw), dtype=np.float32) * 255

        def run_eager(batch: np.ndarray = batch) -> None:
            with torch.inference_mode():
                gpu_eager(torch.from_numpy(batch).to("cuda:0")).cpu()  # .cpu() synchronises

        base = median_ms(run_eager, args.runs)
        rows = [("eager fp32 (no NMS)", base)]
        for name, predictor in predictors.items():
            rows.append((name, median_ms(lambda p=predictor, x=batch: p.runner.run(x), args.runs)))
        for name, ms in rows:
            print(f"{name:<22} {b:>5} {ms:>9.2f} {ms / b:>8.3f} {1000 * b / ms:>9.1f} {base / ms:>8.2f}x")
    return status


if __name__ == "__main__":
    raise SystemExit(main())
