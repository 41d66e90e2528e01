"""bench/h2_grpc.py, the load benchmark's hand-written gRPC client, against a real grpc.aio server on a free port."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest

from bench.h2_grpc import GrpcCallFailed, RawGrpcConnection, grpc_timeout

SERVICE = "test.Echo"
# Small windows and frames (gRPC's own are 4 MB), fixed (no BDP growth): large messages must wait for WINDOW_UPDATEs.
OPTIONS = [
    ("grpc.max_receive_message_length", 8 * 1024 * 1024),
    ("grpc.http2.lookahead_bytes", 20_000),
    ("grpc.http2.bdp_probe", 0),
    ("grpc.http2.max_frame_size", 16_384),
]


def _bytes(x: bytes) -> bytes:
    return x


async def _echo(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    return request[::-1]


async def _fail(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "no")


async def _remaining(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    return repr(context.time_remaining()).encode()


async def _stream(requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
    async for request in requests:
        yield request.upper()


def _handlers() -> grpc.GenericRpcHandler:
    unary = {name: grpc.unary_unary_rpc_method_handler(f, _bytes, _bytes) for name, f in
             (("Echo", _echo), ("Fail", _fail), ("Remaining", _remaining))}  # fmt: skip
    unary["Stream"] = grpc.stream_stream_rpc_method_handler(_stream, _bytes, _bytes)
    return grpc.method_handlers_generic_handler(SERVICE, unary)


def run_against_server(scenario) -> None:
    """Start a grpc.aio server on a free port, run ``scenario(connection)``, stop the server."""

    async def main() -> None:
        server = grpc.aio.server(options=OPTIONS)
        server.add_generic_rpc_handlers([_handlers()])
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        connection = RawGrpcConnection("127.0.0.1", port)
        try:
            await asyncio.wait_for(scenario(connection), timeout=60)
        finally:
            await connection.close()
            await server.stop(None)

    asyncio.run(main())


def test_unary_calls_of_every_size_share_one_connection() -> None:
    # 300 KB is several times the 64 KiB windows a peer starts with: the client must wait for WINDOW_UPDATEs
    sizes = [0, 1, 5000, 16_384, 70_000, 300_000, 10]

    async def scenario(connection: RawGrpcConnection) -> None:
        for round_ in range(3):
            for size in sizes:
                message = bytes((i * 7 + round_) % 256 for i in range(size))
                assert await connection.call(f"/{SERVICE}/Echo", message) == message[::-1]
        assert connection.stream_id == 2 * 3 * len(sizes) - 1  # one stream per call, ids odd and increasing

    run_against_server(scenario)


def test_an_error_status_fails_the_call_and_the_connection_goes_on() -> None:
    async def scenario(connection: RawGrpcConnection) -> None:
        with pytest.raises(GrpcCallFailed, match="without a response message"):
            await connection.call(f"/{SERVICE}/Fail", b"x")
        with pytest.raises(GrpcCallFailed):
            await connection.call(f"/{SERVICE}/NoSuchMethod", b"x")
        assert await connection.call(f"/{SERVICE}/Echo", b"abc") == b"cba"

    run_against_server(scenario)


def test_the_timeout_reaches_the_server_as_grpc_timeout() -> None:
    assert (grpc_timeout(7.5), grpc_timeout(0.0001), grpc_timeout(10**6)) == ("7500m", "1m", "1000000S")
    assert grpc_timeout(10**9) == "99999999S"  # at most 8 digits

    async def scenario(connection: RawGrpcConnection) -> None:
        remaining = float(await connection.call(f"/{SERVICE}/Remaining", b"", timeout_s=7.5))
        assert 6.5 < remaining <= 7.5
        long_wait = float(await connection.call(f"/{SERVICE}/Remaining", b"", timeout_s=10**6))
        assert 10**6 - 60 < long_wait <= 10**6
        assert await connection.call(f"/{SERVICE}/Remaining", b"") == b"None"  # no timeout: no deadline

    run_against_server(scenario)


def test_a_stream_answers_each_message_in_turn_then_ends() -> None:
    async def scenario(connection: RawGrpcConnection) -> None:
        for _ in range(2):  # a second stream on the same connection after the first ended
            await connection.open_stream(f"/{SERVICE}/Stream")
            for word in (b"one", b"two", b"x" * 100_000):
                await connection.send_message(word)
                assert await connection.read_message() == word.upper()
            await connection.finish()
            assert connection.ended and connection.local_ended

    run_against_server(scenario)
