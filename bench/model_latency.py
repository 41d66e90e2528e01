"""CPU forward latency per preset and input size (eager PyTorch), median of N runs after warm-up.

    python bench/model_latency.py --presets yolox-nano yolox-s --sizes 320 416 640 --runs 10 --threads 2

Prints one table row per (preset, size, form): form ``train`` is the un-fused network, ``deploy`` the
reparameterised one (RepVGG merged, BN folded) — the same run measures both, so their ratio is meaningful.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.machine import describe  # noqa: E402
from model.config import VARIANTS  # noqa: E402
from model.fuse import reparameterize  # noqa: E402
from model.yolox import build_model  # noqa: E402


def median_ms(model: torch.nn.Module, x: torch.Tensor, runs: int, warmup: int) -> float:
    """Median wall time of ``model(x)`` in milliseconds."""
    with torch.inference_mode():
        for _ in range(warmup):
            model(x)
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            model(x)
            times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["yolox-nano", "yolox-tiny", "yolox-s", "yolox-pai-s"])
    parser.add_argument("--sizes", nargs="+", type=int, default=None, help="square input sides (default: preset's)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(describe())
    print(f"torch {torch.__version__}, {args.threads} threads, batch {args.batch}, median of {args.runs}")
    print(f"{'preset':<24} {'input':>9} {'train ms':>9} {'deploy ms':>10} {'speed-up':>9}")
    for name in args.presets:
        if name not in VARIANTS:
            raise SystemExit(f"unknown preset {name!r}")
        model = build_model(name).eval()
        deploy = reparameterize(copy.deepcopy(model))
        for side in args.sizes or [VARIANTS[name].input_hw[0]]:
            x = torch.rand(args.batch, 3, side, side) * 255
            train_ms = median_ms(model, x, args.runs, args.warmup)
            deploy_ms = median_ms(deploy, x, args.runs, args.warmup)
            print(f"{name:<24} {side:>4}x{side:<4} {train_ms:>9.1f} {deploy_ms:>10.1f} {train_ms / deploy_ms:>8.2f}x")


if __name__ == "__main__":
    main()
