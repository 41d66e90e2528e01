"""WorkerPool: idle workers first and in turn, a second batch queued behind a running one (depth 2), waiters woken
one per freed slot, and the direct path's ``try_acquire`` that never queues behind a batch."""

from __future__ import annotations

import asyncio

import pytest

from service.workers import Worker, WorkerPool


def pool_of(n: int, depth: int) -> WorkerPool:
    return WorkerPool([Worker(f"w{i}", "cpu", None, depth=depth) for i in range(n)])


def test_idle_workers_are_taken_first_and_in_turn_then_a_second_batch_each():
    async def main():
        pool = pool_of(2, depth=2)
        a, b = pool.workers
        assert [await pool.acquire() for _ in range(4)] == [a, b, a, b]  # both idle ones before any queues
        assert pool.idle == 0
        pool.release(b)
        pool.release(b)
        assert pool.idle == 1
        assert await pool.acquire() is b  # the least busy: b holds nothing, a holds two
        pool.close()

    asyncio.run(main())


def test_a_full_pool_makes_acquire_wait_until_a_batch_ends():
    async def main():
        pool = pool_of(1, depth=2)
        (w,) = pool.workers
        assert [await pool.acquire(), await pool.acquire()] == [w, w]
        waiting = asyncio.ensure_future(pool.acquire())
        await asyncio.sleep(0.05)
        assert not waiting.done()  # depth 2: no third batch on one worker
        pool.release(w)
        assert await asyncio.wait_for(waiting, 1.0) is w
        with pytest.raises(RuntimeError, match="released more often"):
            for _ in range(3):
                pool.release(w)
        pool.close()

    asyncio.run(main())


def test_try_acquire_takes_only_an_idle_worker():
    async def main():
        pool = pool_of(1, depth=2)
        (w,) = pool.workers
        assert pool.try_acquire() is w
        assert pool.try_acquire() is None  # a slot is free, but behind a running batch: not for the direct path
        assert await pool.acquire() is w  # the batcher may queue there
        pool.close()

    asyncio.run(main())


def test_a_cancelled_waiter_passes_its_wake_up_on():
    async def main():
        pool = pool_of(1, depth=1)
        (w,) = pool.workers
        await pool.acquire()
        first = asyncio.ensure_future(pool.acquire())
        second = asyncio.ensure_future(pool.acquire())
        await asyncio.sleep(0.01)
        pool.release(w)  # wakes ``first`` ...
        first.cancel()  # ... which is cancelled before it runs: the slot must reach ``second``
        assert await asyncio.wait_for(second, 1.0) is w
        assert first.cancelled()
        pool.close()

    asyncio.run(main())
