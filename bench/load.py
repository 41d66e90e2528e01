"""Closed-loop load test of a running server (REST, gRPC and the Open Inference Protocol on both) against the bare
Predictor, in one run.

    python bench/load.py --bundle DIR                     # starts `yoloxpai serve --bundle DIR` on free ports
    python bench/load.py --bundle DIR --url http://HOST:8000 --grpc HOST:8001   # an already running server
    python bench/load.py --bundle DIR --protocols rest,oip_rest,grpc,oip_grpc   # OIP beside /v1 and yoloxpai.v1
    python bench/load.py --bundle DIR --baseline-server-arg=--batches-per-instance=1   # a setting, A/B in one run

Protocols: ``rest`` (``POST /v1/detect``, raw JPEG body), ``grpc`` (``yoloxpai.v1.Detector/Detect``),
``grpc_stream`` (``Detector/DetectStream``: each client keeps one stream open with one frame in flight, as a video
client), ``oip_rest`` (``POST /v2/models/{m}/infer`` with the binary tensor extension in and out) and ``oip_grpc``
(``inference.GRPCInferenceService/ModelInfer`` with raw contents). One image per request. The clients are load
generators, as wrk and ghz are: ``RawHttpConnection`` writes HTTP/1.1 and ``bench/h2_grpc.py`` writes the HTTP/2
frames of gRPC on asyncio connections, so the client's own CPU (which shares the cores with the server) stays small:
per call at C = 1, httpx costs ~1.3 ms of CPU and grpcio ~0.5 ms with ~6 thread wake-ups. ``--http-client httpx``
and ``--grpc-client grpcio`` measure with the libraries instead (tritonclient's HTTP client is gevent-based and
would not share the asyncio loop).

For each protocol and concurrency C (default 1, 2, 4, 8, 16, 32, 64), C clients each send one image, wait for the
answer, and send again, for ``--duration-s``; prints images/s and p50/p90/p99 latency. Protocols are interleaved
level by level (``--rounds`` repeats the cycle; rates are averaged), so drift on a shared machine hits them alike.
The bare Predictor (JPEG decode + ``predict``, the work an application without a server does) runs in its own
process, in the same cycle: at C = 1 its single-image calls alternate with each protocol's in blocks of
``--interleave-block`` calls (3 unrecorded calls start each block on either side), so both are measured within
the same fraction of a second; its blocks at batch sizes 1..max run just before the first C >= 16, each round.
Then the server/bare ratios are printed against the targets: at C >= 16 the server delivers >= 0.9x the bare
Predictor's best images/s; at C = 1 its p50 is <= 1.2x the bare single-image p50 measured beside it. Client and
server share the machine's cores, as they do in the numbers reported. The spawned server runs with its defaults
(``--server-arg`` adds flags); the bare Predictor with its strongest settings (every core, spinning threads), on
the backend the server serves (read from its ``/v1/models`` once it is ready: ``--backend auto`` chooses at load).
``--baseline-server-arg`` spawns a second server with other flags, measured in the same cycle (rows ``base:...``),
and prints the server/baseline ratios: a change of setting judged side by side, not against a number from another
run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import statistics
import struct
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

PROTOCOLS = ("rest", "grpc", "grpc_stream", "oip_rest", "oip_grpc")
REPO = Path(__file__).resolve().parents[1]
BASE = "base:"  # row prefix of the --baseline-server-arg server
sys.path.insert(0, str(REPO))

from bench.h2_grpc import GrpcCallFailed, RawGrpcConnection  # noqa: E402
from bench.machine import describe  # noqa: E402
from service.cli import event_loop_factory  # noqa: E402


def sample_jpeg(height: int = 480, width: int = 640, seed: int = 0) -> bytes:
    """A synthetic photo-like JPEG (smooth gradient + shapes) so decode cost is realistic."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    image = np.stack([(x * 255 // width), (y * 255 // height), ((x + y) * 127 // (width + height))], -1).astype(
        np.uint8
    )
    for _ in range(12):
        x1, y1 = int(rng.integers(0, width - 60)), int(rng.integers(0, height - 60))
        color = tuple(int(c) for c in rng.integers(0, 255, 3))
        cv2.rectangle(image, (x1, y1), (x1 + int(rng.integers(20, 160)), y1 + int(rng.integers(20, 160))), color, -1)
    return cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()


def percentiles(latencies_s: list[float]) -> tuple[float, float, float]:
    """p50, p90, p99 in milliseconds."""
    if not latencies_s:
        return float("nan"), float("nan"), float("nan")
    p = np.percentile(np.asarray(latencies_s) * 1000.0, [50, 90, 99])
    return float(p[0]), float(p[1]), float(p[2])


@dataclass
class Interleave:
    """At C = 1 the bare Predictor's calls alternate with the server's in short blocks (``block`` recorded calls
    each side, after ``skip`` unrecorded ones that let the other process's threads settle): on a machine whose
    speed moves within seconds, 5-s blocks compared the two at different speeds; blocks of ~0.1-0.2 s see the
    same machine. ``latencies`` collects the bare side's, paired with one server row."""

    bare: BareProcess
    block: int = 25
    skip: int = 3
    latencies: list[float] = field(default_factory=list)

    def run_bare(self) -> None:
        self.latencies.extend(self.bare.calls(self.block, self.skip))


async def closed_loop(
    send, concurrency: int, duration_s: float, warmup_s: float, interleave: Interleave | None = None
) -> tuple[float, list[float], int]:
    """``concurrency`` clients calling ``send()`` back to back; returns (images/s, latencies, errors). With
    ``interleave``, at C = 1 only (ignored otherwise), the bare blocks pause the client; the paused time does not
    count."""
    if concurrency != 1:
        interleave = None
    latencies: list[float] = []
    errors = 0
    start = time.perf_counter()
    measure_from = start + warmup_s
    stop_at = measure_from + duration_s
    done = 0

    async def client() -> None:
        nonlocal errors, done, measure_from, stop_at
        in_block = 0
        while True:
            t0 = time.perf_counter()
            if t0 >= stop_at:
                return
            if interleave is not None and in_block == interleave.skip + interleave.block:
                interleave.run_bare()  # blocking is fine: this is the only client
                paused = time.perf_counter() - t0
                measure_from, stop_at = measure_from + (paused if t0 < measure_from else 0.0), stop_at + paused
                in_block = 0
                continue
            ok = await send()
            t1 = time.perf_counter()
            in_block += 1
            recorded = interleave is None or in_block > interleave.skip
            if t0 >= measure_from and t1 <= stop_at and recorded:
                if ok:
                    latencies.append(t1 - t0)
                    done += 1
                else:
                    errors += 1

    await asyncio.gather(*(client() for _ in range(concurrency)))
    if interleave is not None:
        if not interleave.latencies:  # a run too short for one block still pairs one
            interleave.run_bare()
        # the skipped calls took time too: one client's rate is 1 / its mean latency
        return (done / sum(latencies) if latencies else 0.0), latencies, errors
    return done / duration_s, latencies, errors


class RawHttpConnection:
    """One keep-alive HTTP/1.1 connection that POSTs a fixed body and reads the answer (a load generator, like wrk).

    httpx spends ~1.3 ms of CPU per request; on a 2-core machine shared with the server that time would be billed
    to the server, so the default client does only what a load generator must (``--http-client httpx`` for the
    library)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, request: bytes) -> int:
        """Send a complete request; return the status code after reading the whole body."""
        return (await self.exchange(request))[0]

    async def exchange(self, request: bytes) -> tuple[int, bytes]:
        """Send a complete request; return the status code and the response head (status line and headers) after
        reading the whole body."""
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        match = re.search(rb"\r\ncontent-length: *(\d+)", head, re.IGNORECASE)
        if match is None:
            raise RuntimeError(f"response without Content-Length: {head[:200]!r}")
        await self.reader.readexactly(int(match.group(1)))
        return status, head

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def http_post(host: str, port: int, path: str, body: bytes, headers: dict[str, str]) -> bytes:
    """The bytes of one HTTP/1.1 ``POST path`` with ``body`` (for :meth:`RawHttpConnection.post`)."""
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}:{port}", f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def pooled(free: list, call, reopen):
    """``send()`` for :func:`closed_loop` over one connection (or stream) per client: each call takes one from
    ``free`` (closed loop: one request in flight on it), returns ``await call(it)``, and replaces one that broke
    (``await reopen(old)`` gives the new one)."""

    async def send() -> bool:
        connection = free.pop()
        try:
            return await call(connection)
        except (OSError, asyncio.IncompleteReadError):
            connection = await reopen(connection)
            return False
        finally:
            free.append(connection)

    return send


async def run_http(
    url: str, path: str, body: bytes, headers: dict[str, str], levels: list[int], duration_s: float, warmup_s: float,
    client: str = "raw", interleave: Interleave | None = None,
) -> dict:  # fmt: skip
    """Closed-loop POSTs of ``body`` to ``url + path`` at each concurrency level."""
    import httpx

    results = {}
    if client == "httpx":
        limits = httpx.Limits(max_connections=max(levels), max_keepalive_connections=max(levels))
        async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as session:

            async def send() -> bool:
                return (await session.post(path, content=body, headers=headers)).status_code == 200

            for c in levels:
                results[c] = await closed_loop(send, c, duration_s, warmup_s, interleave)
        return results
    parsed = httpx.URL(url)
    request = http_post(parsed.host, parsed.port, path, body, headers)

    async def post(connection: RawHttpConnection) -> bool:
        return await connection.post(request) == 200

    async def reopen(connection: RawHttpConnection) -> RawHttpConnection:
        await connection.close()
        return RawHttpConnection(parsed.host, parsed.port)

    for c in levels:
        free = [RawHttpConnection(parsed.host, parsed.port) for _ in range(c)]
        results[c] = await closed_loop(pooled(free, post, reopen), c, duration_s, warmup_s, interleave)
        for connection in free:
            await connection.close()
    return results


def oip_rest_body(jpeg: bytes) -> tuple[bytes, dict[str, str]]:
    """One-image OIP request with the binary tensor extension (binary outputs too, as tritonclient asks)."""
    tensor = struct.pack("<I", len(jpeg)) + jpeg  # BYTES element: uint32 little-endian length + data
    header = {
        "inputs": [
            {"name": "IMAGE", "datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": len(tensor)}}
        ],
        "parameters": {"binary_data_output": True},
    }
    head = json.dumps(header).encode()
    headers = {"Inference-Header-Content-Length": str(len(head)), "content-type": "application/octet-stream"}
    return head + tensor, headers


@dataclass(frozen=True)
class GrpcCall:
    """A unary gRPC call to repeat: method path, request message, response type (protobuf classes)."""

    path: str
    request: Any
    response_type: Any


def detect_grpc_call(jpeg: bytes) -> GrpcCall:
    """``yoloxpai.v1.Detector/Detect`` with the encoded JPEG."""
    from service.pb.yoloxpai.v1 import detection_pb2 as pb

    return GrpcCall("/yoloxpai.v1.Detector/Detect", pb.DetectRequest(image=pb.Image(encoded=jpeg)), pb.DetectResponse)


def oip_grpc_call(model: str, jpeg: bytes) -> GrpcCall:
    """``ModelInfer`` with the JPEG as one BYTES element in ``raw_input_contents``."""
    from service.pb.inference import grpc_service_pb2 as pb

    request = pb.ModelInferRequest(model_name=model, raw_input_contents=[struct.pack("<I", len(jpeg)) + jpeg])
    request.inputs.add(name="IMAGE", datatype="BYTES", shape=[1])
    return GrpcCall("/inference.GRPCInferenceService/ModelInfer", request, pb.ModelInferResponse)


def split_target(target: str) -> tuple[str, int]:
    host, _, port = target.rpartition(":")
    return host, int(port)


async def run_grpc_calls(
    target: str, call: GrpcCall, levels: list[int], duration_s: float, warmup_s: float,
    client: str = "raw", interleave: Interleave | None = None,
) -> dict:  # fmt: skip
    """Closed-loop unary calls at each concurrency level (``client``: raw HTTP/2 frames, or grpcio's grpc.aio)."""
    import grpc

    results = {}
    if client == "grpcio":
        limit = 64 * 1024 * 1024
        options = [("grpc.max_receive_message_length", limit), ("grpc.max_send_message_length", limit)]
        async with grpc.aio.insecure_channel(target, options=options) as channel:
            invoke = channel.unary_unary(
                call.path,
                request_serializer=type(call.request).SerializeToString,
                response_deserializer=call.response_type.FromString,
            )

            async def send() -> bool:
                try:
                    await invoke(call.request, timeout=60)
                    return True
                except grpc.RpcError:
                    return False

            for c in levels:
                results[c] = await closed_loop(send, c, duration_s, warmup_s, interleave)
        return results
    host, port = split_target(target)
    message = call.request.SerializeToString()

    async def unary(connection: RawGrpcConnection) -> bool:
        try:
            call.response_type.FromString(await connection.call(call.path, message, timeout_s=60))
            return True
        except GrpcCallFailed:
            return False

    async def reopen(connection: RawGrpcConnection) -> RawGrpcConnection:
        await connection.close()
        return RawGrpcConnection(host, port)

    for c in levels:
        free = [RawGrpcConnection(host, port) for _ in range(c)]
        results[c] = await closed_loop(pooled(free, unary, reopen), c, duration_s, warmup_s, interleave)
        for connection in free:
            await connection.close()
    return results


async def run_grpc_stream(
    target: str, jpeg: bytes, levels: list[int], duration_s: float, warmup_s: float,
    client: str = "raw", interleave: Interleave | None = None,
) -> dict:  # fmt: skip
    """Closed-loop frames over ``DetectStream``: each client keeps one bidirectional stream open and sends its next
    frame when the last one's response arrives (a video client with one frame in flight)."""
    import grpc

    from service.pb.yoloxpai.v1 import detection_pb2 as pb
    from service.pb.yoloxpai.v1 import detection_pb2_grpc as pb_grpc

    path = "/yoloxpai.v1.Detector/DetectStream"
    request = pb.DetectRequest(image=pb.Image(encoded=jpeg))
    results = {}
    if client == "grpcio":
        async with grpc.aio.insecure_channel(target) as channel:
            stub = pb_grpc.DetectorStub(channel)

            async def frame_grpcio(stream) -> bool:
                try:
                    await stream.write(request)
                    response = await stream.read()
                    return response is not grpc.aio.EOF and response.status.code == 0
                except grpc.RpcError:
                    return False

            async def keep(stream):  # a broken stream stays broken: its calls count as errors
                return stream

            for c in levels:
                streams = [stub.DetectStream() for _ in range(c)]
                send = pooled(streams, frame_grpcio, keep)
                results[c] = await closed_loop(send, c, duration_s, warmup_s, interleave)
                for stream in streams:
                    await stream.done_writing()
                    while await stream.read() is not grpc.aio.EOF:  # nothing is in flight: the server ends it
                        pass
        return results
    host, port = split_target(target)
    message = request.SerializeToString()

    async def frame_raw(connection: RawGrpcConnection) -> bool:
        try:
            await connection.send_message(message)
            return pb.DetectResponse.FromString(await connection.read_message()).status.code == 0
        except GrpcCallFailed:  # the stream ended: open another for the next frame
            await connection.open_stream(path)
            return False

    async def reopen_stream(connection: RawGrpcConnection) -> RawGrpcConnection:
        await connection.close()
        fresh = RawGrpcConnection(host, port)
        await fresh.open_stream(path)
        return fresh

    for c in levels:
        connections = [RawGrpcConnection(host, port) for _ in range(c)]
        for connection in connections:
            await connection.open_stream(path)
        send = pooled(connections, frame_raw, reopen_stream)  # replaces broken ones in ``connections``
        results[c] = await closed_loop(send, c, duration_s, warmup_s, interleave)
        for connection in connections:
            with contextlib.suppress(GrpcCallFailed, OSError, asyncio.IncompleteReadError):
                await connection.finish()  # nothing is in flight: the server ends the stream
            await connection.close()
    return results


def default_model(url: str) -> str:
    """The server's default model (first in ``GET /v1/models``): OIP paths name the model."""
    import httpx

    return httpx.get(f"{url}/v1/models", timeout=30).json()["models"][0]["name"]


class BarePredictor:
    """Decode + predict in this process, the work an application without a server does, one block at a time.

    The strongest bare configuration: every core, threads spinning (ONNX Runtime's own default; on 2 cores it
    gives the nano 1.5x the single-image speed and 1.2x the images/s of sleeping threads).
    """

    def __init__(self, bundle: Path, jpeg: bytes, backend: str, device: str, threads: int | None) -> None:
        from model.predictor import Predictor

        self.jpeg = jpeg
        self.predictor = Predictor.from_bundle(bundle, backend=backend, device=device, threads=threads, spin=True)
        max_batch = self.predictor.meta.max_batch
        self.batches = sorted({1, 2, 4, 8, max_batch} & set(range(1, max_batch + 1)))
        self.predictor.warmup(range(1, max_batch + 1))

    def run(self, batch: int) -> None:
        images = [cv2.imdecode(np.frombuffer(self.jpeg, np.uint8), cv2.IMREAD_COLOR) for _ in range(batch)]
        self.predictor.predict(images)

    def calls(self, n: int, skip: int) -> list[float]:
        """Latencies (s) of ``n`` single-image calls after ``skip`` unrecorded ones."""
        for _ in range(skip):
            self.run(1)
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            self.run(1)
            times.append(time.perf_counter() - t0)
        return times

    def rate(self, batch: int, duration_s: float) -> float:
        """Images/s, back to back at ``batch``."""
        self.run(batch)
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < duration_s:
            self.run(batch)
            n += batch
        return n / (time.perf_counter() - t0)


def serve_bare(args: argparse.Namespace, jpeg: bytes) -> None:
    """The ``--bare-serve`` child: answers one JSON command a line on stdin with one JSON line on stdout."""
    bare = BarePredictor(args.bundle, jpeg, args.backend, args.device, args.threads)
    print(json.dumps({"backend": bare.predictor.backend, "batches": bare.batches}), flush=True)
    for line in sys.stdin:
        command = json.loads(line)
        if command["op"] == "calls":
            print(json.dumps(bare.calls(command["n"], command["skip"])), flush=True)
        else:
            print(json.dumps(bare.rate(command["batch"], command["duration_s"])), flush=True)


def served_backend(url: str) -> str | None:
    """The backend the server at ``url`` serves its default model on (``GET /v1/models``), or None when it does
    not say (an API key, an older server)."""
    try:
        with urllib.request.urlopen(f"{url}/v1/models", timeout=10) as response:
            models = json.loads(response.read())["models"]
    except (OSError, ValueError, KeyError):
        return None
    default = next((m for m in models if m.get("default")), models[0] if models else None)
    return None if default is None else default.get("backend")


class BareProcess:
    """The bare Predictor in its own process (no client threads competing with it), kept alive for the whole run
    so its blocks interleave with the server's: both see the same machine, drift included."""

    def __init__(self, argv: list[str] | None) -> None:
        cmd = [sys.executable, __file__, *(sys.argv[1:] if argv is None else argv), "--bare-serve"]
        self.proc = subprocess.Popen(cmd, cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        hello = self._answer()
        self.backend, self.batches = hello["backend"], hello["batches"]

    def _answer(self) -> Any:
        line = self.proc.stdout.readline()  # one JSON line per command
        if not line:
            raise SystemExit(f"the bare Predictor process exited ({self.proc.wait()})")
        return json.loads(line)

    def _ask(self, **command: Any) -> Any:
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()
        return self._answer()

    def calls(self, n: int, skip: int) -> list[float]:
        return self._ask(op="calls", n=n, skip=skip)

    def rate(self, batch: int, duration_s: float) -> float:
        return self._ask(op="rate", batch=batch, duration_s=duration_s)

    def stop(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(60)


class SpawnedServer:
    """``yoloxpai serve`` on free ports for the duration of the benchmark (at log level info, whatever ``args``
    say: its ports and readiness are read from the log)."""

    def __init__(self, args: list[str]) -> None:
        cmd = [sys.executable, "-m", "yoloxpai.cli", "serve", "--host", "127.0.0.1", "--http-port", "0"]
        cmd += ["--grpc-port", "0", *args, "--log-level", "info"]
        self.proc = subprocess.Popen(cmd, cwd=REPO, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
        self.http_port = self.grpc_port = 0
        self.error_lines: list[str] = []  # the log's ERROR lines, for a caller's report
        ready = threading.Event()

        def read() -> None:
            for line in self.proc.stderr:
                match = re.search(r"http_port=(\d+) grpc_port=(\d+)", line)
                if match:
                    self.http_port, self.grpc_port = int(match.group(1)), int(match.group(2))
                if " ready: " in line:
                    ready.set()
                if "ERROR" in line or "Traceback" in line:
                    sys.stderr.write(line)
                if " ERROR " in line:
                    self.error_lines.append(line.rstrip())
            ready.set()

        threading.Thread(target=read, daemon=True).start()
        if not ready.wait(300) or self.proc.poll() is not None or not self.http_port:
            self.stop()  # never leave it running behind the benchmark
            raise SystemExit("the server did not start")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


async def noop_round_trips(
    url: str, grpc_target: str | None, grpc_client: str = "raw", calls: int = 500
) -> dict[str, float]:
    """p50 ms of a call that does no work (``GET /healthz``; gRPC ``ListModels``) over the load clients: the fixed
    cost of each transport, client and server together, which a C = 1 latency carries on top of the detection."""
    import grpc
    import httpx

    from service.pb.yoloxpai.v1 import detection_pb2 as pb
    from service.pb.yoloxpai.v1 import detection_pb2_grpc as pb_grpc

    async def p50(call) -> float:
        times = []
        for _ in range(calls):
            t0 = time.perf_counter()
            await call()
            times.append(time.perf_counter() - t0)
        return statistics.median(times[calls // 10 :]) * 1000.0  # the first tenth warms the connection up

    parsed = httpx.URL(url)
    conn = RawHttpConnection(parsed.host, parsed.port)
    floors = {"http": await p50(lambda: conn.post(b"GET /healthz HTTP/1.1\r\nHost: bench\r\n\r\n"))}
    await conn.close()
    if grpc_target and grpc_client == "grpcio":
        async with grpc.aio.insecure_channel(grpc_target) as channel:
            stub = pb_grpc.DetectorStub(channel)
            floors["grpc"] = await p50(lambda: stub.ListModels(pb.ListModelsRequest(), timeout=30))
    elif grpc_target:
        grpc_conn = RawGrpcConnection(*split_target(grpc_target))
        request = pb.ListModelsRequest().SerializeToString()
        floors["grpc"] = await p50(lambda: grpc_conn.call("/yoloxpai.v1.Detector/ListModels", request, timeout_s=30))
        await grpc_conn.close()
    return floors


def measure_protocols(
    args: argparse.Namespace,
    servers: dict[str, tuple[str, str | None]],
    jpeg: bytes,
    levels: list[int],
    protocols: list[str],
    bare: BareProcess,
) -> tuple[dict, dict]:
    """``{row: {C: (images/s, latencies, errors)}}`` and the bare Predictor's ``{"latencies": {row: [s]},
    "throughput": {batch: images/s}}``, measured level by level with the protocols (of every server: ``servers``
    maps a row prefix to its REST URL and gRPC target) interleaved, ``--rounds`` times. The bare Predictor is
    measured in the same cycle: at C = 1 its single-image calls alternate with each row's in short blocks
    (:class:`Interleave`), its batch blocks run just before the first C >= 16; so a machine that speeds up or
    slows down during the run treats every server, the baseline and the bare Predictor alike."""
    oip_body, oip_headers = oip_rest_body(jpeg)
    rows = [
        prefix + p for prefix, (_, grpc_target) in servers.items() for p in protocols if grpc_target or "grpc" not in p
    ]
    paired = {row: Interleave(bare, args.interleave_block) for row in rows}
    runners = {}
    for prefix, (url, grpc_target) in servers.items():
        model = args.model or default_model(url)
        runners |= {
            f"{prefix}rest": lambda c, i, url=url: run_http(
                url, "/v1/detect", jpeg, {"Content-Type": "image/jpeg"}, [c], args.duration_s, args.warmup_s,
                args.http_client, i,
            ),
            f"{prefix}grpc": lambda c, i, target=grpc_target: run_grpc_calls(
                target, detect_grpc_call(jpeg), [c], args.duration_s, args.warmup_s, args.grpc_client, i
            ),
            f"{prefix}grpc_stream": lambda c, i, target=grpc_target: run_grpc_stream(
                target, jpeg, [c], args.duration_s, args.warmup_s, args.grpc_client, i
            ),
            f"{prefix}oip_rest": lambda c, i, url=url, model=model: run_http(
                url, f"/v2/models/{model}/infer", oip_body, oip_headers, [c], args.duration_s, args.warmup_s,
                args.http_client, i,
            ),
            f"{prefix}oip_grpc": lambda c, i, target=grpc_target, model=model: run_grpc_calls(
                target, oip_grpc_call(model, jpeg), [c], args.duration_s, args.warmup_s, args.grpc_client, i
            ),
        }  # fmt: skip
    samples: dict[str, dict[int, list[tuple[float, list[float], int]]]] = {row: {c: [] for c in levels} for row in rows}
    bare_rates: dict[int, list[float]] = {b: [] for b in bare.batches}
    rates_before = next((c for c in levels if c >= 16), None)

    def bare_rates_block() -> None:
        for batch in bare.batches:
            bare_rates[batch].append(bare.rate(batch, args.duration_s))

    for _ in range(args.rounds):
        for c in levels:
            if c == rates_before:
                bare_rates_block()
            for row in rows:
                with asyncio.Runner(loop_factory=event_loop_factory()) as runner:  # the server's loop, uvloop
                    samples[row][c].append(runner.run(runners[row](c, paired[row]))[c])
        if rates_before is None:
            bare_rates_block()
    bare_results = {
        "latencies": {row: pairing.latencies for row, pairing in paired.items() if pairing.latencies},
        "throughput": {batch: statistics.mean(rates) for batch, rates in bare_rates.items()},
    }
    server_results = {
        protocol: {
            c: (
                statistics.mean(rate for rate, _, _ in runs),
                [latency for _, latencies, _ in runs for latency in latencies],
                sum(errors for _, _, errors in runs),
            )
            for c, runs in per_level.items()
        }
        for protocol, per_level in samples.items()
    }
    return server_results, bare_results


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--bundle", type=Path, required=True, help="bundle for the bare Predictor (and a spawned server)"
    )
    parser.add_argument("--url", help="REST base URL of a running server (default: spawn one)")
    parser.add_argument("--grpc", help="gRPC target of a running server")
    parser.add_argument("--image", type=Path, help="JPEG to send (default: a synthetic 640x480 JPEG)")
    parser.add_argument("--concurrency", default="1,2,4,8,16,32,64")
    parser.add_argument("--protocols", default="rest,grpc", help=f"comma-separated: {', '.join(PROTOCOLS)}")
    parser.add_argument(
        "--http-client", choices=("raw", "httpx"), default="raw", help="REST load generator (raw: minimal HTTP/1.1)"
    )
    parser.add_argument(
        "--grpc-client",
        choices=("raw", "grpcio"),
        default="raw",
        help="gRPC load generator (raw: minimal HTTP/2 frames, bench/h2_grpc.py; grpcio: grpc.aio)",
    )
    parser.add_argument("--model", help="model for the OIP protocols (default: the server's default model)")
    parser.add_argument("--rounds", type=int, default=1, help="repeat every (concurrency, protocol) measurement")
    parser.add_argument("--duration-s", type=float, default=5.0)
    parser.add_argument("--warmup-s", type=float, default=1.0)
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--device", default="cpu", help="device of the bare Predictor and a spawned server (cuda:0)")
    parser.add_argument(
        "--threads", type=int, default=None, help="the bare Predictor's runtime threads (default: every core)"
    )
    parser.add_argument("--server-arg", action="append", default=[], help="extra `yoloxpai serve` flag (spawned)")
    parser.add_argument(
        "--baseline-server-arg",
        action="append",
        default=None,
        help="also spawn a baseline server with this flag (repeatable; instead of --server-arg's), measured in the "
        "same cycle: its rows are prefixed 'base:' and compared with the server's",
    )
    parser.add_argument(
        "--interleave-block",
        type=int,
        default=25,
        help="at C = 1, calls per block when server and bare Predictor alternate (after 3 unrecorded each)",
    )
    parser.add_argument("--bare-serve", action="store_true", help=argparse.SUPPRESS)  # internal: the bare process
    args = parser.parse_args(argv)
    jpeg = args.image.read_bytes() if args.image else sample_jpeg()
    if args.bare_serve:
        serve_bare(args, jpeg)
        return 0

    levels = [int(c) for c in args.concurrency.split(",")]
    protocols = args.protocols.split(",")
    unknown = set(protocols) - set(PROTOCOLS)
    if unknown:  # before any process starts
        raise SystemExit(f"unknown protocol(s) {sorted(unknown)}; choose from {', '.join(PROTOCOLS)}")
    spawned: list[SpawnedServer] = []
    bare_process: BareProcess | None = None
    common = ["--bundle", str(args.bundle), "--backend", args.backend, "--device", args.device]
    try:
        if args.url is None:
            spawned.append(SpawnedServer([*common, *args.server_arg]))
            args.url = f"http://127.0.0.1:{spawned[0].http_port}"
            args.grpc = f"127.0.0.1:{spawned[0].grpc_port}"
        servers = {"": (args.url, args.grpc)}
        if args.baseline_server_arg is not None:
            spawned.append(SpawnedServer([*common, *args.baseline_server_arg]))
            servers[BASE] = (f"http://127.0.0.1:{spawned[-1].http_port}", f"127.0.0.1:{spawned[-1].grpc_port}")
        # The bare Predictor runs what the server chose (``--backend auto`` times the bundle's artifacts at load),
        # loaded once the servers are ready and idle while they are measured.
        backend = served_backend(args.url) or args.backend
        bare_process = BareProcess([*(sys.argv[1:] if argv is None else argv), "--backend", backend])
        server_results, bare = measure_protocols(args, servers, jpeg, levels, protocols, bare_process)
        with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
            floors = runner.run(noop_round_trips(args.url, args.grpc, args.grpc_client))
    finally:
        for server in spawned:
            server.stop()
        if bare_process is not None:
            bare_process.stop()
    bare["backend"] = bare_process.backend

    print(f"\n{describe()}")
    print(f"server ({args.url}, image {len(jpeg)} bytes)")
    if args.baseline_server_arg is not None:
        print(f"baseline ({BASE} rows): the same server with {' '.join(args.baseline_server_arg) or 'its defaults'}")
    print(f"{'protocol':>13} {'conc':>5} {'img/s':>8} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'errors':>6}")
    for protocol, per_level in server_results.items():
        for c, (rate, latencies, errors) in per_level.items():
            p50, p90, p99 = percentiles(latencies)
            print(f"{protocol:>13} {c:>5} {rate:>8.1f} {p50:>8.2f} {p90:>8.2f} {p99:>8.2f} {errors:>6}")
    bare_p50s = {row: statistics.median(latencies) * 1000.0 for row, latencies in bare["latencies"].items()}
    best_batch, best_rate = max(bare["throughput"].items(), key=lambda kv: kv[1])
    single = ", ".join(f"{p50:.2f} ms (beside {row})" for row, p50 in bare_p50s.items()) or "not measured (no C = 1)"
    print(f"\nbare Predictor ({bare['backend']} on {args.device}, spinning threads, decode + predict)")
    print(f"  single-image p50: {single}")
    print("  " + ", ".join(f"batch {b}: {r:.1f} img/s" for b, r in bare["throughput"].items()))
    print(f"  best: batch {best_batch}, {best_rate:.1f} img/s")
    print(
        "transport floor (a call that does no work, C = 1 p50): "
        + ", ".join(f"{name} {ms:.2f} ms" for name, ms in floors.items())
        + "\n"
    )
    ok = True
    for protocol, per_level in server_results.items():
        judged = not protocol.startswith(BASE)  # the targets are the server's; baseline rows are for comparison
        high = [rate for c, (rate, _, _) in per_level.items() if c >= 16]
        if high:
            ratio = max(high) / best_rate
            verdict = ("PASS" if ratio >= 0.9 else "FAIL") if judged else "(baseline)"
            ok &= ratio >= 0.9 or not judged
            print(f"{protocol}: throughput at C>=16 = {ratio:.2f}x bare best (target >= 0.9x) {verdict}")
        if 1 in per_level:
            p50 = percentiles(per_level[1][1])[0]
            ratio = p50 / bare_p50s[protocol]
            verdict = ("PASS" if ratio <= 1.2 else "FAIL") if judged else "(baseline)"
            ok &= ratio <= 1.2 or not judged
            print(
                f"{protocol}: p50 at C=1 = {ratio:.2f}x bare single-image latency, blocks interleaved "
                f"({p50:.2f} / {bare_p50s[protocol]:.2f} ms; target <= 1.2x) {verdict}"
            )
    for protocol, per_level in server_results.items():
        base = server_results.get(BASE + protocol)
        if base is None:
            continue
        rates = ", ".join(f"C={c} {per_level[c][0] / base[c][0]:.2f}x" for c in per_level)
        p50s = ", ".join(
            f"C={c} {percentiles(per_level[c][1])[0] / percentiles(base[c][1])[0]:.2f}x" for c in per_level
        )
        print(f"{protocol} vs {BASE}{protocol}: images/s {rates}; p50 {p50s}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
