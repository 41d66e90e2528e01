"""The engine implementation: admission, deadlines, decode pool, one batcher + worker pool per model, drain.

Request path: ``_admit`` (ready? draining? queue capacity, all or nothing) -> decode + preprocess in the decode
pool (bounded by the deadline) -> ``batcher.submit`` -> the batch runs on a worker thread -> the future resolves.
An image that finds its model idle (nothing queued, nothing else admitted, an instance free) takes the direct path
instead: decode, infer and postprocess in one call on that instance's thread (``ModelRuntime.run_direct``).
Per-model statistics (Triton's counters) and the event metrics are recorded here and in ``runtime``; the front
ends record only their transport-level request metric. Imports ``model`` only through ``service.bundles``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from service import bundles
from service.bundles import ConfigError, PredictorLoader
from service.engine import DetectOptions, DetectResult, Engine, ModelInfo, StageTiming
from service.errors import (
    DeadlineExceeded,
    InferenceFailed,
    InvalidImage,
    InvalidOption,
    ModelNotFound,
    NotReady,
    Overloaded,
    ServiceError,
)
from service.imaging import ImageInput
from service.metrics import Metrics, ModelState
from service.runtime import Encoded, ItemOutput, ModelRuntime, Prepared, ResolvedOptions, load_model_runtime
from service.settings import Settings
from service.stats import REASON_BACKEND, REASON_CANCELED, REASON_OTHER, REASON_REJECTED, StatsSnapshot

log = logging.getLogger(__name__)


def failure_reason(error: BaseException) -> str:
    """Triton's failure reason for an error."""
    if isinstance(error, (Overloaded, NotReady, DeadlineExceeded)):
        return REASON_REJECTED
    if isinstance(error, asyncio.CancelledError):
        return REASON_CANCELED
    if isinstance(error, InferenceFailed):
        return REASON_BACKEND
    return REASON_OTHER


@dataclass
class _Ticket:
    """One admitted image: whether it still holds a queue reservation (released when the request settles)."""

    reserved: bool = True
    priority_level: int = 0


class BatchedEngine(Engine):
    """Serves the configured bundles through per-model dynamic batchers."""

    def __init__(
        self, settings: Settings, *, loader: PredictorLoader | None = None, metrics: Metrics | None = None
    ) -> None:
        self.settings = settings
        self.metrics = metrics or Metrics()
        self._loader = loader or bundles.load_predictor
        self._models: dict[str, ModelRuntime] = {}
        self._default: str | None = None
        self._decode_pool = ThreadPoolExecutor(settings.decode_threads, thread_name_prefix="decode")
        self._ready = False
        self._shutting_down = False
        self._broken: str | None = None  # why a batcher task ended, if one did
        self._draining = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._inflight = 0
        self.metrics.bind(self)  # last: the collector reads the state set up above

    # -- lifecycle -----------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Load and warm every bundle, start the batchers, then report ready."""
        specs = bundles.bundle_specs(self.settings)
        for spec in specs:
            runtime = await load_model_runtime(spec, self.settings, self.metrics, self._loader, self._decode_pool)
            if runtime.name in self._models:
                runtime.close()
                raise ConfigError(f"two bundles are served as {runtime.name!r}: name them with --bundle NAME=PATH")
            self._models[runtime.name] = runtime
        default = self.settings.default_model or next(iter(self._models))
        if default not in self._models:
            raise ConfigError(f"default model {default!r} is not among the served models {sorted(self._models)}")
        self._default = default
        for runtime in self._models.values():
            runtime.batcher.start().add_done_callback(lambda task, name=runtime.name: self._batcher_ended(name, task))
        self._ready = True

    def _batcher_ended(self, name: str, task: asyncio.Task) -> None:
        if task.cancelled() and self._shutting_down:
            return
        # A batcher must never end while serving: stop reporting ready so the orchestrator replaces us.
        reason = "cancelled" if task.cancelled() else repr(task.exception())
        self._broken = f"batcher of model {name!r} ended: {reason}"
        log.error("%s; reporting not ready", self._broken)

    def begin_shutdown(self) -> None:
        """Report not ready (load balancers stop sending); requests are still accepted until ``drain``."""
        self._shutting_down = True

    async def drain(self, timeout_s: float) -> bool:
        """Stop admitting, let streams finish, and wait (bounded) until every admitted request is answered."""
        self._shutting_down = True
        self._draining.set()
        try:
            await asyncio.wait_for(self._idle.wait(), timeout=timeout_s)
        except asyncio.TimeoutError:
            log.warning("drain timeout: %d request(s) still in flight", self._inflight)
            return False
        return True

    async def close(self) -> None:
        """Stop batchers and threads (after ``drain``)."""
        self._shutting_down = True
        for runtime in self._models.values():
            await runtime.batcher.stop()
            runtime.close()
        self._decode_pool.shutdown(wait=False, cancel_futures=True)

    # -- Engine interface ----------------------------------------------------------------------------------

    def is_live(self) -> bool:
        """The process is up."""
        return True

    def is_ready(self) -> bool:
        """Loaded, warmed, batchers alive, not shutting down."""
        return self._ready and not self._shutting_down and self._broken is None

    @property
    def draining(self) -> asyncio.Event:
        """Set when drain begins."""
        return self._draining

    @property
    def inflight(self) -> int:
        """Admitted images not yet answered, over all models."""
        return self._inflight

    def models(self) -> list[ModelInfo]:
        """Loaded models, default first."""
        infos = [r.info for r in self._models.values()]
        infos.sort(key=lambda info: info.name != self._default)
        return infos

    def model_info(self, name: str | None = None) -> ModelInfo:
        """One loaded model."""
        return self._runtime(name).info

    def statistics(self, name: str) -> StatsSnapshot:
        """Per-model statistics snapshot."""
        return self._runtime(name).stats.snapshot()

    def observe_request(self, protocol: str, model: str, code: str, duration_s: float) -> None:
        """Transport-level request metric."""
        self.metrics.observe_request(protocol, model, code, duration_s)

    def metrics_text(self) -> bytes:
        """Prometheus exposition."""
        return self.metrics.render()

    def model_states(self) -> list[ModelState]:
        """Scrape-time state of every model (``metrics.StateSource``)."""
        return [
            ModelState(
                name=r.name,
                version=r.info.version,
                queue_depth=r.batcher.depth,
                inflight=r.inflight,
                pending=r.batcher.pending,
                load_seconds=r.load_seconds,
                stats=r.stats.snapshot(),
            )
            for r in self._models.values()
        ]

    async def detect(
        self,
        image: ImageInput,
        *,
        model: str | None = None,
        options: DetectOptions | None = None,
        timeout_s: float | None = None,
        priority: int = 0,
    ) -> DetectResult:
        """One image through the shared batcher."""
        level = self.priority_level(priority)  # before admission: a refusal must not hold a reservation
        runtime, resolved, deadline_s = self._admit(model, options, timeout_s, 1)
        ticket = _Ticket(priority_level=level)
        try:
            return await self._detect_one(runtime, image, resolved, deadline_s, ticket)
        finally:
            self._settle(runtime, [ticket])

    async def detect_many(
        self,
        images: Sequence[ImageInput],
        *,
        model: str | None = None,
        options: DetectOptions | None = None,
        timeout_s: float | None = None,
        priority: int = 0,
    ) -> list[DetectResult]:
        """Several images, admitted together; the first error cancels the rest."""
        if not images:
            raise InvalidImage("the request holds no image")
        if len(images) == 1:
            return [await self.detect(images[0], model=model, options=options, timeout_s=timeout_s, priority=priority)]
        level = self.priority_level(priority)
        runtime, resolved, deadline_s = self._admit(model, options, timeout_s, len(images))
        tickets = [_Ticket(priority_level=level) for _ in images]
        loop = asyncio.get_running_loop()
        tasks = [
            loop.create_task(self._detect_one(runtime, image, resolved, deadline_s, ticket))
            for image, ticket in zip(images, tickets, strict=True)
        ]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        finally:
            for task in tasks:
                task.cancel()  # no-op for finished ones
            outcomes = await asyncio.gather(*tasks, return_exceptions=True)
            self._settle(runtime, tickets)
        for outcome in outcomes:
            if isinstance(outcome, BaseException) and not isinstance(outcome, asyncio.CancelledError):
                raise outcome
        return list(outcomes)  # type: ignore[arg-type]

    # -- request path --------------------------------------------------------------------------------------

    def _runtime(self, name: str | None) -> ModelRuntime:
        key = name or self._default
        runtime = self._models.get(key) if key else None
        if runtime is None:
            if not self._ready and not self._models:
                raise NotReady("server is not ready: models are loading")
            raise ModelNotFound(f"no model named {name!r}; served: {sorted(self._models)}")
        return runtime

    def priority_level(self, priority: int) -> int:
        """Triton's rule: 1..priority_levels is a level (1 most urgent); 0 or beyond -> the default level."""
        if isinstance(priority, bool) or not isinstance(priority, int) or priority < 0:
            raise InvalidOption(f"priority must be an unsigned integer, got {priority!r}")
        if 1 <= priority <= self.settings.priority_levels:
            return priority
        return self.settings.default_priority_level

    def _timeout_s(self, client_timeout_s: float | None) -> float:
        default_s = self.settings.request_timeout_ms / 1000.0
        return default_s if client_timeout_s is None else min(client_timeout_s, default_s)

    def _admit(
        self, model: str | None, options: DetectOptions | None, timeout_s: float | None, n: int
    ) -> tuple[ModelRuntime, ResolvedOptions, float]:
        runtime = self._runtime(model)
        try:
            if self._draining.is_set():
                self._reject(runtime, "draining", n)
                raise NotReady("server is draining; retry on another replica", draining=True)
            if not self._ready or self._broken is not None:
                self._reject(runtime, "not_ready", n)
                raise NotReady(self._broken or "server is not ready: models are loading")
            resolved = runtime.resolve_options(options)
            try:
                runtime.batcher.reserve(n)
            except Overloaded:
                self._reject(runtime, "queue_full", n)
                raise
        except ServiceError as exc:
            for _ in range(n):
                runtime.stats.record_failure(failure_reason(exc))
            raise
        runtime.inflight += n
        self._inflight += n
        self._idle.clear()
        return runtime, resolved, asyncio.get_running_loop().time() + self._timeout_s(timeout_s)

    def _reject(self, runtime: ModelRuntime, reason: str, n: int) -> None:
        self.metrics.rejected.labels(runtime.name, reason).inc(n)

    def _settle(self, runtime: ModelRuntime, tickets: list[_Ticket]) -> None:
        unsubmitted = sum(t.reserved for t in tickets)
        if unsubmitted:
            runtime.batcher.release(unsubmitted)
        runtime.inflight -= len(tickets)
        self._inflight -= len(tickets)
        if self._inflight == 0:
            self._idle.set()

    async def _detect_one(
        self, runtime: ModelRuntime, image: ImageInput, options: ResolvedOptions, deadline_s: float, ticket: _Ticket
    ) -> DetectResult:
        start_ns = time.perf_counter_ns()
        try:
            worker = runtime.idle_worker()
            if worker is not None:  # nothing else to do: decode and run on the instance's thread, no batcher
                ticket.reserved = False
                runtime.batcher.release(1)
                output = await runtime.run_direct(worker, image, options, deadline_s)
            else:
                output = await self._through_batcher(runtime, image, options, deadline_s, ticket)
        except ServiceError as exc:
            runtime.stats.record_failure(failure_reason(exc), time.perf_counter_ns() - start_ns)
            raise
        except asyncio.CancelledError:
            runtime.stats.record_failure(REASON_CANCELED, time.perf_counter_ns() - start_ns)
            raise
        except Exception as exc:  # a bug below us: answer 500, never hang
            log.exception("unexpected error serving %s", runtime.name)
            runtime.stats.record_failure(REASON_BACKEND, time.perf_counter_ns() - start_ns)
            raise InferenceFailed(f"internal error: {type(exc).__name__}: {exc}") from exc
        runtime.stats.record_success(time.perf_counter_ns() - start_ns)
        return _to_result(runtime, output)

    async def _through_batcher(
        self, runtime: ModelRuntime, image: ImageInput, options: ResolvedOptions, deadline_s: float, ticket: _Ticket
    ) -> ItemOutput:
        payload: Prepared | Encoded
        if runtime.decode_mode == "batch":
            payload = Encoded(image, options)  # the worker decodes it with its batch
        else:
            loop = asyncio.get_running_loop()
            decoding = loop.run_in_executor(self._decode_pool, runtime.prepare, image, options)
            try:
                payload = await asyncio.wait_for(decoding, timeout=max(deadline_s - loop.time(), 0.0))
            except asyncio.TimeoutError:
                self.metrics.expired.labels(runtime.name).inc()
                raise DeadlineExceeded("deadline passed while decoding") from None
        ticket.reserved = False  # submit consumes the reservation, even when it raises
        return await runtime.batcher.submit(payload, deadline_s, ticket.priority_level)


def _to_result(runtime: ModelRuntime, output: ItemOutput) -> DetectResult:
    dets = output.detections
    names = runtime.info.class_names
    class_ids = dets.class_ids
    return DetectResult(
        model=runtime.name,
        model_version=runtime.info.version,
        width=output.image_hw[1],
        height=output.image_hw[0],
        boxes_xyxy=dets.boxes_xyxy,
        scores=dets.scores,
        class_ids=class_ids,
        class_names=tuple(names[i] if 0 <= i < len(names) else str(i) for i in class_ids.tolist()),
        timing=StageTiming(
            decode_ms=output.decode_ns / 1e6,
            queue_ms=output.queue_ns / 1e6,
            inference_ms=output.infer_ns / 1e6,
            postprocess_ms=output.output_ns / 1e6,
        ),
    )
