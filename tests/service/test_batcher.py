"""DynamicBatcher semantics against a trivial worker pool: flush on size, on delay and eagerly; deadlines fire
while queued; cancelled requests never reach compute; a failing batch fails only its own requests."""

from __future__ import annotations

import asyncio
import time

import pytest

from service.batcher import DynamicBatcher, QueuedItem
from service.errors import DeadlineExceeded, InferenceFailed, Overloaded
from service.workers import Worker, WorkerPool


class Recorder:
    """``execute`` that records batches, resolves each item with its payload, optionally slow or failing."""

    def __init__(self, delay_s: float = 0.0, fail_payload: object = None) -> None:
        self.batches: list[list[object]] = []
        self.delay_s = delay_s
        self.fail_payload = fail_payload
        self.running = self.peak_running = 0  # batches in ``execute`` at once

    async def __call__(self, worker: Worker, items: list[QueuedItem]) -> None:
        live = [it for it in items if not it.future.done()]
        self.batches.append([it.payload for it in live])
        self.running += 1
        self.peak_running = max(self.peak_running, self.running)
        try:
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
        finally:
            self.running -= 1
        if self.fail_payload in [it.payload for it in live]:
            raise RuntimeError("boom")
        for it in live:
            if not it.future.done():
                it.future.set_result(it.payload)


def make(recorder: Recorder, *, workers: int = 1, **kwargs) -> DynamicBatcher:
    pool = WorkerPool([Worker(f"w{i}", "cpu", None) for i in range(workers)])
    kwargs.setdefault("max_batch_size", 4)
    kwargs.setdefault("max_queue_delay_s", 0.05)
    kwargs.setdefault("capacity", 16)
    return DynamicBatcher(pool=pool, execute=recorder, **kwargs)


def submit(batcher: DynamicBatcher, payload: object, timeout_s: float = 10.0) -> asyncio.Future:
    batcher.reserve()
    return batcher.submit(payload, asyncio.get_running_loop().time() + timeout_s)


def test_full_batch_leaves_without_waiting_for_the_delay():
    async def main():
        rec = Recorder()
        b = make(rec, max_queue_delay_s=5.0, eager_dispatch=False)
        b.start()
        t0 = time.monotonic()
        results = await asyncio.gather(*[submit(b, i) for i in range(4)])
        assert results == [0, 1, 2, 3]
        assert rec.batches == [[0, 1, 2, 3]]
        assert time.monotonic() - t0 < 1.0
        await b.stop()

    asyncio.run(main())


def test_partial_batch_leaves_when_the_oldest_waited_the_delay():
    async def main():
        rec = Recorder()
        b = make(rec, max_queue_delay_s=0.15, eager_dispatch=False)
        b.start()
        t0 = time.monotonic()
        assert await asyncio.gather(submit(b, "a"), submit(b, "b")) == ["a", "b"]
        waited = time.monotonic() - t0
        assert 0.14 <= waited < 1.0, waited
        assert rec.batches == [["a", "b"]]
        await b.stop()

    asyncio.run(main())


def test_eager_dispatch_sends_at_once_when_nothing_else_is_on_its_way():
    async def main():
        rec = Recorder()
        b = make(rec, max_queue_delay_s=5.0, eager_dispatch=True)
        b.start()
        t0 = time.monotonic()
        assert await submit(b, "x") == "x"
        assert time.monotonic() - t0 < 0.5
        # A reservation still decoding holds the batch back until it arrives (or the delay passes).
        b.reserve()  # "decoding"
        first = submit(b, 1)
        await asyncio.sleep(0.05)
        assert not first.done()
        second = b.submit(2, asyncio.get_running_loop().time() + 10)
        assert await asyncio.gather(first, second) == [1, 2]
        assert rec.batches[-1] == [1, 2]
        await b.stop()

    asyncio.run(main())


def test_batches_grow_while_the_worker_is_busy():
    async def main():
        rec = Recorder(delay_s=0.1)
        b = make(rec, max_batch_size=8, max_queue_delay_s=0.0)
        b.start()
        first = submit(b, 0)
        await asyncio.sleep(0.02)  # batch [0] is running; the next six queue up meanwhile
        rest = [submit(b, i) for i in range(1, 7)]
        await asyncio.gather(first, *rest)
        assert rec.batches == [[0], [1, 2, 3, 4, 5, 6]]
        await b.stop()

    asyncio.run(main())


def test_queue_capacity_counts_reservations_and_refuses_all_or_nothing():
    async def main():
        b = make(Recorder(), capacity=3)
        b.reserve(2)
        with pytest.raises(Overloaded):
            b.reserve(2)
        b.reserve(1)
        with pytest.raises(Overloaded):
            b.reserve()
        b.release(3)
        assert b.pending == 0

    asyncio.run(main())


def test_deadline_fails_a_queued_request_at_that_moment():
    async def main():
        rec = Recorder(delay_s=0.5)
        b = make(rec, max_batch_size=1, max_queue_delay_s=0.0)
        expired = []
        b._on_expired = expired.append
        b.start()
        blocker = submit(b, "slow")
        await asyncio.sleep(0.01)
        t0 = time.monotonic()
        doomed = submit(b, "late", timeout_s=0.1)
        with pytest.raises(DeadlineExceeded):
            await doomed
        assert 0.09 <= time.monotonic() - t0 < 0.3  # failed when the deadline passed, not after the batch
        await asyncio.sleep(0)
        assert b.depth == 0 and len(expired) == 1
        assert await blocker == "slow"
        await asyncio.sleep(0.05)
        assert rec.batches == [["slow"]]  # the expired request never reached compute
        await b.stop()

    asyncio.run(main())


def test_cancelled_requests_are_dropped_before_compute():
    async def main():
        rec = Recorder(delay_s=0.1)
        b = make(rec, max_batch_size=4, max_queue_delay_s=0.0)
        b.start()
        blocker = submit(b, "first")
        await asyncio.sleep(0.01)
        gone = [submit(b, f"gone{i}") for i in range(3)]
        kept = submit(b, "kept")
        for fut in gone:
            fut.cancel()
        await asyncio.sleep(0)
        assert b.depth == 1
        assert await asyncio.gather(blocker, kept) == ["first", "kept"]
        assert rec.batches == [["first"], ["kept"]]
        await b.stop()

    asyncio.run(main())


def test_a_failing_batch_fails_only_its_requests_and_the_batcher_goes_on():
    async def main():
        rec = Recorder(fail_payload="bad")
        b = make(rec, max_batch_size=2, max_queue_delay_s=0.0)
        b.start()
        bad = [submit(b, "bad"), submit(b, "x")]
        outcomes = await asyncio.gather(*bad, return_exceptions=True)
        assert all(isinstance(o, InferenceFailed) for o in outcomes)
        assert await submit(b, "good") == "good"
        assert not b.task.done()
        await b.stop()

    asyncio.run(main())


def test_batches_spread_over_several_workers():
    async def main():
        rec = Recorder(delay_s=0.1)
        b = make(rec, workers=2, max_batch_size=1, max_queue_delay_s=0.0)
        b.start()
        await asyncio.gather(submit(b, 1), submit(b, 2))
        assert rec.peak_running == 2 and len(rec.batches) == 2  # both ran at once, one batch on each worker
        await b.stop()

    asyncio.run(main())
