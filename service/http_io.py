"""HTTP plumbing shared by the REST cores (``/v1`` in ``service.rest_detect``, ``/v2`` in ``service.oip.rest_infer``):
a size- and time-bounded body read from the ASGI channel, parsing large bodies off the event loop, and cancelling
work when the client disconnects. A client gone mid-body or while waiting raises ``service.errors.ClientGone``.
Imports nothing from ``model``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from starlette.types import Receive

from service.errors import ClientGone, PayloadTooLarge, RequestTimeout

T = TypeVar("T")

# Parsing a body this large (JSON, pydantic, base64: ~1 ms per 100 KiB) would stall the loop that also serves
# gRPC and the probes; two threads bound the CPU it may take, later bodies wait their turn in the queue.
OFF_LOOP_BYTES = 256 * 1024
_PARSERS = ThreadPoolExecutor(2, thread_name_prefix="parse")


async def off_loop(size: int, fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)``: inline for a small body (``size`` bytes), on the parse threads for a large one."""
    if size < OFF_LOOP_BYTES:
        return fn(*args)
    return await asyncio.get_running_loop().run_in_executor(_PARSERS, fn, *args)


async def read_body(receive: Receive, content_length: str | None, max_bytes: int, timeout_s: float) -> bytes:
    """The whole body from the request's ASGI ``receive``, refusing more than ``max_bytes`` (by the declared
    ``Content-Length`` first, then while streaming) and a sender slower than ``timeout_s`` for the whole body
    (``RequestTimeout``: a slow-loris client must not hold a connection and its buffer for ever)."""
    if content_length is not None and (len(content_length) > 18 or not content_length.isdigit()):
        content_length = None  # not a size: h11/httptools refuse a malformed one before us; stream and count
    if content_length is not None and int(content_length) > max_bytes:
        raise PayloadTooLarge(f"request body of {content_length} bytes exceeds the limit of {max_bytes} bytes")
    # asyncio.timeout's mechanism (3.11+) by hand, for 3.10: cancel this task when the time is up.
    task = asyncio.current_task()
    expired = False

    def expire() -> None:
        nonlocal expired
        expired = True
        task.cancel()

    timer = asyncio.get_running_loop().call_later(timeout_s, expire)
    try:
        return await _read_chunks(receive, max_bytes)
    except asyncio.CancelledError:
        if not expired:
            raise
        if hasattr(task, "uncancel"):
            task.uncancel()  # our own cancellation, consumed here
        raise RequestTimeout(f"the request body did not arrive within {timeout_s:g} s") from None
    finally:
        timer.cancel()


async def _read_chunks(receive: Receive, max_bytes: int) -> bytes:
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone("disconnected while sending the body")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > max_bytes:
            raise PayloadTooLarge(f"request body exceeds the limit of {max_bytes} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _wait_disconnect(receive: Receive) -> None:
    # After the body is consumed, the next ASGI message can only be the client's disconnect.
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


async def run_until_disconnect(receive: Receive, work: Awaitable[T]) -> T:
    """Await ``work``, cancelling it if the client disconnects first (its queued images are then dropped).
    ``receive`` is the request's ASGI receive channel, its body already read."""
    work_task = asyncio.ensure_future(work)
    watch_task = asyncio.ensure_future(_wait_disconnect(receive))
    try:
        await asyncio.wait({work_task, watch_task}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watch_task.cancel()
        if not work_task.done():
            work_task.cancel()
            await asyncio.gather(work_task, return_exceptions=True)  # let the engine release what it holds
    if work_task.cancelled():
        raise ClientGone("disconnected while waiting")
    return work_task.result()
