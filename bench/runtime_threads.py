"""ONNX Runtime session layouts on this CPU: threads per session and spinning vs sleeping threads, side by side.

    python bench/runtime_threads.py --bundle model/assets/default_bundle
    python bench/runtime_threads.py --bundle DIR --batch 8 --runs 60

For each layout it times ``Predictor.infer`` on one letterboxed image (batch 1: the latency a lone request sees) and
on a batch (``--batch``: images/s of one session); "per core" scales a single-thread session's images/s by the
cores, the ceiling of one single-thread session per core. This is the measurement behind the server's CPU defaults
(``service.instance_plan``): batch instances of few threads, plus one all-cores spinning session for idle requests.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.machine import describe  # noqa: E402
from service.instance_plan import available_cpus  # noqa: E402


def median_ms(predictor, batch: np.ndarray, runs: int) -> float:
    """Median wall time of ``predictor.infer(batch)`` in milliseconds, after ``runs // 4 + 2`` warm-up calls."""
    for _ in range(runs // 4 + 2):
        predictor.infer(batch)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        predictor.infer(batch)
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000.0


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--batch", type=int, default=8, help="batch size of the throughput column")
    parser.add_argument("--runs", type=int, default=100, help="timed calls at batch 1 (a quarter of it at --batch)")
    args = parser.parse_args(argv)
    from model.predictor import Predictor

    cpus = available_cpus()
    layouts = [(None, False), (None, True)] + ([(1, False)] if cpus > 1 else [])
    print(describe())
    print(f"bundle {args.bundle}, {cpus} usable cores, onnxruntime")
    print(
        f"{'threads':>8} {'threads wait':>13} {'b1 ms':>8} {'b1 img/s':>9} {f'b{args.batch} img/s':>10} {'per core':>9}"
    )
    rows = {}
    for threads, spin in layouts:
        predictor = Predictor.from_bundle(args.bundle, backend="onnxruntime", threads=threads, spin=spin)
        h, w = predictor.meta.input_hw
        one = np.random.default_rng(0).uniform(0, 255, (1, 3, h, w)).astype(np.float32)  # [1, 3, H, W]
        many = np.repeat(one, args.batch, axis=0)  # [B, 3, H, W]
        b1_ms = median_ms(predictor, one, args.runs)
        bn_ms = median_ms(predictor, many, max(args.runs // 4, 3))
        rate = args.batch * 1000.0 / bn_ms
        per_core = f"{rate * cpus:.0f}" if threads == 1 else "-"
        label = str(threads or cpus)
        rows[(threads, spin)] = b1_ms
        print(
            f"{label:>8} {'spin' if spin else 'sleep':>13} {b1_ms:>8.2f} {1000.0 / b1_ms:>9.0f} {rate:>10.0f} "
            f"{per_core:>9}"
        )
    sleeping, spinning = rows[(None, False)], rows[(None, True)]
    print(f"\nall cores, batch 1: spinning threads are {sleeping / spinning:.2f}x as fast as sleeping ones")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
