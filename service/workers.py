"""Worker pool: model instances, each with its own backend session and its own inference thread.

One :class:`Worker` = one predictor (ONNX Runtime/OpenVINO session, TensorRT context + CUDA stream, ...) on one
device, always driven by the same single thread, so a session is never used concurrently and GPU state stays on
its thread. The pool hands idle workers to the batcher (FIFO, which spreads batches over devices). Inference
never runs on the event loop. Imports nothing from ``model``: the predictor is duck-typed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from service.batcher import WorkerSource

T = TypeVar("T")


@dataclass(eq=False)
class Worker:
    """One model instance: a predictor bound to a device and the one thread that runs it."""

    name: str
    device: str
    predictor: Any
    executor: ThreadPoolExecutor = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=self.name)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on this worker's thread without blocking the event loop."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    def close(self) -> None:
        """Stop the thread once its current call returns."""
        self.executor.shutdown(wait=False, cancel_futures=True)


class WorkerPool(WorkerSource[Worker]):
    """Idle workers in an asyncio queue: ``acquire`` waits for one without polling."""

    def __init__(self, workers: list[Worker]) -> None:
        if not workers:
            raise ValueError("a worker pool needs at least one worker")
        self.workers = tuple(workers)
        self._idle: asyncio.Queue[Worker] = asyncio.Queue()
        for worker in workers:
            self._idle.put_nowait(worker)

    @property
    def idle(self) -> int:
        """Workers not running a batch."""
        return self._idle.qsize()

    async def acquire(self) -> Worker:
        """Wait for an idle worker."""
        return await self._idle.get()

    def try_acquire(self) -> Worker | None:
        """An idle worker now, or ``None`` (never waits; nobody waiting is bypassed, as an idle one exists)."""
        try:
            return self._idle.get_nowait()
        except asyncio.QueueEmpty:
            return None

    def release(self, worker: Worker) -> None:
        """Return a worker after its batch."""
        self._idle.put_nowait(worker)

    async def run_each(self, fn: Callable[[Worker], T]) -> list[T]:
        """Run ``fn(worker)`` on every worker's own thread concurrently (warm-up)."""
        return list(await asyncio.gather(*(w.run(fn, w) for w in self.workers)))

    def close(self) -> None:
        """Stop every worker thread."""
        for worker in self.workers:
            worker.close()
