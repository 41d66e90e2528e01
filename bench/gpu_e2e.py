"""The GPU path near the hardware, measured in one run against eager fp32 (the lent H100/H200; docs/benchmarks.md):

    python bench/gpu_e2e.py [--arch yolox-s] [--img-size 640 640] [--batch-sizes 1 8 32] [--runs 30]
                            [--images DIR] [--device cuda:0] [--no-compile]

1. model + NMS with the batch already on the device, outputs read back: eager fp32 (the baseline), TorchScript
   fp32 / fp16 / fp16 channels-last, and ``torch.compile(mode="reduce-overhead")`` (CUDA graphs) of the network in
   fp16 channels-last, one graph per batch size, with the graph's NMS after it;
2. decode + letterbox per image: OpenCV on the host vs nvJPEG (torchvision, batched) + the bundle's letterbox on
   the device (``model.device_pipeline``);
3. end to end, JPEG bytes in -> detections out, in-process: the host path (``Predictor.predict``) vs the device
   pipeline, p50/p99 at batch 1 and images/s at the largest batch.
Random weights unless --weights (speed does not depend on their values); JPEGs from --images (default coco-tiny's
photos when present, else synthetic 640x480). ``--device cpu --no-compile`` runs the same code on a CPU (the CI
smoke test). Exit code 1 if a section fails.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

COCO_TINY = Path(__file__).resolve().parents[2] / "shared" / "data" / "coco-tiny" / "val2017"


def timings_ms(fn, runs: int, sync) -> list[float]:
    """Wall times of ``fn(); sync()`` after two warm-up calls."""
    for _ in range(2):
        fn()
        sync()
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        sync()
        samples.append((time.perf_counter() - start) * 1e3)
    return samples


def p(samples: list[float], q: float) -> float:
    return float(np.percentile(samples, q))


def load_jpegs(folder: Path | None, count: int) -> list[bytes]:
    """``count`` JPEGs: the folder's (cycled), else synthetic 640x480 photos-like noise with shapes."""
    files = sorted(folder.glob("*.jpg"))[:count] if folder and folder.is_dir() else []
    if files:
        data = [f.read_bytes() for f in files]
        return [data[i % len(data)] for i in range(count)]
    rng = np.random.default_rng(0)
    out = []
    for i in range(count):
        image = cv2.GaussianBlur(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8), (9, 9), 0)
        cv2.rectangle(image, (50 + i % 100, 60), (300, 400), (20, 200, 40), -1)
        out.append(cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes())
    return out


def main() -> int:  # noqa: C901 - one script, sections in order
    import torch

    from model.checkpoint import load_model, save_weights
    from model.classes import default_class_names
    from model.device_pipeline import DevicePipeline, nvjpeg_decoder
    from model.export.bundle import ExportOptions, export_bundle
    from model.export.e2e import DecodedNet
    from model.letterbox import preprocess_image
    from model.postprocess import postprocess
    from model.predictor import Predictor
    from model.yolox import build_model

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights")
    parser.add_argument("--arch", default="yolox-s")
    parser.add_argument("--img-size", nargs=2, type=int, default=None)
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 8, 32])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--images", type=Path, default=COCO_TINY)
    parser.add_argument("--device", default="cuda:0")
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile (CUDA graphs)")
    args = parser.parse_args()
    device, on_cuda = args.device, args.device.startswith("cuda")
    if on_cuda and not torch.cuda.is_available():
        print("CUDA is not available: nothing to measure (use --device cpu for the CPU smoke run)")
        return 1
    name = torch.cuda.get_device_name(device) if on_cuda else "CPU"
    print(f"device: {name}, torch {torch.__version__}, nvJPEG decode: {nvjpeg_decoder() is not None and on_cuda}")

    def sync() -> None:
        if on_cuda:
            torch.cuda.synchronize(device)

    work = Path(tempfile.mkdtemp())
    if args.weights:
        weights, arch = Path(args.weights), None
    else:
        model = build_model(args.arch, **({"input_hw": tuple(args.img_size)} if args.img_size else {}))
        weights, arch = work / "random.safetensors", None
        save_weights(weights, model.state_dict(), model.cfg, default_class_names(model.cfg.num_classes))
    precisions = ("fp32", "fp16") if on_cuda else ("fp32",)
    max_batch = max(args.batch_sizes)
    bundles = {}
    for precision in precisions:
        options = ExportOptions(formats=("torchscript",), precision=precision, max_batch=max_batch)
        export_bundle(weights, work / precision, options, arch=arch)
        bundles[precision] = work / precision
    eager, _ = load_model(weights, arch=arch)
    predictors = {
        prec: Predictor.from_bundle(path, backend="torchscript", device=device) for prec, path in bundles.items()
    }
    meta = predictors["fp32"].meta
    nms = meta.thresholds
    hw = tuple(meta.input_hw)
    print(f"model: {meta.arch} {hw[0]}x{hw[1]}, {args.runs} runs per cell")
    status = 0

    # 1. model + NMS, batch on the device
    net = DecodedNet(eager, hw).to(device).eval()

    def eager_run(x):
        with torch.inference_mode():
            out = postprocess(net(x), nms.score_threshold, nms.iou_threshold, nms.max_detections)
            return [o.cpu() for o in out]

    variants = {"eager fp32": eager_run}
    for precision, predictor in predictors.items():
        variants[f"torchscript {precision}"] = predictor.runner.run_tensor
    if on_cuda:
        cl = predictors["fp16"].runner
        cl.module = cl.module.to(memory_format=torch.channels_last)
        variants["torchscript fp16 c-last"] = lambda x, r=cl: r.run_tensor(
            x.contiguous(memory_format=torch.channels_last)
        )
    if not args.no_compile:
        try:
            half_net = DecodedNet(eager, hw).to(device).eval()
            if on_cuda:
                half_net = half_net.half().to(memory_format=torch.channels_last)
            compiled = torch.compile(half_net, mode="reduce-overhead" if on_cuda else "default", dynamic=False)

            def compiled_run(x):
                with torch.inference_mode():
                    x = x.half().contiguous(memory_format=torch.channels_last) if on_cuda else x
                    decoded = compiled(x).float()
                    out = postprocess(decoded, nms.score_threshold, nms.iou_threshold, nms.max_detections)
                    return [o.cpu() for o in out]

            variants["compiled fp16 graphs" if on_cuda else "compiled fp32"] = compiled_run
        except Exception:  # noqa: BLE001 - report and go on: the other rows still count
            traceback.print_exc()
            status = 1
    print("\n1. model + NMS, batch on the device, detections read back (ms per batch, median)")
    print(f"{'variant':<26} {'batch':>5} {'ms/batch':>9} {'img/s':>9} {'vs eager':>9}")
    for b in args.batch_sizes:
        x = torch.rand((b, 3, *hw), device=device) * 255
        base = None
        for label, fn in variants.items():
            try:
                ms = statistics.median(timings_ms(lambda fn=fn, x=x: fn(x), args.runs, sync))
            except Exception:  # noqa: BLE001
                traceback.print_exc()
                status = 1
                continue
            base = ms if base is None else base
            print(f"{label:<26} {b:>5} {ms:>9.2f} {1000 * b / ms:>9.1f} {base / ms:>8.2f}x")

    # 2. decode + letterbox
    fastest = predictors["fp16" if on_cuda else "fp32"]
    pipeline = DevicePipeline(fastest)
    jpegs = load_jpegs(args.images, max_batch)
    first_hw = cv2.imdecode(np.frombuffer(jpegs[0], np.uint8), cv2.IMREAD_COLOR).shape[:2]
    print(f"\n2. decode + letterbox per image, {len(jpegs)} JPEGs (the first {first_hw[1]}x{first_hw[0]})")
    print(f"{'path':<26} {'batch':>5} {'ms/img':>9} {'vs host':>9}")
    for b in args.batch_sizes:
        chunk = jpegs[:b]

        def host(chunk=chunk):
            for data in chunk:
                image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
                preprocess_image(image, hw, meta.convention)

        def on_device(chunk=chunk):
            with torch.inference_mode():
                pipeline.preprocess(pipeline.decode(chunk), "rgb")

        host_ms = statistics.median(timings_ms(host, args.runs, sync)) / b
        device_ms = statistics.median(timings_ms(on_device, args.runs, sync)) / b
        print(f"{'host OpenCV':<26} {b:>5} {host_ms:>9.3f} {1.0:>8.2f}x")
        print(f"{'device decode+letterbox':<26} {b:>5} {device_ms:>9.3f} {host_ms / device_ms:>8.2f}x")

    # 3. end to end
    print(f"\n3. end to end, JPEG bytes -> detections, {fastest.precision} TorchScript")
    print(f"{'path':<26} {'batch':>5} {'p50 ms':>9} {'p99 ms':>9} {'img/s':>9}")
    for b in sorted({1, max_batch}):
        chunk = jpegs[:b]
        for label, fn in (
            ("host decode (Predictor)", lambda chunk=chunk: fastest.predict(chunk)),
            ("device pipeline", lambda chunk=chunk: pipeline.detect(chunk)),
        ):
            samples = timings_ms(fn, args.runs, sync)
            print(f"{label:<26} {b:>5} {p(samples, 50):>9.2f} {p(samples, 99):>9.2f} {1000 * b / p(samples, 50):>9.1f}")
    return status


if __name__ == "__main__":
    raise SystemExit(main())
