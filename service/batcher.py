"""Dynamic batcher: a bounded queue of futures per model, drained into batches by one event-driven task.

Semantics (pull model, like Triton's dynamic batcher):

* Admission: ``reserve(n)`` claims queue capacity before decoding (so a full queue answers 503 without spending
  CPU on the image); ``submit`` turns a reservation into a queued item; ``release`` returns an unused one.
* A batch is formed when an instance is free and the queue holds ``max_batch_size`` items, or its oldest item has
  waited ``max_queue_delay_s`` (a loop timer, never polling), or (``eager_dispatch``) every admitted request is
  already queued, so waiting could not grow the batch.
* Priority (Triton's ``priority_levels``): each item has a level, lower = more urgent; a batch takes items level by
  level, oldest first within a level. Strict, like Triton: a steady stream of urgent work can starve lower levels
  until their deadlines expire.
* Each item has a deadline timer: when it fires while the item is queued, the item leaves the queue and fails at
  that moment; while the item is computing, its future fails and the result is dropped.
* An item whose future is cancelled (client gone) leaves the queue at once and never reaches compute.
* Executing a batch is the caller's ``execute(worker, items)`` coroutine, run as its own task; an exception there
  fails that batch's futures only, and the batcher keeps going.

Imports nothing from ``model``; the worker type is opaque here.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from service.errors import DeadlineExceeded, InferenceFailed, NotReady, Overloaded

log = logging.getLogger(__name__)

W = TypeVar("W")


@dataclass(eq=False)
class QueuedItem:
    """One request in the batcher: its payload, future and timing (event-loop clock, seconds)."""

    payload: Any
    future: asyncio.Future
    enqueued_s: float
    deadline_s: float
    priority_level: int = 0  # lower leaves the queue first
    queued: bool = True
    timer: asyncio.TimerHandle | None = field(default=None, repr=False)


class WorkerSource(Protocol[W]):
    """What the batcher needs from a worker pool (see ``service.workers.WorkerPool``)."""

    async def acquire(self) -> W:
        """Wait for an idle worker and take it."""
        ...

    def release(self, worker: W) -> None:
        """Give a worker back."""
        ...


class DynamicBatcher(Generic[W]):
    """Per-model queue of futures and the task that turns it into batches."""

    def __init__(
        self,
        *,
        pool: WorkerSource[W],
        execute: Callable[[W, list[QueuedItem]], Awaitable[None]],
        max_batch_size: int,
        max_queue_delay_s: float,
        capacity: int,
        eager_dispatch: bool = True,
        on_expired: Callable[[QueuedItem], None] | None = None,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        if max_queue_delay_s < 0:
            raise ValueError(f"max_queue_delay_s must be >= 0, got {max_queue_delay_s}")
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.max_batch_size = max_batch_size
        self.max_queue_delay_s = max_queue_delay_s
        self.capacity = capacity
        self.eager_dispatch = eager_dispatch
        self._pool = pool
        self._execute = execute
        self._on_expired = on_expired
        self._levels: dict[int, deque[QueuedItem]] = {}  # priority level -> FIFO of its queued items
        self._depth = 0
        self._reserved = 0  # admitted, still decoding: counted against capacity, not yet queued
        self._changed = asyncio.Event()  # queue or reservations changed: re-check the dispatch condition
        self._running: set[asyncio.Task] = set()
        self._task: asyncio.Task | None = None

    # -- admission -----------------------------------------------------------------------------------------

    @property
    def depth(self) -> int:
        """Items waiting in the queue."""
        return self._depth

    @property
    def pending(self) -> int:
        """Admitted items not yet executing (reserved + queued)."""
        return self._reserved + self._depth

    def reserve(self, n: int = 1) -> None:
        """Claim capacity for ``n`` requests, or raise ``Overloaded`` (all or nothing)."""
        if self.pending + n > self.capacity:
            raise Overloaded(f"queue is full ({self.pending} of {self.capacity} requests pending)")
        self._reserved += n

    def release(self, n: int = 1) -> None:
        """Return reservations that will not be submitted (decode failed, client left)."""
        self._reserved -= n
        if self._depth:
            self._changed.set()  # eager dispatch of the queued items may no longer need to wait for these

    def submit(self, payload: Any, deadline_s: float, priority_level: int = 0) -> asyncio.Future:
        """Queue one reserved request; the returned future resolves with ``execute``'s result for it.

        ``priority_level``: lower levels are taken first when a batch is formed.
        """
        if self._task is None or self._task.done():
            self.release()
            raise NotReady("the batcher is not running")
        loop = asyncio.get_running_loop()
        self._reserved -= 1
        item = QueuedItem(payload, loop.create_future(), loop.time(), deadline_s, priority_level)
        item.timer = loop.call_at(deadline_s, self._expire, item)
        item.future.add_done_callback(lambda _f, it=item: self._on_done(it))
        self._levels.setdefault(priority_level, deque()).append(item)
        self._depth += 1
        self._changed.set()
        return item.future

    def _on_done(self, item: QueuedItem) -> None:
        # Resolved, failed or cancelled: stop the timer; a cancelled item still queued leaves now.
        if item.timer is not None:
            item.timer.cancel()
        if item.queued:
            item.queued = False
            self._levels[item.priority_level].remove(item)
            self._depth -= 1
            self._changed.set()

    def _oldest_enqueued_s(self) -> float:
        return min(level[0].enqueued_s for level in self._levels.values() if level)

    def _pop(self) -> QueuedItem:
        # The oldest item of the most urgent non-empty level (a handful of levels: a scan is cheapest).
        level = self._levels[min(key for key, items in self._levels.items() if items)]
        item = level.popleft()
        item.queued = False
        self._depth -= 1
        return item

    def _expire(self, item: QueuedItem) -> None:
        if item.future.done():
            return
        where = "in the queue" if item.queued else "during inference"
        item.future.set_exception(DeadlineExceeded(f"deadline passed {where}"))
        if self._on_expired is not None:
            self._on_expired(item)

    # -- lifecycle -----------------------------------------------------------------------------------------

    def start(self) -> asyncio.Task:
        """Start the batching task (on the running loop)."""
        if self._task is not None:
            raise RuntimeError("batcher already started")
        self._task = asyncio.get_running_loop().create_task(self._run(), name="batcher")
        return self._task

    @property
    def task(self) -> asyncio.Task | None:
        """The batching task (its end means this model can no longer serve)."""
        return self._task

    async def stop(self, timeout_s: float | None = None) -> bool:
        """Stop forming batches, fail what is still queued, wait (at most ``timeout_s``) for running batches;
        returns whether they all ended. A batch still running is left to finish on its own, never cancelled:
        cancelling it would leave its requests without an answer."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        while self._depth:
            item = self._pop()
            if not item.future.done():
                item.future.set_exception(NotReady("server is shutting down"))
        if self._running:
            _, pending = await asyncio.wait(set(self._running), timeout=timeout_s)
            return not pending
        return True

    # -- batching loop -------------------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            while not self._depth:
                self._changed.clear()
                await self._changed.wait()
            # Take a worker first: while all are busy the queue keeps filling, so the batch grows under load.
            worker = await self._pool.acquire()
            try:
                items = await self._collect()
            except BaseException:
                self._pool.release(worker)
                raise
            if not items:  # everything queued was cancelled or expired while we waited
                self._pool.release(worker)
                continue
            task = asyncio.get_running_loop().create_task(self._run_batch(worker, items), name="batch")
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    def _should_dispatch(self, now_s: float) -> bool:
        if self._depth >= self.max_batch_size:
            return True
        if self.eager_dispatch and self._reserved == 0:
            return True  # nothing else is on its way: waiting cannot grow the batch
        return now_s - self._oldest_enqueued_s() >= self.max_queue_delay_s

    async def _collect(self) -> list[QueuedItem]:
        loop = asyncio.get_running_loop()
        while self._depth and not self._should_dispatch(loop.time()):
            remaining_s = self._oldest_enqueued_s() + self.max_queue_delay_s - loop.time()
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), timeout=max(remaining_s, 0.0))
            except asyncio.TimeoutError:
                break
        items = []
        while self._depth and len(items) < self.max_batch_size:
            items.append(self._pop())
        return items

    async def _run_batch(self, worker: W, items: list[QueuedItem]) -> None:
        try:
            await self._execute(worker, items)
        except Exception as exc:  # a failing batch fails only its own requests
            log.exception("batch of %d failed", len(items))
            error = InferenceFailed(f"inference failed: {type(exc).__name__}: {exc}")
            for item in items:
                if not item.future.done():
                    item.future.set_exception(error)
        finally:
            self._pool.release(worker)
