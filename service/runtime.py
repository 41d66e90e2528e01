"""One served model at run time: its predictor instances, worker pool, batcher, statistics and batch execution.

Blocking work is split by thread. ``run_batch`` (stack, ``predictor.infer``, ``predictor.postprocess`` per image)
runs on the worker's own thread. ``prepare`` (decode + ``predictor.preprocess``) runs where the decode mode says:
``pool`` decodes in the engine's decode pool before an image is queued, overlapping decoding with inference (GPUs);
``batch`` queues the encoded image and the worker decodes its batch (over the decode pool when it holds several)
just before inferring, so decoding and a CPU runtime take turns on the cores instead of contending for them.
The event loop only moves futures. Imports nothing from ``model`` directly (predictors come from
``service.bundles``).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from concurrent.futures import Executor
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np

from service.batcher import DynamicBatcher, QueuedItem
from service.bundles import BundleSpec, PredictorLoader, model_version
from service.engine import DetectOptions, ModelInfo
from service.errors import DeadlineExceeded, InferenceFailed, InvalidOption, ServiceError
from service.imaging import ImageInput, load_image
from service.instance_plan import plan_instances
from service.metrics import Metrics
from service.settings import Settings
from service.stats import ModelStatistics
from service.workers import Worker, WorkerPool

log = logging.getLogger(__name__)


class BatchSizeMismatch(RuntimeError):
    """The backend returned a different number of outputs than inputs."""


@dataclass(frozen=True)
class ResolvedOptions:
    """Options validated against one model, in the predictor's terms."""

    score_threshold: float | None = None
    max_detections: int | None = None
    class_ids: tuple[int, ...] | None = None


@dataclass(frozen=True)
class Prepared:
    """An image ready for batching."""

    tensor: np.ndarray  # float32 [3, H_in, W_in]
    r: float  # letterbox scale (network pixels per image pixel)
    image_hw: tuple[int, int]  # original (height, width)
    options: ResolvedOptions
    decode_ns: int


@dataclass(frozen=True)
class Encoded:
    """An image queued before decoding (decode mode ``batch``): the worker decodes it with its batch."""

    image: ImageInput
    options: ResolvedOptions


@dataclass(frozen=True)
class ItemOutput:
    """What a queued item's future resolves to."""

    detections: Any  # model.predictor.Detections
    image_hw: tuple[int, int]  # original (height, width)
    decode_ns: int
    queue_ns: int
    infer_ns: int
    output_ns: int


DecodeMode = Literal["pool", "batch"]


def resolve_decode_mode(setting: str, devices: tuple[str, ...]) -> DecodeMode:
    """``auto``: ``batch`` when every device is a CPU (decoding would contend with inference for the same cores),
    else ``pool`` (decoding overlaps accelerator compute)."""
    if setting in ("pool", "batch"):
        return setting  # type: ignore[return-value]
    return "batch" if all(d == "cpu" for d in devices) else "pool"


@dataclass(frozen=True)
class BatchOutput:
    """``run_batch``'s result: one entry per input (detections, or the error of that image alone)."""

    results: list[Any]
    input_ns: int
    infer_ns: int
    output_ns: int


_NOTHING_RAN = BatchOutput([], 0, 0, 0)


def tune_batch_size(predictor: Any, max_batch: int, min_time_s: float = 0.25, min_runs: int = 2) -> tuple[int, dict]:
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


def run_batch(predictor: Any, payloads: list[Prepared]) -> BatchOutput:
    """Stack, infer and postprocess one batch. Runs on the worker's thread."""
    t0 = time.perf_counter_ns()
    # [B, 3, H_in, W_in]; a single image is a view, not a copy
    batch = payloads[0].tensor[None] if len(payloads) == 1 else np.stack([p.tensor for p in payloads])
    t1 = time.perf_counter_ns()
    raw = predictor.infer(batch)
    t2 = time.perf_counter_ns()
    if len(raw.num_dets) != len(payloads):
        raise BatchSizeMismatch(f"got {len(raw.num_dets)} outputs for {len(payloads)} inputs")
    results: list[Any] = []
    for index, p in enumerate(payloads):
        try:
            results.append(
                predictor.postprocess(
                    raw,
                    index,
                    p.r,
                    p.image_hw,
                    score_threshold=p.options.score_threshold,
                    max_detections=p.options.max_detections,
                    class_ids=p.options.class_ids,
                )
            )
        except ValueError as exc:  # an option the predictor refuses fails this image only
            results.append(InvalidOption(str(exc)))
    t3 = time.perf_counter_ns()
    return BatchOutput(results, t1 - t0, t2 - t1, t3 - t2)


class ModelRuntime:
    """A loaded, warmed model: instances in a pool, a batcher in front of it, and its statistics."""

    def __init__(
        self,
        info: ModelInfo,
        pool: WorkerPool,
        settings: Settings,
        metrics: Metrics,
        load_s: float,
        decode_pool: Executor,
        latency: Worker | None = None,
    ) -> None:
        self.info = info
        self.pool = pool
        self.latency = latency  # the idle-latency session (CPU), outside the pool: only the direct path uses it
        self._latency_busy = False
        self.decode_mode = resolve_decode_mode(settings.decode_mode, settings.devices)
        self._decode_pool = decode_pool
        self._max_image_pixels = settings.max_image_pixels
        self.metrics = metrics
        self.load_seconds = load_s
        self.stats = ModelStatistics()
        self.inflight = 0  # admitted and not yet answered
        self._preprocessor = pool.workers[0].predictor  # preprocess is thread-safe on any instance
        self._class_index = {name: i for i, name in enumerate(info.class_names)}
        # This model's series, resolved once (``labels`` is a locked dict lookup per call).
        self._queue_wait = metrics.queue_wait.labels(info.name)
        self._batch_size = metrics.batch_size.labels(info.name)
        self._inference = metrics.inference.labels(info.name)
        self._postprocess = metrics.postprocess.labels(info.name)
        self._direct_when_idle = settings.direct_when_idle
        self.batcher: DynamicBatcher[Worker] = DynamicBatcher(
            pool=pool,
            execute=self.execute,
            max_batch_size=info.max_batch_size,
            max_queue_delay_s=settings.max_queue_delay_ms / 1000.0,
            capacity=settings.queue_capacity,
            eager_dispatch=settings.eager_dispatch,
            on_expired=self._on_expired,
        )

    @property
    def name(self) -> str:
        """The served name."""
        return self.info.name

    def close(self) -> None:
        """Stop every instance's thread."""
        self.pool.close()
        if self.latency is not None:
            self.latency.close()

    def _on_expired(self, item: QueuedItem) -> None:
        # The failure itself is recorded where the request's await raises (one place for every outcome).
        self.metrics.expired.labels(self.name).inc()

    def resolve_options(self, options: DetectOptions | None) -> ResolvedOptions:
        """Validate options against this model (``InvalidOption`` with a precise message)."""
        if options is None:
            return ResolvedOptions()
        info = self.info
        threshold = options.score_threshold
        if threshold is not None:
            if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not math.isfinite(threshold):
                raise InvalidOption(f"score_threshold must be a number, got {threshold!r}")
            if not info.score_threshold <= threshold <= 1.0:
                raise InvalidOption(
                    f"score_threshold must be in [{info.score_threshold:g}, 1] for model {info.name!r} "
                    f"(the bundle's minimum is baked in), got {threshold:g}"
                )
            threshold = float(threshold)
        limit = options.max_detections
        if limit is not None:
            if isinstance(limit, bool) or not isinstance(limit, int):
                raise InvalidOption(f"max_detections must be an integer, got {limit!r}")
            if not 1 <= limit <= info.max_detections:
                raise InvalidOption(f"max_detections must be in [1, {info.max_detections}], got {limit}")
        class_ids = None
        if options.classes:
            class_ids = tuple(sorted({self._class_id(c) for c in options.classes}))
        return ResolvedOptions(threshold, limit, class_ids)

    def _class_id(self, value: int | str) -> int:
        if isinstance(value, str):
            if value in self._class_index:
                return self._class_index[value]
            if value.strip().lstrip("-").isdigit():
                value = int(value)
            else:
                raise InvalidOption(f"unknown class {value!r} for model {self.name!r}")
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidOption(f"a class must be an id or a name, got {value!r}")
        if not 0 <= value < len(self.info.class_names):
            raise InvalidOption(f"class id {value} out of range [0, {len(self.info.class_names)})")
        return value

    def prepare(self, image: ImageInput, options: ResolvedOptions) -> Prepared:
        """Decode + preprocess one image. Blocking: runs in the decode pool or on a worker's thread."""
        t0 = time.perf_counter_ns()
        array, channel_order = load_image(image, self._max_image_pixels)
        tensor, r = self._preprocessor.preprocess(array, channel_order=channel_order)
        decode_ns = time.perf_counter_ns() - t0
        self.metrics.decode.observe(decode_ns / 1e9)
        return Prepared(tensor, float(r), (int(array.shape[0]), int(array.shape[1])), options, decode_ns)

    def _prepare_or_error(self, payload: Prepared | Encoded) -> Prepared | ServiceError:
        if isinstance(payload, Prepared):
            return payload
        try:
            return self.prepare(payload.image, payload.options)
        except ServiceError as exc:  # a bad image fails alone; the rest of its batch goes on
            return exc

    def decode_and_run(
        self, predictor: Any, payloads: list[Prepared | Encoded]
    ) -> tuple[list[Prepared | ServiceError], BatchOutput]:
        """Decode what is still encoded, then ``run_batch`` the decodable images. Runs on the worker's thread.

        Several encoded images are decoded in parallel over the decode pool while the runtime's threads are
        idle. Returns each payload's ``Prepared`` (or its error) and the batch output with one result per payload.
        """
        if sum(isinstance(p, Encoded) for p in payloads) > 1:
            prepared = list(self._decode_pool.map(self._prepare_or_error, payloads))
        else:
            prepared = [self._prepare_or_error(p) for p in payloads]
        ok = [p for p in prepared if isinstance(p, Prepared)]
        output = run_batch(predictor, ok) if ok else _NOTHING_RAN
        inferred = iter(output.results)
        results = [p if isinstance(p, ServiceError) else next(inferred) for p in prepared]
        return prepared, replace(output, results=results)

    async def execute(self, worker: Worker, items: list[QueuedItem]) -> None:
        """Run one batch on ``worker`` and resolve its futures (the batcher's ``execute``)."""
        now_s = asyncio.get_running_loop().time()
        ran, prepared, output, behind_ns = await worker.run(
            self._run_queued, worker.predictor, items, time.perf_counter_ns()
        )
        queue_ns = [int((now_s - item.enqueued_s) * 1e9) + behind_ns for item in ran]
        self._record_batch(queue_ns, prepared, output)
        for item, prep, result, wait_ns in zip(ran, prepared, output.results, queue_ns, strict=True):
            if item.future.done():  # expired or cancelled during compute
                continue
            if isinstance(result, ServiceError):
                item.future.set_exception(result)
            else:
                item.future.set_result(_item_output(result, prep, wait_ns, output))

    def _run_queued(
        self, predictor: Any, items: list[QueuedItem], submitted_ns: int
    ) -> tuple[list[QueuedItem], list[Prepared | ServiceError], BatchOutput, int]:
        """``decode_and_run`` for the items still wanted when the batch reaches the worker's thread.

        The one place where cancelled or expired requests are dropped before compute, including those that went
        while the batch waited behind the instance's running one (``Worker.depth``). Reading an asyncio future's
        state off the loop is a plain attribute read; at worst a request ending at this very moment is computed
        and its result dropped. Returns the items that ran, their ``Prepared`` (or error), the batch output and
        the wait on the thread.
        """
        behind_ns = time.perf_counter_ns() - submitted_ns
        ran = [item for item in items if not item.future.done()]
        if not ran:
            return ran, [], _NOTHING_RAN, behind_ns
        prepared, output = self.decode_and_run(predictor, [item.payload for item in ran])
        return ran, prepared, output, behind_ns

    def _record_batch(self, queue_ns: list[int], prepared: list[Prepared | ServiceError], output: BatchOutput) -> None:
        # Like Triton's, queue and compute statistics cover the images that reached compute (a bad image does not).
        inferred = 0
        for wait_ns, prep in zip(queue_ns, prepared, strict=True):
            if isinstance(prep, Prepared):
                inferred += 1
                self.stats.record_queue(wait_ns)
                self._queue_wait.observe(wait_ns / 1e9)
        if not inferred:  # every image failed to decode: nothing ran
            return
        self.stats.record_execution(
            inferred, output.input_ns, output.infer_ns, output.output_ns, wall_ms=int(time.time() * 1000)
        )
        self._batch_size.observe(inferred)
        self._inference.observe(output.infer_ns / 1e9)
        self._postprocess.observe(output.output_ns / 1e9)

    # -- the idle direct path --------------------------------------------------------------------------------

    def idle_worker(self) -> Worker | None:
        """An instance for the direct path, when the caller's one reserved image is all this model has to do.

        Nothing queued and nothing else admitted means no batch could form around this image: decoding it on an
        instance's thread and running it there at once saves the batcher's hand-offs (and, in decode mode
        ``pool``, the decode pool's). The latency instance is taken when no batch runs either, else a free batch
        instance. Under any load this returns ``None`` and the image goes through the batcher.
        """
        if not self._direct_when_idle or self.batcher.depth or self.batcher.pending != 1:
            return None
        if self.latency is not None and not self._latency_busy and self.pool.idle == len(self.pool.workers):
            self._latency_busy = True  # nothing runs at all: the all-cores spinning session is the fastest
            return self.latency
        return self.pool.try_acquire()

    async def run_direct(
        self, worker: Worker, image: ImageInput, options: ResolvedOptions, deadline_s: float
    ) -> ItemOutput:
        """Decode, infer and postprocess one image on ``worker``'s thread (taken by ``idle_worker``).

        The deadline and cancellation end the wait, not the thread's call: the worker returns to the pool only
        when its call is over, so its session is never used by two threads.
        """
        loop = asyncio.get_running_loop()
        work = loop.run_in_executor(worker.executor, self._run_one, worker.predictor, Encoded(image, options))
        # The caller waits on its own future: cancelling it (client gone) or the deadline timer ends the wait and
        # leaves ``work`` to finish and give the worker back (a bare future and a timer: no wait_for/shield tasks).
        waiter = loop.create_future()
        work.add_done_callback(lambda done: self._direct_done(worker, done, waiter))
        timer = loop.call_at(deadline_s, _expire_waiter, waiter)
        try:
            prepared, output = await waiter
        except DeadlineExceeded:
            self.metrics.expired.labels(self.name).inc()
            raise
        finally:
            timer.cancel()
        self._record_batch([0], prepared, output)
        result = output.results[0]
        if isinstance(result, ServiceError):
            raise result
        return _item_output(result, prepared[0], 0, output)

    def _run_one(self, predictor: Any, payload: Encoded) -> tuple[list[Prepared | ServiceError], BatchOutput]:
        try:
            return self.decode_and_run(predictor, [payload])
        except Exception as exc:  # as in the batcher: a failing backend call is a 500 for this request only
            log.exception("direct inference failed")
            raise InferenceFailed(f"inference failed: {type(exc).__name__}: {exc}") from exc

    def _direct_done(self, worker: Worker, done: asyncio.Future, waiter: asyncio.Future) -> None:
        if worker is self.latency:
            self._latency_busy = False
        else:
            self.pool.release(worker)
        if done.cancelled():  # the thread pool shut down before running it
            waiter.cancel()
            return
        error = done.exception()  # retrieved even when nobody waits any more: never "never retrieved"
        if waiter.done():  # expired or cancelled: the result is dropped
            return
        if error is not None:
            waiter.set_exception(error)
        else:
            waiter.set_result(done.result())


def _expire_waiter(waiter: asyncio.Future) -> None:
    if not waiter.done():
        waiter.set_exception(DeadlineExceeded("deadline passed during compute"))


def _item_output(detections: Any, prepared: Prepared | ServiceError, queue_ns: int, output: BatchOutput) -> ItemOutput:
    assert isinstance(prepared, Prepared)  # a result exists only for a decoded image
    return ItemOutput(detections, prepared.image_hw, prepared.decode_ns, queue_ns, output.infer_ns, output.output_ns)


async def load_model_runtime(
    spec: BundleSpec, settings: Settings, metrics: Metrics, loader: PredictorLoader, decode_pool: Executor
) -> ModelRuntime:
    """Load every instance of one bundle (``service.instance_plan`` per device), warm each up, build its runtime."""
    t0 = time.perf_counter()
    workers: list[Worker] = []
    latency: Worker | None = None
    latency_note = ""  # for the log line
    plans = {device: plan_instances(settings, device) for device in settings.devices}
    for device, plan in plans.items():
        for index in range(plan.instances):
            predictor = await asyncio.to_thread(loader, spec.path, settings.backend, device, plan.threads, plan.spin)
            workers.append(Worker(f"infer-{device}-{index}", device, predictor, depth=plan.depth))
        if plan.latency_instance and latency is None:
            predictor = await asyncio.to_thread(loader, spec.path, settings.backend, device, plan.latency_threads, True)
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
    if settings.tune_batch_size and max_batch > 1:
        max_batch, rates = await workers[0].run(tune_batch_size, workers[0].predictor, max_batch)
        log.info(
            "batch size tuned to %d (images/s by batch size: %s)", max_batch, {b: round(r) for b, r in rates.items()}
        )
    first = workers[0].predictor
    info = ModelInfo(
        name=spec.name or str(meta.name),
        version=model_version(meta, spec.path),
        class_names=tuple(str(c) for c in meta.class_names),
        input_hw=(int(meta.input_hw[0]), int(meta.input_hw[1])),
        backend=str(first.backend),
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
    return ModelRuntime(info, pool, settings, metrics, load_s, decode_pool, latency)
