"""One served model at run time: its instances in a worker pool, a batcher in front, the idle direct path, and its
statistics. The engine admits a request and makes one call per image, ``ModelUnit.submit``; everything below that
(the choice of path, decoding, batching, resolving the image's future, Triton's counters) happens here.

Two paths. An image that finds its model idle (nothing queued, nothing else admitted, an instance free) is decoded,
inferred and postprocessed in one call on that instance's thread (``_run_direct``). Otherwise it is decoded where the
decode mode says (``service.batch_exec``) and queued in the batcher, whose batches run on a worker's thread
(``execute``). Imports nothing from ``model``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import Executor
from dataclasses import dataclass

import numpy as np

from service.batch_exec import (
    NOTHING_RAN,
    BatchExecutor,
    BatchOutput,
    DecodeMode,
    Encoded,
    ItemOutput,
    Prepared,
    item_output,
)
from service.batcher import DynamicBatcher, QueuedItem
from service.engine import DetectOptions, DetectResult, ModelInfo, StageTiming
from service.errors import DeadlineExceeded, InferenceFailed, NotReady, Overloaded, ServiceError
from service.imaging import ImageInput
from service.metrics import Metrics
from service.options import OptionResolver, ResolvedOptions
from service.predictor_api import Predictor
from service.settings import Settings
from service.stats import REASON_BACKEND, REASON_CANCELED, REASON_OTHER, REASON_REJECTED, ModelStatistics
from service.watchdog import RuntimeHealth
from service.workers import Worker, WorkerPool

log = logging.getLogger(__name__)


def failure_reason(error: BaseException) -> str:
    """Triton's failure reason for an error."""
    if isinstance(error, Overloaded | NotReady | DeadlineExceeded):
        return REASON_REJECTED
    if isinstance(error, asyncio.CancelledError):
        return REASON_CANCELED
    if isinstance(error, InferenceFailed):
        return REASON_BACKEND
    return REASON_OTHER


@dataclass
class Ticket:
    """One admitted image: whether it still holds a queue reservation (released when the request settles)."""

    reserved: bool = True
    priority_level: int = 0


class ModelUnit:
    """A loaded, warmed model: batcher + worker pool + the idle direct path, and its statistics."""

    def __init__(
        self,
        info: ModelInfo,
        pool: WorkerPool,
        settings: Settings,
        metrics: Metrics,
        load_s: float,
        decode_pool: Executor,
        latency: Worker | None = None,
        decode_mode: DecodeMode = "pool",
    ) -> None:
        self.info = info
        self.pool = pool
        self.latency = latency  # the idle-latency session (CPU), outside the pool: only the direct path uses it
        self._latency_busy = False
        first: Predictor = pool.workers[0].predictor
        self.decode_mode = decode_mode  # resolved by the loader (service.batch_exec.decode_mode_for)
        self._decode_pool = decode_pool
        self.metrics = metrics
        self.load_seconds = load_s
        self.stats = ModelStatistics()
        self.inflight = 0  # admitted and not yet answered
        self.options = OptionResolver(info.name, first, info.class_names)
        self.executor = BatchExecutor(
            first, settings.max_image_pixels, decode_pool, metrics.decode, settings.reduced_decode, self.decode_mode
        )
        # This model's series, resolved once (``labels`` is a locked dict lookup per call).
        self._expired = metrics.expired.labels(info.name)
        self._queue_wait = metrics.queue_wait.labels(info.name)
        self._batch_size = metrics.batch_size.labels(info.name)
        self._inference = metrics.inference.labels(info.name)
        self._postprocess = metrics.postprocess.labels(info.name)
        self.health = RuntimeHealth(metrics.runtime_failures.labels(info.name))
        self._direct_when_idle = settings.direct_when_idle
        self.batcher: DynamicBatcher[Worker] = DynamicBatcher(
            pool=pool,
            execute=self.execute,
            max_batch_size=info.max_batch_size,
            max_queue_delay_s=settings.max_queue_delay_ms / 1000.0,
            capacity=settings.queue_capacity,
            eager_dispatch=settings.eager_dispatch,
            on_expired=lambda item: self._expired.inc(),  # the failure is recorded where the await raises
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

    def resolve_options(self, options: DetectOptions | None) -> ResolvedOptions:
        """Validate options against this model (``InvalidOption`` with a precise message)."""
        return self.options.resolve(options)

    # -- one image ------------------------------------------------------------------------------------------

    async def submit(
        self, image: ImageInput, options: ResolvedOptions, deadline_s: float, ticket: Ticket
    ) -> DetectResult:
        """One admitted image, by the direct path when the model is idle, else through the batcher; records
        its outcome in Triton's statistics. Cancelling the awaiting task drops the image before compute."""
        start_ns = time.perf_counter_ns()
        try:
            worker = self._idle_worker()
            if worker is not None:  # nothing else to do: decode and run on the instance's thread, no batcher
                ticket.reserved = False
                self.batcher.release(1)
                output = await self._run_direct(worker, image, options, deadline_s)
            else:
                output = await self._through_batcher(image, options, deadline_s, ticket)
        except ServiceError as exc:
            self.stats.record_failure(failure_reason(exc), time.perf_counter_ns() - start_ns)
            raise
        except asyncio.CancelledError:
            self.stats.record_failure(REASON_CANCELED, time.perf_counter_ns() - start_ns)
            raise
        except Exception as exc:  # a bug below us: answer 500, never hang
            log.exception("unexpected error serving %s", self.name)
            self.stats.record_failure(REASON_BACKEND, time.perf_counter_ns() - start_ns)
            raise InferenceFailed(f"internal error: {type(exc).__name__}: {exc}") from exc
        self.stats.record_success(time.perf_counter_ns() - start_ns)
        return self._to_result(output)

    async def _through_batcher(
        self, image: ImageInput, options: ResolvedOptions, deadline_s: float, ticket: Ticket
    ) -> ItemOutput:
        payload: Prepared | Encoded
        if self.decode_mode in ("batch", "device"):
            payload = Encoded(image, options)  # the worker decodes it with its batch
        else:
            loop = asyncio.get_running_loop()
            decoding = loop.run_in_executor(self._decode_pool, self.executor.prepare, image, options)
            try:
                payload = await asyncio.wait_for(decoding, timeout=max(deadline_s - loop.time(), 0.0))
            except asyncio.TimeoutError:
                self._expired.inc()
                raise DeadlineExceeded("deadline passed while decoding") from None
        ticket.reserved = False  # submit consumes the reservation, even when it raises
        return await self.batcher.submit(payload, deadline_s, ticket.priority_level)

    def _to_result(self, output: ItemOutput) -> DetectResult:
        dets, names = output.detections, self.info.class_names
        return DetectResult(
            model=self.name,
            model_version=self.info.version,
            width=output.image_hw[1],
            height=output.image_hw[0],
            boxes_xyxy=dets.boxes_xyxy,
            scores=dets.scores,
            class_ids=dets.class_ids,
            class_names=tuple(names[i] if 0 <= i < len(names) else str(i) for i in dets.class_ids.tolist()),
            timing=StageTiming(
                decode_ms=output.decode_ns / 1e6,
                queue_ms=output.queue_ns / 1e6,
                inference_ms=output.infer_ns / 1e6,
                postprocess_ms=output.output_ns / 1e6,
            ),
        )

    # -- batches --------------------------------------------------------------------------------------------

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
                item.future.set_result(item_output(result, prep, wait_ns, output))

    def _run_queued(
        self, predictor: Predictor, items: list[QueuedItem], submitted_ns: int
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
            return ran, [], NOTHING_RAN, behind_ns
        with self.health.call():
            prepared, output = self.executor.decode_and_run(predictor, [item.payload for item in ran])
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

    def _idle_worker(self) -> Worker | None:
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

    async def _run_direct(
        self, worker: Worker, image: ImageInput, options: ResolvedOptions, deadline_s: float
    ) -> ItemOutput:
        """Decode, infer and postprocess one image on ``worker``'s thread (taken by ``_idle_worker``).

        The deadline and cancellation end the wait, not the thread's call: the worker returns to the pool only
        when its call is over, so its session is never used by two threads.
        """
        loop = asyncio.get_running_loop()
        work = loop.run_in_executor(worker.live_executor(), self._run_one, worker.predictor, Encoded(image, options))
        # The caller waits on its own future: cancelling it (client gone) or the deadline timer ends the wait and
        # leaves ``work`` to finish and give the worker back (a bare future and a timer: no wait_for/shield tasks).
        waiter = loop.create_future()
        work.add_done_callback(lambda done: self._direct_done(worker, done, waiter))
        timer = loop.call_at(deadline_s, _expire_waiter, waiter)
        try:
            prepared, output = await waiter
        except DeadlineExceeded:
            self._expired.inc()
            raise
        finally:
            timer.cancel()
        self._record_batch([0], prepared, output)
        result = output.results[0]
        if isinstance(result, ServiceError):
            raise result
        return item_output(result, prepared[0], 0, output)

    def _run_one(self, predictor: Predictor, payload: Encoded) -> tuple[list[Prepared | ServiceError], BatchOutput]:
        try:
            with self.health.call():
                return self.executor.decode_and_run(predictor, [payload])
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

    async def probe(self) -> None:
        """One image of zeros through the runtime on a free instance (the watchdog heals a failing model with
        it). Waits for the thread's call however long it takes: a hung probe shows as an old runtime call."""
        worker = self.pool.try_acquire()
        if worker is None:
            return
        loop = asyncio.get_running_loop()
        work = loop.run_in_executor(worker.live_executor(), self._zeros_through, worker.predictor)
        ended = loop.create_future()

        def done(future: asyncio.Future) -> None:
            self.pool.release(worker)
            ok = not future.cancelled() and future.exception() is None
            if not ended.done():
                ended.set_result(ok)

        work.add_done_callback(done)
        if not await ended:
            log.warning("probe run of model %r failed", self.name)

    def _zeros_through(self, predictor: Predictor) -> None:
        h, w = predictor.meta.input_hw
        with self.health.call():
            predictor.infer(np.zeros((1, 3, h, w), np.float32))


def _expire_waiter(waiter: asyncio.Future) -> None:
    if not waiter.done():
        waiter.set_exception(DeadlineExceeded("deadline passed during compute"))
