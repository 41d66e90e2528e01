"""HTTP plumbing shared by the REST cores (``/v1`` in ``service.rest_detect``, ``/v2`` in ``service.oip.rest_infer``):
a size-bounded body read from the ASGI channel, and cancelling work when the client disconnects. A client gone
mid-body or while waiting raises ``service.errors.ClientGone``. Imports nothing from ``model``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from starlette.types import Receive

from service.errors import ClientGone, PayloadTooLarge

T = TypeVar("T")


async def read_body(receive: Receive, content_length: str | None, max_bytes: int) -> bytes:
    """The whole body from the request's ASGI ``receive``, refusing more than ``max_bytes`` (by the declared
    ``Content-Length`` first, then while streaming)."""
    if content_length is not None and content_length.isdigit() and int(content_length) > max_bytes:
        raise PayloadTooLarge(f"request body of {content_length} bytes exceeds the limit of {max_bytes} bytes")
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
