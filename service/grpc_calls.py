"""What every gRPC call gets before its servicer runs (a ``grpc.aio`` server interceptor):

- a request message that does not parse is ``INVALID_ARGUMENT`` naming the message type (grpc's own answer would
  be ``UNKNOWN`` and an error log line, as for a bug);
- a request id (``service.request_ids``: from ``x-request-id`` / ``traceparent`` metadata, else new), set for the
  call's logs and echoed in the trailing metadata;
- an access line when the call ends (``--no-access-log`` turns them off).

Handlers are wrapped once per method and cached. Imports nothing from ``model``.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import grpc

from service.logs import access
from service.request_ids import HEADER, REQUEST_ID, request_id_from


@dataclass(frozen=True)
class _Malformed:
    """Stands in for a request message that failed to parse."""

    reason: str


def _tolerant(deserialize: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserialize is None:
        return None

    def parse(data: bytes) -> Any:
        try:
            return deserialize(data)
        except Exception as exc:  # protobuf's DecodeError and kin: the client sent bytes that are not the message
            return _Malformed(f"{type(exc).__name__}: {exc}"[:300])

    return parse


async def _refuse(context: grpc.aio.ServicerContext, bad: _Malformed) -> None:
    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"the request message does not parse ({bad.reason})")


async def _checked(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
    async for request in requests:
        if isinstance(request, _Malformed):
            await _refuse(context, request)
        yield request


class CallInterceptor(grpc.aio.ServerInterceptor):
    """Wraps every handler of the server it is installed on (see the module docstring)."""

    def __init__(self, access_log: bool) -> None:
        self._access_log = access_log
        self._handlers: dict[str, grpc.RpcMethodHandler | None] = {}

    async def intercept_service(
        self, continuation: Callable, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        method = handler_call_details.method
        if method not in self._handlers:
            handler = await continuation(handler_call_details)
            self._handlers[method] = None if handler is None else self._wrap(method, handler)
        return self._handlers[method]

    def _begin(self, context: grpc.aio.ServicerContext) -> tuple[str, float]:
        metadata = dict(context.invocation_metadata() or ())
        rid = request_id_from(metadata.get(HEADER), metadata.get("traceparent"))
        context.set_trailing_metadata(((HEADER, rid),))
        # Each call runs in its own task, with its own copy of the context: set, never reset (a stream's clean-up
        # may run in another context, where a reset token is refused).
        REQUEST_ID.set(rid)
        return rid, time.perf_counter()

    def _end(self, method: str, context: grpc.aio.ServicerContext, rid: str, start: float) -> None:
        if self._access_log:
            code = context.code() if hasattr(context, "code") else None
            status = code.name if isinstance(code, grpc.StatusCode) else "OK"
            # Written on the loop's next turn: grpc sends a unary answer only after this handler returns, and the
            # log write (a syscall) must not sit between the work and the answer.
            asyncio.get_running_loop().call_soon(access, "grpc", method, status, time.perf_counter() - start, rid)

    def _wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        deserialize = _tolerant(handler.request_deserializer)
        serialize = handler.response_serializer
        if handler.unary_unary:
            inner = handler.unary_unary

            async def unary_unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
                rid, start = self._begin(context)
                try:
                    if isinstance(request, _Malformed):
                        await _refuse(context, request)
                    return await inner(request, context)
                finally:
                    self._end(method, context, rid, start)

            return grpc.unary_unary_rpc_method_handler(unary_unary, deserialize, serialize)
        if handler.unary_stream:
            inner_us = handler.unary_stream

            async def unary_stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
                rid, start = self._begin(context)
                try:
                    if isinstance(request, _Malformed):
                        await _refuse(context, request)
                    responses = inner_us(request, context)
                    if inspect.isasyncgen(responses):
                        async for response in responses:
                            yield response
                    else:
                        await responses
                finally:
                    self._end(method, context, rid, start)

            return grpc.unary_stream_rpc_method_handler(unary_stream, deserialize, serialize)
        if handler.stream_unary:
            inner_su = handler.stream_unary

            async def stream_unary(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> Any:
                rid, start = self._begin(context)
                try:
                    return await inner_su(_checked(requests, context), context)
                finally:
                    self._end(method, context, rid, start)

            return grpc.stream_unary_rpc_method_handler(stream_unary, deserialize, serialize)
        inner_ss = handler.stream_stream

        async def stream_stream(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            rid, start = self._begin(context)
            try:
                responses = inner_ss(_checked(requests, context), context)
                if inspect.isasyncgen(responses):
                    async for response in responses:
                        yield response
                else:  # a servicer that writes with context.write
                    await responses
            finally:
                self._end(method, context, rid, start)

        return grpc.stream_stream_rpc_method_handler(stream_stream, deserialize, serialize)
