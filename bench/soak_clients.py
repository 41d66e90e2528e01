"""The soak/overload benchmark's clients: every request ends in one named outcome, so a run can tell a refusal the
server chose (503 / UNAVAILABLE with a retry hint) from one it did not (a reset, a 500, a lost answer).

REST goes over ``bench/load.py``'s ``RawHttpConnection`` (cheap enough to offer several times the server's capacity
from the same two cores); gRPC over grpcio's ``grpc.aio``, whose status codes and trailing metadata (``retry-after``)
the raw HTTP/2 client of ``bench/h2_grpc.py`` does not decode.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import grpc

from bench.load import GrpcCall, RawHttpConnection
from service.pb.yoloxpai.v1 import detection_pb2 as pb

# Outcomes. Answered by the server: OK, REJECTED (with the retry hint), UNHINTED (503 / UNAVAILABLE without it),
# DEADLINE (504 / DEADLINE_EXCEEDED), DRAINED (a stream the server ended while draining, unread frames never
# accepted). Ended by the client: CANCELLED (a stream cancelled on purpose). No answer, and fine only while the
# server shuts down (SHUTDOWN_ONLY), errors before: REFUSED (nothing listens: the connection was refused), CUT (a
# gRPC call ended by the server's gRPC layer with CANCELLED, or UNAVAILABLE "Cancelling all calls", without a status
# from the service: grpc-core does that to calls that arrived as it stops and were never handed to a handler), MASKED
# (a stream the server ended while grpcio was still sending frames, whose status grpcio replaced by a local one, see
# stream_session). Errors always: RESET (closed or reset after the request was sent) and "error: ..." for the rest.
OK, REJECTED, UNHINTED, DEADLINE, DRAINED = "ok", "rejected", "unhinted", "deadline", "drained"
CANCELLED, REFUSED, CUT, MASKED, RESET = "cancelled", "refused", "cut", "masked", "reset"
ANSWERED = (OK, REJECTED, UNHINTED, DEADLINE, DRAINED)
SHUTDOWN_ONLY = (REFUSED, CUT, MASKED)
GRPC_OPTIONS = [("grpc.max_receive_message_length", 64 << 20), ("grpc.max_send_message_length", 64 << 20)]
JPEG_HEADERS = {"Content-Type": "image/jpeg"}
STREAM_PATH = "/yoloxpai.v1.Detector/DetectStream"
STREAM_DRAINED = ("yoloxpai-stream-end", "draining")  # trailing metadata of a stream the server ended on SIGTERM


class Result(NamedTuple):
    """How one request (or stream) ended; ``retried``: its first try met a keep-alive connection the server had
    closed (HTTP, see :class:`HttpPool`); ``frames``: (sent, answered) on a stream."""

    outcome: str
    detail: str = ""
    retried: bool = False
    frames: tuple[int, int] = (0, 0)


def is_error(outcome: str) -> bool:
    """An error whenever it happens: neither answered, nor cancelled by us, nor one of ``SHUTDOWN_ONLY``."""
    return outcome not in (*ANSWERED, CANCELLED, *SHUTDOWN_ONLY)


@dataclass
class Tally:
    """One protocol's results in one phase: counts by outcome, latencies (s) by outcome, a few error details."""

    counts: Counter = field(default_factory=Counter)
    latencies_s: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    retried: int = 0
    frames_sent: int = 0
    frames_answered: int = 0
    examples: list[str] = field(default_factory=list)

    def add(self, result: Result, latency_s: float) -> None:
        """Record one result."""
        self.counts[result.outcome] += 1
        self.latencies_s[result.outcome].append(latency_s)
        self.retried += result.retried
        self.frames_sent += result.frames[0]
        self.frames_answered += result.frames[1]
        if result.outcome not in (*ANSWERED, CANCELLED, REFUSED, MASKED) and len(self.examples) < 5:
            self.examples.append(f"{result.outcome}: {result.detail}"[:300])

    @property
    def sent(self) -> int:
        return sum(self.counts.values())

    @property
    def errors(self) -> int:
        """Results that are errors whatever the phase."""
        return sum(n for outcome, n in self.counts.items() if is_error(outcome))

    @property
    def shutdown_only(self) -> int:
        """Results that are errors unless the server is shutting down."""
        return sum(self.counts[outcome] for outcome in SHUTDOWN_ONLY)

    @staticmethod
    def combine(tallies: Iterable[Tally]) -> Tally:
        """Their results in one tally."""
        total = Tally()
        for tally in tallies:
            total.counts += tally.counts
            for outcome, values in tally.latencies_s.items():
                total.latencies_s[outcome] += values
            total.retried += tally.retried
            total.frames_sent += tally.frames_sent
            total.frames_answered += tally.frames_answered
            total.examples = (total.examples + tally.examples)[:5]
        return total

    def summary(self) -> dict[str, Any]:
        """JSON-ready counts (latencies stay out: the report carries their percentiles)."""
        return {
            "sent": self.sent,
            "counts": dict(self.counts),
            "errors": self.errors,
            "shutdown_only": self.shutdown_only,
            "retried_after_close": self.retried,
            "frames_sent": self.frames_sent,
            "frames_answered": self.frames_answered,
            "error_examples": self.examples,
        }


def classify_http(status: int, head: bytes) -> Result:
    """The outcome of a complete HTTP answer."""
    if status == 200:
        return Result(OK)
    if status == 503:
        hinted = re.search(rb"\r\nretry-after: *\d+", head, re.IGNORECASE) is not None
        return Result(REJECTED if hinted else UNHINTED, "503")
    if status == 504:
        return Result(DEADLINE)
    return Result(f"error: HTTP {status}", head.split(b"\r\n", 1)[0].decode(errors="replace"))


class HttpPool:
    """Keep-alive HTTP/1.1 connections to one server with one request in flight on each, opened on demand (up to
    ``max_connections``) and reused newest first.

    A connection idle for ``idle_s`` is closed here first: uvicorn closes one idle for 5 s, and a request racing
    that close would read as a reset. ``retry_closed``: a request that finds its reused connection closed or reset
    before any byte of the answer is sent again once on a new connection, as HTTP clients do (the server may close
    an idle keep-alive connection at any time; it never read the request); the new try's outcome is the request's.
    """

    def __init__(
        self, host: str, port: int, *, max_connections: int = 1000, idle_s: float = 4.0,
        retry_closed: bool = False, timeout_s: float = 60.0,
    ) -> None:  # fmt: skip
        self.host, self.port = host, port
        self.max_connections, self.idle_s = max_connections, idle_s
        self.retry_closed, self.timeout_s = retry_closed, timeout_s
        self._idle: list[tuple[float, RawHttpConnection]] = []  # (when it became idle, connection), oldest first
        self.open = 0
        self.peak_open = 0

    def _take(self) -> RawHttpConnection | None:
        now = time.monotonic()
        while self._idle and now - self._idle[0][0] > self.idle_s:
            self._discard(self._idle.pop(0)[1])
        return self._idle.pop()[1] if self._idle else None

    def _discard(self, connection: RawHttpConnection) -> None:
        self.open -= 1
        if connection.writer is not None:
            connection.writer.close()

    async def request(self, raw: bytes, fresh: bool = False) -> Result:
        """Send one complete request (``bench.load.http_post``) and classify the answer, or its absence."""
        connection = None if fresh else self._take()
        reused = connection is not None
        if connection is None:
            if self.open >= self.max_connections:
                return Result("error: client connection limit", f"{self.max_connections} connections busy")
            connection = RawHttpConnection(self.host, self.port)
            self.open += 1
            self.peak_open = max(self.peak_open, self.open)
        try:
            status, head = await asyncio.wait_for(connection.exchange(raw), self.timeout_s)
        except ConnectionRefusedError as exc:
            self._discard(connection)
            return Result(REFUSED, str(exc))
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            self._discard(connection)
            # readuntil's IncompleteReadError (expected None) with no partial head: not a byte of the answer came
            nothing_read = not isinstance(exc, asyncio.IncompleteReadError) or (
                exc.expected is None and not exc.partial
            )
            if reused and nothing_read and self.retry_closed:
                return (await self.request(raw, fresh=True))._replace(retried=True)
            return Result(RESET, repr(exc))
        except asyncio.TimeoutError:
            self._discard(connection)
            return Result("error: client timeout", f"no answer in {self.timeout_s:g} s")
        except (OSError, RuntimeError) as exc:
            self._discard(connection)
            return Result(f"error: {type(exc).__name__}", str(exc))
        except asyncio.CancelledError:  # the run is over: the answer will not be read on this connection
            self._discard(connection)
            raise
        if re.search(rb"\r\nconnection: *close", head, re.IGNORECASE):
            self._discard(connection)  # the server said so: the next request goes on a new connection
        else:
            self._idle.append((time.monotonic(), connection))
        return classify_http(status, head)

    def close(self) -> None:
        """Close the idle connections (busy ones close when their request ends or is cancelled)."""
        while self._idle:
            self._discard(self._idle.pop()[1])


def classify_grpc(code: grpc.StatusCode, details: str | None, trailing_metadata: Any) -> Result:
    """The outcome of a gRPC call that ended with a non-OK status."""
    details, metadata = details or "", dict(trailing_metadata or ())
    if code == grpc.StatusCode.CANCELLED or (code == grpc.StatusCode.UNAVAILABLE and details == "Cancelling all calls"):
        return Result(CUT, details)  # we cancel no call but streams, and stream_session sees to those first
    if code == grpc.StatusCode.UNAVAILABLE:
        if "retry-after" in metadata:
            return Result(REJECTED, details)
        if "failed to connect" in details.lower() or "connection refused" in details.lower():
            return Result(REFUSED, details)
        # the server's own refusals all carry the hint; anything else UNAVAILABLE is the transport failing
        transport = ("socket closed", "connection reset", "broken pipe", "goaway", "end of tcp stream")
        return Result(RESET if any(t in details.lower() for t in transport) else UNHINTED, details)
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return Result(DEADLINE, details)
    return Result(f"error: gRPC {code.name}", details)


# How far before the client's deadline a CANCELLED may come and still be the server's deadline. Measured: such cuts
# came a little before the client's deadline under saturation (CI). Our reading of why: grpc-core reads the clock
# once per batch of work (its ExecCtx), so a call whose headers are parsed late in a long batch is given a deadline
# that starts before it arrived (milliseconds; more on a saturated machine).
DEADLINE_SLACK = 0.05


def at_deadline(result: Result, elapsed_s: float, timeout_s: float) -> Result:
    """``result`` of a unary call that ran ``elapsed_s`` with ``timeout_s``; CUT (CANCELLED) at the deadline is
    DEADLINE. The server's gRPC layer cancels a call when the deadline it read from ``grpc-timeout`` passes
    (RST_STREAM CANCEL); that frame can be read before the client's own deadline timer runs, and grpc-core then
    reports CANCELLED instead of DEADLINE_EXCEEDED (grpc-go maps that race the same way, grpc-go#2211). The
    server's deadline can be up to ``DEADLINE_SLACK`` x ``timeout_s`` early (see there); any CUT keeps its elapsed
    time in its detail, so a report tells a cut at the deadline from one long before it."""
    if result.outcome != CUT or result.detail == "Cancelling all calls":
        return result
    outcome = DEADLINE if elapsed_s >= timeout_s * (1.0 - DEADLINE_SLACK) else CUT
    return Result(outcome, f"{result.detail} after {elapsed_s * 1000:.0f} ms (deadline {timeout_s * 1000:.0f} ms)")


@dataclass
class _Channel:
    """One channel of :class:`GrpcChannels`: its calls in flight and its multi-callables, made once per method."""

    channel: grpc.aio.Channel
    inflight: int = 0
    methods: dict[tuple[str, bool], Any] = field(default_factory=dict)

    def method(self, path: str, request_type: Any, response_type: Any, streaming: bool = False) -> Any:
        if (path, streaming) not in self.methods:
            factory = self.channel.stream_stream if streaming else self.channel.unary_unary
            self.methods[path, streaming] = factory(
                path, request_serializer=request_type.SerializeToString, response_deserializer=response_type.FromString
            )
        return self.methods[path, streaming]


class GrpcChannels:
    """grpc.aio channels to one target, each its own HTTP/2 connection carrying at most ``calls_per_channel`` calls
    at once; a call finding every channel full opens another. A rate of many independent clients is not one
    connection's: past the server's ``grpc_max_concurrent_streams`` its new streams would be refused (RST_STREAM
    REFUSED_STREAM, which grpcio reports as UNAVAILABLE without any retry hint)."""

    def __init__(self, target: str, calls_per_channel: int = 100) -> None:
        self.target, self.calls_per_channel = target, calls_per_channel
        self._channels: list[_Channel] = []

    @contextlib.contextmanager
    def lease(self) -> Iterator[_Channel]:
        """A channel with room for one more call, held for the ``with`` block."""
        chosen = next((c for c in self._channels if c.inflight < self.calls_per_channel), None)
        if chosen is None:
            # a subchannel pool of its own: grpcio would otherwise share one connection among equal channels
            options = [*GRPC_OPTIONS, ("grpc.use_local_subchannel_pool", 1)]
            chosen = _Channel(grpc.aio.insecure_channel(self.target, options=options))
            self._channels.append(chosen)
        chosen.inflight += 1
        try:
            yield chosen
        finally:
            chosen.inflight -= 1

    def unary(self, call: GrpcCall):
        """``await send(timeout_s) -> Result`` for ``call`` (``bench.load.detect_grpc_call``/``oip_grpc_call``)."""

        async def send(timeout_s: float) -> Result:
            with self.lease() as channel:
                start_s = time.monotonic()
                try:
                    await channel.method(call.path, type(call.request), call.response_type)(
                        call.request, timeout=timeout_s
                    )
                except grpc.aio.AioRpcError as err:
                    result = classify_grpc(err.code(), err.details(), err.trailing_metadata())
                    return at_deadline(result, time.monotonic() - start_s, timeout_s)
            return Result(OK)

        return send

    @property
    def count(self) -> int:
        """Channels opened."""
        return len(self._channels)

    async def close(self) -> None:
        """Close every channel (cancelling what is still in flight)."""
        for channel in self._channels:
            await channel.channel.close()


async def stream_session(
    channels: GrpcChannels, request: pb.DetectRequest, frames: int, cancel_after: int | None, timeout_s: float
) -> Result:
    """One ``Detector/DetectStream`` sending ``frames`` frames (grpcio writes them from an iterator in a task of its
    own, while answers are read): either ended cleanly (``cancel_after`` None: the sending side closes after the last
    frame; every answer and the status are read) or cancelled after ``cancel_after`` (< ``frames``) answers, with
    the rest in flight."""
    hold = asyncio.Event()

    async def requests():
        for _ in range(frames):
            yield request
        if cancel_after is not None:
            await hold.wait()  # the sending side stays open: this stream ends by our cancel (or the server's end)

    with channels.lease() as channel:
        method = channel.method(STREAM_PATH, pb.DetectRequest, pb.DetectResponse, streaming=True)
        call = method(requests(), timeout=timeout_s)
        answered = 0
        try:
            while cancel_after is None or answered < cancel_after:
                response = await call.read()
                if response is grpc.aio.EOF:
                    break
                if response.status.code != 0:  # a frame refused in-band; the stream goes on, this client stops
                    call.cancel()
                    status = response.status
                    # the refusals of a stream's frames (no trailing metadata: no retry hint to carry)
                    outcome = (
                        REJECTED if status.error in ("overloaded", "not_ready") else f"error: frame {status.error}"
                    )
                    return Result(outcome, status.message, frames=(frames, answered))
                answered += 1
            if cancel_after is not None and call.cancel():
                return Result(CANCELLED, frames=(frames, answered))
            code = await call.code()
            details, metadata, debug = await call.details(), await call.trailing_metadata(), ""
        except grpc.aio.AioRpcError as err:
            code, details, metadata, debug = (
                err.code(),
                err.details(),
                err.trailing_metadata(),
                err.debug_error_string(),
            )
        finally:
            hold.set()  # a stream the server ended: let the iterator finish
    if code == grpc.StatusCode.OK and answered == frames:
        return Result(OK, frames=(frames, answered))
    if code == grpc.StatusCode.OK and STREAM_DRAINED in tuple(metadata or ()):
        return Result(DRAINED, frames=(frames, answered))
    if code == grpc.StatusCode.OK:
        return Result("error: stream ended early", f"{answered} of {frames} answered", frames=(frames, answered))
    # The server ended the stream while grpcio was still sending: grpcio then reports INTERNAL (the failed write,
    # grpc/grpc#36066) or CANCELLED (the server's RST_STREAM after its trailers) in place of the server's status.
    if code == grpc.StatusCode.CANCELLED or (code == grpc.StatusCode.INTERNAL and "SendMessageOperation" in debug):
        return Result(MASKED, f"{code.name}: {details}", frames=(frames, answered))
    return classify_grpc(code, details, metadata)._replace(frames=(frames, answered))
