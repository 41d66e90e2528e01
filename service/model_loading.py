"""Loading one bundle into a served model: its instances per device (``service.instance_plan``), warm-up, the
batch-size tuning, its ``ModelInfo``, and the ``ModelUnit`` that serves it. Predictors come from
``service.bundles`` (the only import of ``model``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import Executor

import numpy as np

from service.backend_choice import BackendChoice, measure_backends
from service.batch_exec import decode_mode_for
from service.bundles import BundleSpec, ConfigError, PredictorLoader, backend_candidates, model_version
from service.engine import ModelInfo
from service.instance_plan import plan_instances
from service.metrics import Metrics
from service.model_unit import ModelUnit
from service.predictor_api import Predictor
from service.settings import Settings
from service.workers import Worker, WorkerPool

log = logging.getLogger(__name__)


def tune_batch_size(
    predictor: Predictor, max_batch: int, min_time_s: float = 0.25, min_runs: int = 2
) -> tuple[int, dict]:
    """Time ``infer`` at 1, 2, 4, ... max_batch (after warm-up); the smallest size within 5% of the best images/s.

    Runs on the worker's thread. Returns ``(batch size, {size: images/s})``.
    """
    sizes = sorted({*(2**i for i in range(max_batch.bit_length()) if 2**i <= max_batch), max_batch})
    h, w = predictor.meta.input_hw
    rng = np.random.default_rng(0)
    rates = {}
    for size in sizes:
        batch = rng.uniform(0, 255, (size, 3, h, w)).astype(np.float32)  # [B, 3, H, W]
        runs, t0 = 0, time.perf_counter()
        while runs < min_runs or time.perf_counter() - t0 < min_time_s:
            predictor.infer(batch)
            runs += 1
        rates[size] = runs * size / (time.perf_counter() - t0)
    best = max(rates.values())
    return min(size for size, rate in rates.items() if rate >= 0.95 * best), rates


def choose_backend(spec: BundleSpec, settings: Settings, loader: PredictorLoader) -> BackendChoice | None:
    """With ``--backend auto``, the runtime (and precision) to serve, measured on the first device with its batch
    instances' threads when there is more than one candidate; None: load as configured. Blocking."""
    if settings.backend != "auto":
        return None
    device = settings.devices[0]
    candidates = backend_candidates(spec.path, device, settings.precision)
    if candidates is None:
        return None  # not a readable bundle: the loader says why
    if not candidates and settings.precision != "auto":
        raise ConfigError(f"bundle {spec.path} has no artifact that can serve {settings.precision} on {device} "
                          "(a reduced precision must have passed the export's accuracy gate)")  # fmt: skip
    if not candidates:  # only unmeasured reduced-precision artifacts: served as exported, as before the gate
        log.warning("bundle %s: no fp32 or accuracy-gated artifact for %s; serving it as exported", spec.path, device)
        return None
    own = {backend: plan_instances(settings, device, backend=backend) for backend, _ in candidates}
    batch = max(1, min(settings.max_batch_size, 8))  # the sizes a loaded CPU server batches to, bounded load time
    choice = measure_backends(
        candidates,
        lambda b: loader(spec.path, b, device, own[b].threads, own[b].spin),
        batch,
        instances={backend: plan.instances for backend, plan in own.items()},
    )
    log.info("backend for %s: %s", spec.path, choice.describe())
    return choice


async def load_model_unit(
    spec: BundleSpec, settings: Settings, metrics: Metrics, loader: PredictorLoader, decode_pool: Executor
) -> ModelUnit:
    """Load every instance of one bundle (``service.instance_plan`` per device), warm each up, build its unit."""
    t0 = time.perf_counter()
    workers: list[Worker] = []
    latency: Worker | None = None
    latency_note = ""  # for the log line
    choice = await asyncio.to_thread(choose_backend, spec, settings, loader)
    backend = settings.backend if choice is None else choice.backend
    # each runtime's own layout (OpenVINO: one instance with every core)
    plans = {device: plan_instances(settings, device, backend=backend) for device in settings.devices}
    try:  # a bundle that fails to load or warm up leaves no worker thread behind
        for device, plan in plans.items():
            for index in range(plan.instances):
                predictor = await asyncio.to_thread(loader, spec.path, backend, device, plan.threads, plan.spin)
                workers.append(Worker(f"infer-{device}-{index}", device, predictor, depth=plan.depth))
            if plan.latency_instance and latency is None:
                predictor = await asyncio.to_thread(loader, spec.path, backend, device, plan.latency_threads, True)
                latency = Worker(f"latency-{device}", device, predictor)
                latency_note = f" + a latency instance of {plan.latency_threads} threads"
        meta = workers[0].predictor.meta
        bundle_max = int(getattr(meta, "max_batch", 0) or settings.max_batch_size)
        max_batch = min(settings.max_batch_size, bundle_max)
        pool = WorkerPool(workers)
        # Ready only after every instance ran every batch size it may see (first-run allocations, kernel choice).
        await pool.run_each(lambda w: w.predictor.warmup(list(range(1, max_batch + 1))))
        if latency is not None:
            await latency.run(latency.predictor.warmup, [1])  # the direct path runs single images only
        # an explicit decode mode the model cannot run is refused here, at load; device decode's pipelines are
        # built and warmed here too, off the event loop
        every = [w.predictor for w in (*workers, *([latency] if latency is not None else []))]
        decode_mode = await asyncio.to_thread(
            decode_mode_for, settings.decode_mode, settings.devices, every, settings.max_image_pixels
        )
        if settings.tune_batch_size and max_batch > 1:
            max_batch, rates = await workers[0].run(tune_batch_size, workers[0].predictor, max_batch)
            log.info(
                "batch size tuned to %d (images/s by batch size: %s)",
                max_batch,
                {b: round(r) for b, r in rates.items()},
            )
    except BaseException:
        for worker in (*workers, latency):
            if worker is not None:
                worker.close()
        raise
    info = ModelInfo(
        name=spec.name or str(meta.name),
        version=spec.version or model_version(meta, spec.path),
        class_names=tuple(str(c) for c in meta.class_names),
        input_hw=(int(meta.input_hw[0]), int(meta.input_hw[1])),
        backend=str(workers[0].predictor.backend),
        precision=str(getattr(workers[0].predictor, "precision", "fp32")),
        backend_choice=choice if choice is not None and choice.ms_per_image else None,
        devices=settings.devices,
        instances=len(workers),
        max_batch_size=max_batch,
        max_queue_delay_ms=settings.max_queue_delay_ms,
        queue_capacity=settings.queue_capacity,
        score_threshold=float(meta.thresholds.score_threshold),
        default_score_threshold=float(meta.thresholds.default_score_threshold),
        max_detections=int(meta.thresholds.max_detections),
        path=str(spec.path),
    )
    load_s = time.perf_counter() - t0
    log.info(
        "model %s v%s loaded: %s on %s, %d instance(s) of %s thread(s)%s, batch <= %d, %.2fs",
        info.name,
        info.version,
        info.backend,
        ",".join(info.devices),
        info.instances,
        ", ".join(str(plan.threads or "default") for plan in plans.values()),
        latency_note,
        max_batch,
        load_s,
    )
    return ModelUnit(info, pool, settings, metrics, load_s, decode_pool, latency, decode_mode)
