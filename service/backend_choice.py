"""``--backend auto``: measure each runtime that may serve a bundle on this machine and keep the fastest.

The candidates (``service.bundles.backend_candidates``) are the bundle's fp32 artifacts and its reduced-precision
ones that passed the export's accuracy gate. Each is loaded with the threads its instances will have, warmed up at
the batch size the server batches to, and timed in alternating rounds (A B A B ...: a machine that slows down or
speeds up during the measurement biases no candidate); the best round of each counts. The choice and every
measurement are logged and shown in ``/v1/models``. Blocking: run it off the event loop.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from service.predictor_api import Predictor

ROUNDS = 2
MIN_ROUND_S = 0.25
MIN_RUNS = 2


@dataclass(frozen=True)
class BackendChoice:
    """What ``--backend auto`` chose and why.

    Args:
        backend, precision: the winner.
        batch: the batch size every candidate was timed at.
        ms_per_image: ``"backend/precision"`` -> best round's milliseconds per image (empty: nothing to choose).
    """

    backend: str
    precision: str
    batch: int = 0
    ms_per_image: dict[str, float] = field(default_factory=dict)

    def describe(self) -> str:
        """One log line."""
        if not self.ms_per_image:
            return f"{self.backend}/{self.precision} (the only candidate)"
        timings = ", ".join(f"{k} {v:.2f}" for k, v in self.ms_per_image.items())
        return f"{self.backend}/{self.precision}, fastest at batch {self.batch} (ms per image: {timings})"


def _round_ms_per_image(predictor: Predictor, batch: np.ndarray) -> float:
    runs, start = 0, time.perf_counter()
    while runs < MIN_RUNS or time.perf_counter() - start < MIN_ROUND_S:
        predictor.infer(batch)
        runs += 1
    return (time.perf_counter() - start) * 1e3 / (runs * batch.shape[0])


def measure_backends(
    candidates: list[tuple[str, str]],
    load: Callable[[str], Predictor],
    batch: int,
    instances: dict[str, int] | None = None,
) -> BackendChoice:
    """Time every ``(backend, precision)`` candidate at ``batch`` images; the fastest per image wins (ties: the
    earlier candidate, i.e. the preference order). ``load(backend)`` builds a predictor as one of its instances
    would be; ``instances[backend]``: how many such instances would share the work (one 1-thread ONNX Runtime
    session per core against one OpenVINO session on every core), dividing its time per image."""
    if len(candidates) == 1:
        return BackendChoice(*candidates[0])
    predictors = {candidate: load(candidate[0]) for candidate in candidates}
    h, w = next(iter(predictors.values())).meta.input_hw
    images = np.random.default_rng(0).uniform(0, 255, (batch, 3, h, w)).astype(np.float32)  # [B, 3, H, W]
    best = dict.fromkeys(candidates, float("inf"))
    try:
        for predictor in predictors.values():
            predictor.warmup([batch])
        for _ in range(ROUNDS):
            for candidate, predictor in predictors.items():
                best[candidate] = min(best[candidate], _round_ms_per_image(predictor, images))
    finally:
        predictors.clear()  # the measuring instances are freed; the served ones are loaded afresh
    for candidate in candidates:
        best[candidate] /= (instances or {}).get(candidate[0], 1)
    winner = min(candidates, key=lambda c: best[c])
    timings = {f"{b}/{p}": round(ms, 3) for (b, p), ms in best.items()}
    return BackendChoice(winner[0], winner[1], batch, timings)
