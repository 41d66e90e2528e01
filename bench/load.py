"""Closed-loop load test of a running server (REST, gRPC and the Open Inference Protocol on both) against the bare
Predictor, in one run.

    python bench/load.py --bundle DIR                     # starts `yoloxpai serve --bundle DIR` on free ports
    python bench/load.py --bundle DIR --url http://HOST:8000 --grpc HOST:8001   # an already running server
    python bench/load.py --bundle DIR --protocols rest,oip_rest,grpc,oip_grpc   # OIP beside /v1 and yoloxpai.v1

Protocols: ``rest`` (``POST /v1/detect``, raw JPEG body), ``grpc`` (``yoloxpai.v1.Detector/Detect``), ``oip_rest``
(``POST /v2/models/{m}/infer`` with the binary tensor extension in and out, built by hand over httpx) and
``oip_grpc`` (``inference.GRPCInferenceService/ModelInfer`` with raw contents, over grpc.aio with our generated
stubs). All four use the same client libraries and one image per request, so their numbers compare the protocols,
not the clients (tritonclient's HTTP client is gevent-based and would not share the asyncio loop).

For each protocol and concurrency C (default 1, 2, 4, 8, 16, 32, 64), C clients each send one image, wait for the
answer, and send again, for ``--duration-s``; prints images/s and p50/p90/p99 latency. Protocols are interleaved
level by level (``--rounds`` repeats the cycle; rates are averaged), so drift on a shared machine hits them alike.
Then it measures the bare Predictor in this process (JPEG decode + ``predict``, the work an application without a
server does) at batch sizes 1..max and prints the server/bare ratios against the targets: at C >= 16 the server
delivers >= 0.9x the bare Predictor's best images/s; at C = 1 its p50 is <= 1.2x the bare single-image latency.
Client and server share the machine's cores, as they do in the numbers reported. The spawned server runs with its
defaults (``--server-arg`` adds flags); the bare Predictor with its strongest settings (every core, spinning threads).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import statistics
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

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


async def closed_loop(send, concurrency: int, duration_s: float, warmup_s: float) -> tuple[float, list[float], int]:
    """``concurrency`` clients calling ``send()`` back to back; returns (images/s, latencies, errors)."""
    latencies: list[float] = []
    errors = 0
    start = time.perf_counter()
    measure_from = start + warmup_s
    stop_at = measure_from + duration_s
    done = 0

    async def client() -> None:
        nonlocal errors, done
        while True:
            t0 = time.perf_counter()
            if t0 >= stop_at:
                return
            ok = await send()
            t1 = time.perf_counter()
            if t0 >= measure_from and t1 <= stop_at:
                if ok:
                    latencies.append(t1 - t0)
                    done += 1
                else:
                    errors += 1

    await asyncio.gather(*(client() for _ in range(concurrency)))
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
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        match = re.search(rb"\r\ncontent-length: *(\d+)", head, re.IGNORECASE)
        if match is None:
            raise RuntimeError(f"response without Content-Length: {head[:200]!r}")
        await self.reader.readexactly(int(match.group(1)))
        return status

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


async def run_http(
    url: str, path: str, body: bytes, headers: dict[str, str], levels: list[int], duration_s: float, warmup_s: float,
    client: str = "raw",
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
                results[c] = await closed_loop(send, c, duration_s, warmup_s)
        return results
    parsed = httpx.URL(url)
    lines = [f"POST {path} HTTP/1.1", f"Host: {parsed.host}:{parsed.port}", f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    request = ("\r\n".join(lines) + "\r\n\r\n").encode() + body
    for c in levels:
        free = [RawHttpConnection(parsed.host, parsed.port) for _ in range(c)]

        async def send(free: list[RawHttpConnection] = free) -> bool:
            connection = free.pop()  # closed loop: exactly one in-flight request per connection
            try:
                return await connection.post(request) == 200
            except (OSError, asyncio.IncompleteReadError):
                await connection.close()
                connection = RawHttpConnection(parsed.host, parsed.port)
                return False
            finally:
                free.append(connection)

        results[c] = await closed_loop(send, c, duration_s, warmup_s)
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


async def run_oip_grpc(
    target: str, model: str, jpeg: bytes, levels: list[int], duration_s: float, warmup_s: float
) -> dict:
    import grpc

    from service.pb.inference import grpc_service_pb2 as pb
    from service.pb.inference import grpc_service_pb2_grpc as pb_grpc

    request = pb.ModelInferRequest(model_name=model, raw_input_contents=[struct.pack("<I", len(jpeg)) + jpeg])
    request.inputs.add(name="IMAGE", datatype="BYTES", shape=[1])
    results = {}
    limit = 64 * 1024 * 1024
    options = [("grpc.max_receive_message_length", limit), ("grpc.max_send_message_length", limit)]
    async with grpc.aio.insecure_channel(target, options=options) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)

        async def send() -> bool:
            try:
                await stub.ModelInfer(request, timeout=60)
                return True
            except grpc.RpcError:
                return False

        for c in levels:
            results[c] = await closed_loop(send, c, duration_s, warmup_s)
    return results


def default_model(url: str) -> str:
    """The server's default model (first in ``GET /v1/models``): OIP paths name the model."""
    import httpx

    return httpx.get(f"{url}/v1/models", timeout=30).json()["models"][0]["name"]


async def run_grpc(target: str, jpeg: bytes, levels: list[int], duration_s: float, warmup_s: float) -> dict:
    import grpc

    from service.pb.yoloxpai.v1 import detection_pb2 as pb
    from service.pb.yoloxpai.v1 import detection_pb2_grpc as pb_grpc

    request = pb.DetectRequest(image=pb.Image(encoded=jpeg))
    results = {}
    async with grpc.aio.insecure_channel(target) as channel:
        stub = pb_grpc.DetectorStub(channel)

        async def send() -> bool:
            try:
                await stub.Detect(request, timeout=60)
                return True
            except grpc.RpcError:
                return False

        for c in levels:
            results[c] = await closed_loop(send, c, duration_s, warmup_s)
    return results


def bare_predictor(bundle: Path, jpeg: bytes, backend: str, threads: int | None, duration_s: float) -> dict:
    """Decode + predict in this process: single-image latency and images/s per batch size.

    The strongest bare configuration: every core, threads spinning (ONNX Runtime's own default; on 2 cores it
    gives the nano 1.5x the single-image speed and 1.2x the images/s of sleeping threads).
    """
    from model.predictor import Predictor

    predictor = Predictor.from_bundle(bundle, backend=backend, threads=threads, spin=True)
    max_batch = predictor.meta.max_batch
    predictor.warmup(range(1, max_batch + 1))

    def run(batch: int) -> None:
        images = [cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR) for _ in range(batch)]
        predictor.predict(images)

    stop = time.perf_counter() + 1.0  # runtimes keep speeding up for a while after the first calls
    while time.perf_counter() < stop:
        run(1)
    latencies = []
    stop = time.perf_counter() + duration_s
    while time.perf_counter() < stop:
        t0 = time.perf_counter()
        run(1)
        latencies.append(time.perf_counter() - t0)
    throughput = {}
    for batch in sorted({1, 2, 4, 8, max_batch} & set(range(1, max_batch + 1))):
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < duration_s:
            run(batch)
            n += batch
        throughput[batch] = n / (time.perf_counter() - t0)
    return {"latencies": latencies, "throughput": throughput, "backend": predictor.backend}


def bare_in_subprocess(argv: list[str] | None) -> dict:
    """``bare_predictor`` in a fresh process: no client threads (gRPC pollers, httpx) competing with it."""
    cmd = [sys.executable, __file__, *(sys.argv[1:] if argv is None else argv), "--bare-only"]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


class SpawnedServer:
    """``yoloxpai serve`` on free ports for the duration of the benchmark."""

    def __init__(self, args: list[str]) -> None:
        cmd = [sys.executable, "-m", "yoloxpai.cli", "serve", "--host", "127.0.0.1", "--http-port", "0"]
        self.proc = subprocess.Popen(
            [*cmd, "--grpc-port", "0", *args], cwd=REPO, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True
        )
        self.http_port = self.grpc_port = 0
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
            ready.set()

        threading.Thread(target=read, daemon=True).start()
        if not ready.wait(300) or self.proc.poll() is not None:
            raise SystemExit("the server did not start")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(60)


async def noop_round_trips(url: str, grpc_target: str | None, calls: int = 500) -> dict[str, float]:
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
    if grpc_target:
        async with grpc.aio.insecure_channel(grpc_target) as channel:
            stub = pb_grpc.DetectorStub(channel)
            floors["grpc"] = await p50(lambda: stub.ListModels(pb.ListModelsRequest(), timeout=30))
    return floors


def measure_protocols(args: argparse.Namespace, jpeg: bytes, levels: list[int], protocols: list[str]) -> dict:
    """``{protocol: {C: (images/s, latencies, errors)}}``, measured level by level with the protocols interleaved
    (``--rounds`` times), so a machine that speeds up or slows down during the run treats every protocol alike."""
    model = args.model or default_model(args.url)
    oip_body, oip_headers = oip_rest_body(jpeg)
    runners = {
        "rest": lambda c: run_http(
            args.url,
            "/v1/detect",
            jpeg,
            {"Content-Type": "image/jpeg"},
            [c],
            args.duration_s,
            args.warmup_s,
            args.http_client,
        ),
        "grpc": lambda c: run_grpc(args.grpc, jpeg, [c], args.duration_s, args.warmup_s),
        "oip_rest": lambda c: run_http(
            args.url,
            f"/v2/models/{model}/infer",
            oip_body,
            oip_headers,
            [c],
            args.duration_s,
            args.warmup_s,
            args.http_client,
        ),
        "oip_grpc": lambda c: run_oip_grpc(args.grpc, model, jpeg, [c], args.duration_s, args.warmup_s),
    }
    unknown = set(protocols) - set(runners)
    if unknown:
        raise SystemExit(f"unknown protocol(s) {sorted(unknown)}; choose from {sorted(runners)}")
    if not args.grpc:
        protocols = [p for p in protocols if "grpc" not in p]
    samples: dict[str, dict[int, list[tuple[float, list[float], int]]]] = {
        p: {c: [] for c in levels} for p in protocols
    }
    for _ in range(args.rounds):
        for c in levels:
            for protocol in protocols:
                with asyncio.Runner(loop_factory=event_loop_factory()) as runner:  # the server's loop, uvloop
                    samples[protocol][c].append(runner.run(runners[protocol](c))[c])
    return {
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
    parser.add_argument("--protocols", default="rest,grpc", help="comma-separated: rest, grpc, oip_rest, oip_grpc")
    parser.add_argument(
        "--http-client", choices=("raw", "httpx"), default="raw", help="REST load generator (raw: minimal HTTP/1.1)"
    )
    parser.add_argument("--model", help="model for the OIP protocols (default: the server's default model)")
    parser.add_argument("--rounds", type=int, default=1, help="repeat every (concurrency, protocol) measurement")
    parser.add_argument("--duration-s", type=float, default=5.0)
    parser.add_argument("--warmup-s", type=float, default=1.0)
    parser.add_argument("--backend", default="auto")
    parser.add_argument(
        "--threads", type=int, default=None, help="the bare Predictor's runtime threads (default: every core)"
    )
    parser.add_argument("--server-arg", action="append", default=[], help="extra `yoloxpai serve` flag (spawned)")
    parser.add_argument("--bare-only", action="store_true", help=argparse.SUPPRESS)  # internal: one bare run, JSON
    args = parser.parse_args(argv)
    if args.bare_only:
        jpeg = args.image.read_bytes() if args.image else sample_jpeg()
        print(json.dumps(bare_predictor(args.bundle, jpeg, args.backend, args.threads, args.duration_s)))
        return 0

    jpeg = args.image.read_bytes() if args.image else sample_jpeg()
    # The bare Predictor runs before and after the server load; the better of the two is the baseline (the
    # conservative choice on a machine whose speed drifts).
    bare_before = bare_in_subprocess(argv)
    levels = [int(c) for c in args.concurrency.split(",")]
    protocols = args.protocols.split(",")
    spawned = None
    if args.url is None:
        spawned = SpawnedServer(
            ["--bundle", str(args.bundle), "--log-level", "info", "--backend", args.backend, *args.server_arg]
        )
        args.url = f"http://127.0.0.1:{spawned.http_port}"
        args.grpc = f"127.0.0.1:{spawned.grpc_port}"
    try:
        server_results = measure_protocols(args, jpeg, levels, protocols)
        with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
            floors = runner.run(noop_round_trips(args.url, args.grpc))
    finally:
        if spawned is not None:
            spawned.stop()
    bare_after = bare_in_subprocess(argv)
    bare = {
        "backend": bare_after["backend"],
        "latencies": min(bare_before["latencies"], bare_after["latencies"], key=statistics.median),
        "throughput": {int(b): max(bare_before["throughput"][b], r) for b, r in bare_after["throughput"].items()},
    }

    print(f"\n{describe()}")
    print(f"server ({args.url}, image {len(jpeg)} bytes)")
    print(f"{'protocol':>8} {'conc':>5} {'img/s':>8} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'errors':>6}")
    for protocol, per_level in server_results.items():
        for c, (rate, latencies, errors) in per_level.items():
            p50, p90, p99 = percentiles(latencies)
            print(f"{protocol:>8} {c:>5} {rate:>8.1f} {p50:>8.2f} {p90:>8.2f} {p99:>8.2f} {errors:>6}")
    bare_p50 = statistics.median(bare["latencies"]) * 1000.0
    best_batch, best_rate = max(bare["throughput"].items(), key=lambda kv: kv[1])
    print(
        f"\nbare Predictor ({bare['backend']}, spinning threads, decode + predict): single-image p50 {bare_p50:.2f} ms"
    )
    print("  " + ", ".join(f"batch {b}: {r:.1f} img/s" for b, r in bare["throughput"].items()))
    print(f"  best: batch {best_batch}, {best_rate:.1f} img/s")
    print(
        "transport floor (a call that does no work, C = 1 p50): "
        + ", ".join(f"{name} {ms:.2f} ms" for name, ms in floors.items())
        + "\n"
    )
    ok = True
    for protocol, per_level in server_results.items():
        high = [rate for c, (rate, _, _) in per_level.items() if c >= 16]
        if high:
            ratio = max(high) / best_rate
            verdict = "PASS" if ratio >= 0.9 else "FAIL"
            ok &= ratio >= 0.9
            print(f"{protocol}: throughput at C>=16 = {ratio:.2f}x bare best (target >= 0.9x) {verdict}")
        if 1 in per_level:
            p50 = percentiles(per_level[1][1])[0]
            ratio = p50 / bare_p50
            verdict = "PASS" if ratio <= 1.2 else "FAIL"
            ok &= ratio <= 1.2
            print(f"{protocol}: p50 at C=1 = {ratio:.2f}x bare single-image latency (target <= 1.2x) {verdict}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
