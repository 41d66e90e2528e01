"""Worker pool: model instances, each with its own backend session and its own inference thread.

One :class:`Worker` = one predictor (ONNX Runtime/OpenVINO session, TensorRT context + CUDA stream, ...) on one
device, always driven by the same single thread, so a session is never used concurrently and GPU state stays on
its thread. The pool hands workers to the batcher, idle ones first, in turn (which spreads batches over devices).
A worker of ``depth`` 2 also takes a batch while it runs one: the second waits in its thread's queue and starts
the moment the first ends, instead of after the event loop has answered the first batch's requests and handed a
new one over (on 2 busy cores that hand-off left each instance idle ~10% of the time). Inference never runs on
the event loop. Imports nothing from ``model``: the predictor is duck-typed.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from service.batcher import WorkerSource

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(eq=False)
class Worker:
    """One model instance: a predictor bound to a device and the one thread that runs it."""

    name: str
    device: str
    predictor: Any
    depth: int = 1  # batches it may hold: the running one plus those queued behind it on its thread
    executor: ThreadPoolExecutor = field(init=False, repr=False)

    closed: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=self.name)

    def live_executor(self) -> ThreadPoolExecutor:
        """The worker's thread, replaced by a new one if it was lost (shut down under a serving worker): a worker
        whose thread is gone would otherwise fail every batch it is given until the process restarts."""
        if self.executor._shutdown and not self.closed:  # noqa: SLF001 (the stdlib exposes no public flag)
            log.warning("worker %s lost its thread; starting a new one", self.name)
            self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=self.name)
        return self.executor

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on this worker's thread without blocking the event loop."""
        return await asyncio.get_running_loop().run_in_executor(self.live_executor(), fn, *args)

    def close(self) -> None:
        """Stop the thread once its current call returns."""
        self.closed = True
        self.executor.shutdown(wait=False, cancel_futures=True)


class WorkerPool(WorkerSource[Worker]):
    """Workers and the batches each holds; ``acquire`` waits for a free slot without polling."""

    def __init__(self, workers: list[Worker]) -> None:
        if not workers:
            raise ValueError("a worker pool needs at least one worker")
        self.workers = tuple(workers)
        self._held = dict.fromkeys(self.workers, 0)  # batches running or queued on each worker's thread
        self._next = 0  # where the search for a free worker starts: takes them in turn
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def idle(self) -> int:
        """Workers holding no batch."""
        return sum(1 for held in self._held.values() if not held)

    def _take(self, max_held: int | None) -> Worker | None:
        # The least busy worker with room (``max_held``: at most this many batches already), in turn among equals.
        best: int | None = None
        n = len(self.workers)
        for index in ((self._next + i) % n for i in range(n)):
            worker = self.workers[index]
            held = self._held[worker]
            if held < worker.depth and (max_held is None or held <= max_held):
                if best is None or held < self._held[self.workers[best]]:
                    best = index
                if held == 0:
                    break
        if best is None:
            return None
        self._held[self.workers[best]] += 1
        self._next = (best + 1) % n
        return self.workers[best]

    async def acquire(self) -> Worker:
        """Take the least busy worker with room for one more batch; wait while none has."""
        while (worker := self._take(None)) is None:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self._wake()  # woken and cancelled at once: pass the turn on
                raise
            finally:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
        return worker

    def try_acquire(self) -> Worker | None:
        """An idle worker now, or ``None``: never waits, never queues behind a running batch."""
        return self._take(0)

    def release(self, worker: Worker) -> None:
        """A batch of ``worker`` ended."""
        if self._held[worker] <= 0:
            raise RuntimeError(f"{worker.name} released more often than taken")
        self._held[worker] -= 1
        self._wake()

    def _wake(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    async def run_each(self, fn: Callable[[Worker], T]) -> list[T]:
        """Run ``fn(worker)`` on every worker's own thread concurrently (warm-up)."""
        return list(await asyncio.gather(*(w.run(fn, w) for w in self.workers)))

    def close(self) -> None:
        """Stop every worker thread."""
        for worker in self.workers:
            worker.close()
