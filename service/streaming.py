"""The windowed pump behind both bidirectional streams (``Detector.DetectStream``, OIP ``ModelStreamInfer``).

At most ``window`` requests are in flight per stream: the next message is read only when there is room, so gRPC
flow control holds a fast sender back (backpressure) instead of an unbounded backlog building up in the server.
While draining no further message is read (unread messages were never accepted); on exit -- normal end, client
cancel, deadline or an abort by the caller -- every unfinished request is cancelled, which drops it from the batch
queue before compute.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

R = TypeVar("R")
T = TypeVar("T")


async def windowed_stream(
    requests: AsyncIterator[R],
    handle: Callable[[R], Awaitable[T]],
    *,
    window: int,
    draining: asyncio.Event,
    ordered: bool,
) -> AsyncIterator[tuple[R, T]]:
    """Yield ``(request, await handle(request))`` in request order (``ordered``) or as each one completes.

    Use it under ``contextlib.aclosing`` so the clean-up runs as soon as the caller stops iterating.
    """
    inflight: deque[tuple[R, asyncio.Future]] = deque()
    source = requests.__aiter__()
    read: asyncio.Future | None = None
    drain_wait = asyncio.ensure_future(draining.wait())
    input_done = False
    try:
        while True:
            if read is None and not input_done and not draining.is_set() and len(inflight) < window:
                read = asyncio.ensure_future(source.__anext__())
            if ordered:
                waiters: set[asyncio.Future] = {inflight[0][1]} if inflight else set()
            else:
                waiters = {task for _, task in inflight}
            if read is not None:
                waiters |= {read, drain_wait}
            if not waiters:
                break
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            if read is not None and read.done():
                try:
                    request = read.result()
                except StopAsyncIteration:
                    input_done = True
                else:
                    inflight.append((request, asyncio.ensure_future(handle(request))))
                read = None
            elif read is not None and draining.is_set():
                read.cancel()  # shutting down: messages not read yet were never accepted
                read = None
            if ordered:
                while inflight and inflight[0][1].done():
                    request, task = inflight.popleft()
                    yield request, task.result()
            else:
                for item in [item for item in inflight if item[1].done()]:
                    inflight.remove(item)
                    yield item[0], item[1].result()
    finally:
        for task in (read, drain_wait, *(task for _, task in inflight)):
            if task is not None:
                task.cancel()
