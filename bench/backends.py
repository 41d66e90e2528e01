"""Backend benchmark: every available backend of a bundle vs eager PyTorch, in the same run.

    python bench/backends.py --bundle DIR [--weights CKPT] [--batch-sizes 1 4 8 16] [--runs 5] [--threads 2]
    python bench/backends.py --make-bundle yolox-s --img-size 640 640      # random weights, all CPU formats

For each backend and batch size: ms per image, images/s, and the split preprocess (letterbox + normalise, NumPy)
/ model (network + decode + NMS: the bundle graph, or eager PyTorch + our torch NMS) / postprocess (map boxes back,
filter). The eager baseline uses ``--weights`` or, failing that, the weights inside the bundle's TorchScript graph.
Medians over ``--runs`` after one warm-up per batch size. Compare rows of one run only (CPU timings drift).
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

from bench.machine import describe  # noqa: E402
from model.artifacts import load_bundle_meta  # noqa: E402
from model.export.parity import parity_images  # noqa: E402
from model.predictor import BACKEND_FORMATS, Predictor, runtime_available  # noqa: E402


def bench_images(count: int) -> list[np.ndarray]:
    """``count`` 1280x720-class BGR images (parity images, resized and cycled)."""
    import cv2

    base = [cv2.resize(im, (1280, 720)) for im in parity_images(seed=11)]
    return [base[i % len(base)] for i in range(count)]


def eager_model(bundle: Path, weights: str | None):
    """The eager PyTorch model: from ``weights``, or rebuilt from the TorchScript graph's (fused) weights."""
    import torch

    from model.checkpoint import load_model
    from model.config import YoloxConfig
    from model.fuse import reparameterize
    from model.yolox import build_from_config

    if weights:
        return reparameterize(load_model(weights)[0])
    meta = load_bundle_meta(bundle, verify=False)
    if "torchscript" not in meta.models:
        raise SystemExit("eager baseline: pass --weights (the bundle has no TorchScript graph to read weights from)")
    scripted = torch.jit.load(str(bundle / meta.models["torchscript"].file))
    state = {k.removeprefix("net.model."): v for k, v in scripted.state_dict().items() if k.startswith("net.model.")}
    model = reparameterize(build_from_config(YoloxConfig.from_dict(meta.config)))
    model.load_state_dict(state)
    return model.eval()


class EagerRunner:
    """Eager network + torch postprocess, shaped like a bundle runner."""

    backend = "eager-pytorch"

    def __init__(self, model, meta) -> None:
        import torch

        from model.postprocess import postprocess
        from model.runtime import RawOutput

        self._torch, self._post, self._raw = torch, postprocess, RawOutput
        self.model, self.t = model, meta.thresholds

    def run(self, batch: np.ndarray):
        t = self.t
        with self._torch.inference_mode():
            out = self._post(
                self.model(self._torch.from_numpy(batch)), t.score_threshold, t.iou_threshold, t.max_detections,
                t.class_agnostic, t.pre_nms_topk,
            )  # fmt: skip
        return self._raw(*(o.numpy() for o in out))


def time_predictor(predictor: Predictor, images: list[np.ndarray], runs: int) -> tuple[float, float, float]:
    """Median (preprocess, model, postprocess) seconds for one batch of ``images``."""
    pre, mid, post = [], [], []
    for i in range(runs + 1):
        t0 = time.perf_counter()
        prepared = [predictor.preprocess(im) for im in images]
        batch = np.stack([x for x, _ in prepared])
        t1 = time.perf_counter()
        raw = predictor.runner.run(batch)
        t2 = time.perf_counter()
        for j, (im, (_, r)) in enumerate(zip(images, prepared, strict=True)):
            predictor.postprocess(raw, j, r, im.shape[:2])
        t3 = time.perf_counter()
        if i:  # the first run warms this batch size up
            pre.append(t1 - t0), mid.append(t2 - t1), post.append(t3 - t2)
    return statistics.median(pre), statistics.median(mid), statistics.median(post)


def make_bundle(arch: str, input_hw: tuple[int, int] | None, max_batch: int, out: Path) -> Path:
    """Export a random-weight ``arch`` with every CPU format (for speed only: its detections are meaningless)."""
    from model.checkpoint import save_weights
    from model.classes import default_class_names
    from model.export.bundle import ExportOptions, export_bundle
    from model.yolox import build_model

    model = build_model(arch, **({"input_hw": input_hw} if input_hw else {}))
    weights = out.parent / "random.safetensors"
    save_weights(weights, model.state_dict(), model.cfg, default_class_names(model.cfg.num_classes))
    options = ExportOptions(formats=("torchscript", "onnx", "openvino"), max_batch=max_batch, parity_check=False)
    export_bundle(weights, out, options)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--bundle", type=Path)
    source.add_argument("--make-bundle", metavar="ARCH", help="export a random-weight preset first")
    parser.add_argument("--img-size", nargs=2, type=int, metavar=("H", "W"))
    parser.add_argument("--weights", help="checkpoint for the eager baseline")
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 4, 8, 16])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--backends", nargs="+", default=["torchscript", "onnxruntime", "openvino"])
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    bundle = args.bundle
    if args.make_bundle:
        bundle = make_bundle(
            args.make_bundle,
            tuple(args.img_size) if args.img_size else None,
            max(args.batch_sizes),
            Path(tempfile.mkdtemp()) / "bundle",
        )
    meta = load_bundle_meta(bundle)
    runners: dict[str, Predictor] = {}
    for backend in args.backends:
        if runtime_available(backend) and any(f in meta.models for f in BACKEND_FORMATS[backend]):
            runners[backend] = Predictor.from_bundle(bundle, backend=backend, threads=args.threads, spin=True)
    eager = Predictor(bundle, meta, EagerRunner(eager_model(bundle, args.weights), meta), args.threads, True)
    runners = {"eager-pytorch": eager, **runners}

    print(describe())
    print(f"bundle {bundle} ({meta.arch}, input {meta.input_hw[0]}x{meta.input_hw[1]}, {args.threads} threads)")
    header = (
        f"{'backend':<14} {'batch':>5} {'ms/img':>8} {'img/s':>8} {'pre ms':>8} {'model ms':>9} {'post ms':>8} "
        f"{'vs eager':>9}"
    )
    print(header)
    print("-" * len(header))
    baseline: dict[int, float] = {}
    for batch_size in args.batch_sizes:
        if batch_size > meta.max_batch:
            print(f"(skipping batch {batch_size}: bundle max batch is {meta.max_batch})")
            continue
        images = bench_images(batch_size)
        for name, predictor in runners.items():
            pre, mid, post = time_predictor(predictor, images, args.runs)
            per_image = (pre + mid + post) / batch_size
            baseline.setdefault(batch_size, per_image)
            split_ms = [v * 1e3 / batch_size for v in (pre, mid, post)]
            print(
                f"{name:<14} {batch_size:>5} {per_image * 1e3:>8.1f} {1 / per_image:>8.1f} {split_ms[0]:>8.2f} "
                f"{split_ms[1]:>9.1f} {split_ms[2]:>8.2f} {baseline[batch_size] / per_image:>8.2f}x"
            )


if __name__ == "__main__":
    main()
