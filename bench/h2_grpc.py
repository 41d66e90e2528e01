"""A minimal gRPC-over-HTTP/2 unary client for the load benchmark (what h2load or ghz do, in a few frames).

The grpcio client costs ~0.5 ms of CPU and ~6 thread wake-ups per call (its event-engine threads, then the calling
thread); on a 2-core machine shared with the server that time is billed to the server, as httpx's was for REST
(``RawHttpConnection``). This one writes the frames itself on one asyncio connection, one call at a time:

- requests: HEADERS (HPACK literals without indexing, so no encoder state) + DATA frames holding the 5-byte gRPC
  prefix and the message, split to the peer's frame size and sent within its flow-control windows;
- responses: DATA is collected; header blocks are skipped, never decoded (HPACK decoder state is only needed to read
  them), so a call succeeds when the stream ends normally with exactly one response message. An error status
  (trailers-only, no message) or RST_STREAM is a failure; the status itself is not read.
- connection upkeep: SETTINGS and PING are acknowledged, WINDOW_UPDATE tracked, our receive window kept open.
"""

from __future__ import annotations

import asyncio
import struct

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = 0, 1, 3, 4, 6, 7, 8, 9
END_STREAM, ACK, END_HEADERS, PADDED = 0x1, 0x1, 0x4, 0x8
SETTINGS_ENABLE_PUSH, SETTINGS_INITIAL_WINDOW_SIZE, SETTINGS_MAX_FRAME_SIZE = 0x2, 0x4, 0x5
DEFAULT_WINDOW = 65_535
MAX_WINDOW = 2**31 - 1
FRAME = struct.Struct(">IBI")  # 24-bit length and the type in one word, then flags, stream id


def frame(kind: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    """One HTTP/2 frame (RFC 9113 section 4.1)."""
    return FRAME.pack((len(payload) << 8) | kind, flags, stream_id) + payload


def _literal(name: str, value: str) -> bytes:
    # HPACK "literal header field without indexing, new name" with plain (non-Huffman) strings of < 127 bytes
    n, v = name.encode(), value.encode()
    if len(n) >= 127 or len(v) >= 127:
        raise ValueError(f"header {name!r} too long for the one-byte length prefix")
    return b"\x00" + bytes([len(n)]) + n + bytes([len(v)]) + v


def request_headers(authority: str, path: str, timeout_s: float | None) -> bytes:
    """The HPACK block of a gRPC request: ``:method POST`` and ``:scheme http`` from the static table (RFC 7541
    appendix A, indices 3 and 6), the rest as literals."""
    block = b"\x83\x86" + _literal(":path", path) + _literal(":authority", authority)
    block += _literal("content-type", "application/grpc") + _literal("te", "trailers")
    if timeout_s is not None:
        block += _literal("grpc-timeout", grpc_timeout(timeout_s))
    return block


def grpc_timeout(timeout_s: float) -> str:
    """gRPC's ``grpc-timeout`` value: at most 8 digits and a unit (milliseconds while they fit, else seconds)."""
    ms = max(int(timeout_s * 1000), 1)
    return f"{ms}m" if ms < 10**8 else f"{min(int(timeout_s), 10**8 - 1)}S"


class GrpcCallFailed(Exception):
    """The call or stream ended without the response message it owed (an error status or a reset)."""


class RawGrpcConnection:
    """One HTTP/2 connection carrying gRPC calls one after another: a unary call, or one stream at a time with one
    message in flight (closed loop)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.authority = f"{host}:{port}"
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.stream_id = -1  # the open stream; ids are odd and increase
        self.peer_frame_bytes = 16_384  # until the peer's SETTINGS say otherwise
        self.peer_initial_window = DEFAULT_WINDOW
        self.send_window = DEFAULT_WINDOW  # connection-level, for our DATA
        self.stream_window = 0  # the open stream's, for our DATA
        self.received_bytes = 0  # DATA received since we last opened our connection window
        self.buffer = bytearray()  # the open stream's DATA not yet taken as messages
        self.ended = False  # the open stream's last frame arrived
        self.local_ended = False  # we sent the open stream's END_STREAM
        self.headers_end_stream = False  # the header block being read (HEADERS + CONTINUATIONs) ends its stream

    async def connect(self) -> None:
        """Open the TCP connection and send the preface, our SETTINGS and a wide-open receive window."""
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        settings = struct.pack(">HIHI", SETTINGS_ENABLE_PUSH, 0, SETTINGS_INITIAL_WINDOW_SIZE, MAX_WINDOW)
        open_window = struct.pack(">I", MAX_WINDOW - DEFAULT_WINDOW)
        self.writer.write(PREFACE + frame(SETTINGS, 0, 0, settings) + frame(WINDOW_UPDATE, 0, 0, open_window))

    async def call(self, path: str, message: bytes, timeout_s: float | None = None) -> bytes:
        """One unary call; returns the response message (raises :class:`GrpcCallFailed` when there is none)."""
        await self.open_stream(path, timeout_s)
        await self.send_message(message, end_stream=True)
        response = await self.read_message()
        await self.finish()
        return response

    async def open_stream(self, path: str, timeout_s: float | None = None) -> None:
        """Start a call to ``path`` (HEADERS only): messages follow with :meth:`send_message`."""
        if self.writer is None:
            await self.connect()
        self.stream_id += 2
        self.stream_window = self.peer_initial_window
        self.buffer.clear()
        self.ended = self.local_ended = False
        block = request_headers(self.authority, path, timeout_s)
        self.writer.write(frame(HEADERS, END_HEADERS, self.stream_id, block))

    async def send_message(self, message: bytes, end_stream: bool = False) -> None:
        """One length-prefixed message as DATA within the peer's frame size and flow-control windows."""
        body = b"\x00" + struct.pack(">I", len(message)) + message  # not compressed, length, message
        sent = 0
        while True:
            room = min(self.send_window, self.stream_window, self.peer_frame_bytes, len(body) - sent)
            if room > 0 or sent == len(body):
                last = sent + room == len(body)
                flags = END_STREAM if last and end_stream else 0
                self.local_ended = bool(flags)
                self.writer.write(frame(DATA, flags, self.stream_id, body[sent : sent + room]))
                sent += room
                self.send_window -= room
                self.stream_window -= room
                if last:
                    return
            elif self.ended:
                raise GrpcCallFailed("the stream ended before the request was sent")
            else:  # the peer's windows are full: read its frames until a WINDOW_UPDATE opens them
                await self._read_frame()

    async def read_message(self) -> bytes:
        """The open stream's next response message."""
        while True:
            if len(self.buffer) >= 5:
                size = int.from_bytes(self.buffer[1:5], "big")
                if len(self.buffer) >= 5 + size:
                    message = bytes(self.buffer[5 : 5 + size])
                    del self.buffer[: 5 + size]
                    return message
            if self.ended:
                raise GrpcCallFailed(f"the stream ended without a response message ({len(self.buffer)} bytes left)")
            await self._read_frame()

    async def finish(self) -> None:
        """End our side of the open stream (if a message did not) and read to its end: trailers, no more data."""
        if not self.local_ended and not self.ended:
            self.writer.write(frame(DATA, END_STREAM, self.stream_id))
            self.local_ended = True
        while not self.ended:
            await self._read_frame()
        if self.buffer:
            raise GrpcCallFailed(f"{len(self.buffer)} bytes of DATA after the last message")

    async def _read_frame(self) -> None:
        """Handle one incoming frame."""
        head = await self.reader.readexactly(9)
        length = int.from_bytes(head[:3], "big")
        kind, flags, sid = head[3], head[4], int.from_bytes(head[5:], "big") & 0x7FFF_FFFF
        payload = await self.reader.readexactly(length) if length else b""
        mine = sid == self.stream_id
        if kind == DATA:
            self.received_bytes += length
            if self.received_bytes > MAX_WINDOW // 2:  # keep our connection window open (streams get MAX_WINDOW)
                self.writer.write(frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", self.received_bytes)))
                self.received_bytes = 0
            if flags & PADDED:
                payload = payload[1 : len(payload) - payload[0]]
            if mine:
                self.buffer += payload
                self.ended |= bool(flags & END_STREAM)
        elif kind in (HEADERS, CONTINUATION):
            # the block is skipped (see the module docstring); a stream ending in a HEADERS frame ends with it
            if kind == HEADERS:
                self.headers_end_stream = bool(flags & END_STREAM)
            if mine and flags & END_HEADERS and self.headers_end_stream:
                self.ended = True
        elif kind == SETTINGS and not flags & ACK:
            self._apply_settings(payload)
            self.writer.write(frame(SETTINGS, ACK, 0))
        elif kind == PING and not flags & ACK:
            self.writer.write(frame(PING, ACK, 0, payload))
        elif kind == WINDOW_UPDATE:
            increment = int.from_bytes(payload, "big") & 0x7FFF_FFFF
            if sid == 0:
                self.send_window += increment
            elif mine:
                self.stream_window += increment
        elif kind == RST_STREAM and mine:
            self.ended = True
            raise GrpcCallFailed(f"stream reset (error code {int.from_bytes(payload, 'big')})")
        elif kind == GOAWAY:  # the connection is over: the load loop replaces it
            raise ConnectionResetError(f"the server closed the connection (GOAWAY {payload[4:8].hex()})")

    def _apply_settings(self, payload: bytes) -> None:
        for offset in range(0, len(payload), 6):
            key, value = struct.unpack(">HI", payload[offset : offset + 6])
            if key == SETTINGS_INITIAL_WINDOW_SIZE:
                self.stream_window += value - self.peer_initial_window  # applies to open streams too
                self.peer_initial_window = value
            elif key == SETTINGS_MAX_FRAME_SIZE:
                self.peer_frame_bytes = value

    async def close(self) -> None:
        """Close the connection."""
        if self.writer is not None:
            self.writer.close()
            self.writer = None
