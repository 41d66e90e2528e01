"""Our server against the servers people would pick instead, in one run on the same machine, alternating:

    python bench/peers.py                                   # the default model on a 640x480 photo, C = 1, 4, 16
    python bench/peers.py --image-size 1080x1920            # the same photo enlarged to 1920x1080
    python bench/peers.py --bundle DIR --server-arg=--backend=openvino   # another bundle / our settings

Peers (``bench/peers/``), each serving the bundle's own ``model.onnx`` (decode + NMS in the graph) with ONNX
Runtime fp32 at its defaults: ``fastapi`` (FastAPI + ONNX Runtime, one image per request: the ten-line wrapper)
and ``litserve`` (LitServe with dynamic batching, ``--litserve-max-batch`` / ``--litserve-timeout-s``; JSON with a
base64 image, LitServe's request format). Ours: ``yoloxpai serve --bundle DIR`` with its defaults (``--backend
auto --precision auto``: the fastest artifact that passed its accuracy gate) plus ``--server-arg``. Every server
decodes the JPEG, letterboxes, runs the model and answers JSON boxes in original pixels.

All servers start first and stay up; for each round, each concurrency level, each server in turn (the order
rotates per round) gets ``--duration-s`` of closed-loop load from ``bench/load.py``'s raw HTTP client after a
warm-up, so drift on a shared machine hits them alike; the others are paused meanwhile (SIGSTOP, then SIGCONT;
``--keep-others-running`` leaves them up), so no server pays for another's idle polling. Prints images/s and
p50/p99 per server and level, averaged over rounds, then our ratios against each peer and the issue's targets
(C = 16 images/s ratio, C = 1 p50 ratio). Before measuring, every server's answer to the image is printed (the
same model must find the same objects) and each server's idle CPU use over 2 s.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.load import SpawnedServer, percentiles, run_http, sample_jpeg  # noqa: E402
from bench.machine import describe  # noqa: E402
from model.artifacts import default_bundle_dir, load_bundle_meta  # noqa: E402

COCO_TINY = REPO.parent / "shared" / "data" / "coco-tiny" / "val2017"
PHOTO = "000000478721.jpg"  # a street: people, cars, a truck (13 detections at 0.3), 640x480


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` and its children that were waited for (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(v) for v in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def process_state(pid: int) -> str:
    """``/proc/PID/stat``'s state letter (``T``: stopped), "" once the process is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return ""


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (LitServe runs its inference worker in a child process)."""
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        out.append(current)
        children = Path(f"/proc/{current}/task/{current}/children")
        if children.exists():
            todo += [int(c) for c in children.read_text().split()]
    return out


@contextlib.contextmanager
def others_paused(servers: list[Server], measured: Server, pause: bool):
    """While ``measured`` is measured, every other server's processes are stopped (SIGSTOP) and continued after:
    an idle server is not always idle (LitServe's inference worker polls its queue), and its CPU would be taken
    from whichever server is being measured. Each server then meets only its own overheads, as on a machine of
    its own; the rounds still alternate, so drift hits them alike."""
    pids = [pid for s in servers if s is not measured and pause for pid in process_tree(s.pid)]
    try:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)
        deadline = time.monotonic() + 2.0  # a signal is delivered when its process is next scheduled
        while time.monotonic() < deadline and any(process_state(pid) not in ("T", "") for pid in pids):
            time.sleep(0.005)
        yield
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


@dataclass
class Server:
    """One server under test: how to call it and its process."""

    name: str
    url: str
    path: str
    body: bytes
    headers: dict[str, str]
    pid: int
    stop: object
    rates: dict[int, list[float]] = field(default_factory=dict)
    latencies: dict[int, list[float]] = field(default_factory=dict)
    errors: dict[int, int] = field(default_factory=dict)

    def answer(self) -> dict:
        request = urllib.request.Request(self.url + self.path, self.body, self.headers, method="POST")
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read())


def spawn_peer(module: str, onnx: Path, extra: list[str]) -> tuple[subprocess.Popen, int]:
    port = free_port()
    cmd = [sys.executable, "-m", f"bench.peers.{module}", "--onnx", str(onnx), "--port", str(port), *extra]
    # its own process group: LitServe forks an API server and spawns an inference worker, and all must stop
    proc = subprocess.Popen(
        cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            stopper(proc)()
            raise SystemExit(f"{module} exited: {proc.stderr.read()[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return proc, port
        except OSError:
            time.sleep(0.5)
    stopper(proc)()
    raise SystemExit(f"{module} did not start")


def stopper(proc: subprocess.Popen):
    """Stop a peer's whole process group (a leftover worker would busy-poll through the next measurements)."""

    def stop() -> None:
        for sig, wait_s in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            try:
                proc.wait(wait_s)
            except subprocess.TimeoutExpired:
                continue
            # the leader is gone: make sure no child of its group outlives it
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            return

    return stop


def test_image(args: argparse.Namespace) -> bytes:
    """The JPEG every server gets: ``--image``, else coco-tiny's 640x480 street photo, else a synthetic one;
    resized when ``--image-size`` says so (quality 90)."""
    path = Path(args.image) if args.image else COCO_TINY / PHOTO
    data = path.read_bytes() if path.is_file() else sample_jpeg()
    if args.image_size:
        h, w = (int(v) for v in args.image_size.lower().split("x"))
        image = cv2.resize(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), (w, h), cv2.INTER_CUBIC)
        data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()
    return data


def start_servers(args: argparse.Namespace, bundle: Path, jpeg: bytes) -> list[Server]:
    onnx = bundle / load_bundle_meta(bundle, verify=False).models["onnx"].file
    servers = []
    ours = SpawnedServer(["--bundle", str(bundle), *args.server_arg])
    servers.append(Server("yoloxpai", f"http://127.0.0.1:{ours.http_port}", "/v1/detect", jpeg,
                          {"Content-Type": "image/jpeg"}, ours.proc.pid, ours.stop))  # fmt: skip
    if "fastapi" in args.peers:
        proc, port = spawn_peer("fastapi_ort", onnx, [])
        servers.append(Server("fastapi+ort", f"http://127.0.0.1:{port}", "/detect", jpeg,
                              {"Content-Type": "image/jpeg"}, proc.pid, stopper(proc)))  # fmt: skip
    if "litserve" in args.peers:
        extra = ["--max-batch-size", str(args.litserve_max_batch), "--batch-timeout", str(args.litserve_timeout_s)]
        proc, port = spawn_peer("litserve_ort", onnx, extra)
        body = json.dumps({"image": base64.b64encode(jpeg).decode()}).encode()
        servers.append(Server("litserve+ort", f"http://127.0.0.1:{port}", "/predict", body,
                              {"Content-Type": "application/json"}, proc.pid, stopper(proc)))  # fmt: skip
    return servers


def summary(answer: dict) -> str:
    dets = answer["results"][0]["detections"] if "results" in answer else answer["detections"]  # ours / the peers'
    top = sorted(dets, key=lambda d: -d["score"])[:3]
    return f"{len(dets)} detections; top: " + ", ".join(
        f"{d.get('class_name', d['class_id'])} {d['score']:.3f} {[round(v) for v in d['box']]}" for d in top
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=None, help="default: the embedded default model")
    parser.add_argument("--image", help="JPEG file (default: coco-tiny's 640x480 street photo, else synthetic)")
    parser.add_argument("--image-size", help="HxW to resize the image to, e.g. 1080x1920")
    parser.add_argument("--concurrency", default="1,4,16")
    parser.add_argument("--duration-s", type=float, default=8.0)
    parser.add_argument("--warmup-s", type=float, default=1.5)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--peers", default="fastapi,litserve")
    parser.add_argument("--server-arg", action="append", default=[], help="a flag for our server (repeatable)")
    parser.add_argument("--litserve-max-batch", type=int, default=8)
    parser.add_argument("--litserve-timeout-s", type=float, default=0.01)
    parser.add_argument(
        "--keep-others-running", action="store_true",
        help="leave the other servers running while one is measured (default: they are paused, SIGSTOP/SIGCONT)",
    )  # fmt: skip
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)
    levels = [int(c) for c in args.concurrency.split(",")]
    bundle = args.bundle or default_bundle_dir()
    jpeg = test_image(args)
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    print(describe())
    meta = load_bundle_meta(bundle, verify=False)
    print(f"model: {meta.name} ({meta.arch} {meta.input_hw[0]}x{meta.input_hw[1]}); image {image.shape[1]}x"
          f"{image.shape[0]} JPEG, {len(jpeg)} bytes")  # fmt: skip
    servers = start_servers(args, bundle, jpeg)
    try:
        for server in servers:
            print(f"  {server.name:<13} {summary(server.answer())}")
        before = {s.name: sum(cpu_seconds(p) for p in process_tree(s.pid)) for s in servers}
        time.sleep(2.0)
        idle = {s.name: sum(cpu_seconds(p) for p in process_tree(s.pid)) - before[s.name] for s in servers}
        print("idle CPU over 2 s: " + ", ".join(f"{name} {seconds:.2f} s" for name, seconds in idle.items()))
        if not args.keep_others_running:
            print("while one server is measured the others are paused (SIGSTOP), so none pays for another's idling")
        for round_index in range(args.rounds):
            order = servers[round_index % len(servers) :] + servers[: round_index % len(servers)]
            for c in levels:
                for server in order:
                    with others_paused(servers, server, not args.keep_others_running):
                        result = asyncio.run(
                            run_http(
                                server.url,
                                server.path,
                                server.body,
                                server.headers,
                                [c],
                                args.duration_s,
                                args.warmup_s,
                            )  # fmt: skip
                        )[c]
                    rate, latencies, errors = result
                    server.rates.setdefault(c, []).append(rate)
                    server.latencies.setdefault(c, []).extend(latencies)
                    server.errors[c] = server.errors.get(c, 0) + errors
                    print(f"  round {round_index + 1} C={c:<3} {server.name:<13} {rate:8.1f} img/s", flush=True)
    finally:
        for server in servers:
            server.stop()
    return report(servers, levels, args)


def report(servers: list[Server], levels: list[int], args: argparse.Namespace) -> int:
    rows = {}
    print(f"\n{'server':<13} {'C':>3} {'img/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6}")
    for c in levels:
        for server in servers:
            p50, _, p99 = percentiles(server.latencies[c])
            rate = float(np.mean(server.rates[c]))
            rows[server.name, c] = {"img_s": rate, "p50_ms": p50, "p99_ms": p99, "errors": server.errors[c]}
            print(f"{server.name:<13} {c:>3} {rate:>8.1f} {p50:>8.1f} {p99:>8.1f} {server.errors[c]:>6}")
    ours = servers[0].name
    print(f"\n{ours} against each peer (measured side by side above)")
    print(f"{'peer':<13} {'C':>3} {'img/s ratio':>12} {'p50 ratio':>10}")
    for server in servers[1:]:
        for c in levels:
            mine, theirs = rows[ours, c], rows[server.name, c]
            print(f"{server.name:<13} {c:>3} {mine['img_s'] / theirs['img_s']:>11.2f}x "
                  f"{mine['p50_ms'] / theirs['p50_ms']:>9.2f}x")  # fmt: skip
    if args.json:
        Path(args.json).write_text(
            json.dumps({"machine": describe(), "args": vars(args) | {"bundle": str(args.bundle)},
                        "rows": [{"server": s, "concurrency": c, **v} for (s, c), v in rows.items()]}, indent=2)
        )  # fmt: skip
    return 0 if all(v["errors"] == 0 for v in rows.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
