"""Overload and soak benchmark of a spawned ``yoloxpai serve``: does it refuse cleanly at 4x its capacity, does it
stay flat over minutes of mixed traffic, and does SIGTERM under load answer everything it accepted?

    python bench/soak.py                                          # both modes, embedded default model: 60 s + 10 min
    python bench/soak.py --mode overload --overload-s 20          # only the overload, 20 s
    python bench/soak.py --mode soak --soak-s 90 --warmup-s 30 --json soak.json
    python bench/soak.py --bundle DIR --server-arg=--queue-capacity=32 --capacity-img-s 40

Each mode spawns its own server on free ports (``bench/load.py``'s ``SpawnedServer``; ``--server-arg`` adds flags)
and samples it from ``/proc/<pid>`` (VmRSS, Threads, open fds).

**Overload** (``--mode overload``). Capacity is measured first (closed loop over REST at ``--capacity-concurrency``
for ``--capacity-s``) unless ``--capacity-img-s`` gives it. Then an open loop (fixed arrival rate, requests started
whether or not earlier ones were answered, as independent clients do) offers ``--factor`` (4) x that rate for
``--overload-s``, split evenly over ``--overload-protocols`` (REST ``/v1/detect?timeout_ms=D``; gRPC unary
``Detect`` with a deadline of D, at most ``--grpc-calls-per-channel`` calls per connection), each request with the
deadline D = ``--deadline-ms``. Reported: accepted (200 / OK, plus 504 / DEADLINE_EXCEEDED: taken in, answered
late) vs rejected (503 / UNAVAILABLE) counts, whether each rejection carried the retry hint (``Retry-After`` header;
``retry-after`` trailing metadata), rejection latency p50/p99, accepted latency p50/p99 as multiples of D, every
other outcome as an error (resets, refused connections, calls cut without a status, other 5xx, client timeouts),
the server's RSS (start, peak, end; sampled every second) and whether the generator kept its schedule. Targets:
errors = 0; every rejection hinted; rejections immediate (p99 <= ``--reject-p99-ms``, per protocol); accepted p99
<= 2 x D (per protocol); the run overloaded the server at all (some requests rejected).

**Soak** (``--mode soak``). ``--concurrency`` closed-loop clients, spread round-robin over ``--soak-protocols``:
REST ``/v1/detect``, gRPC ``Detect``, gRPC ``DetectStream`` (1..``--stream-frames`` frames a stream; one in three
closes its sending side after the last frame and reads every answer, the others read some answers and cancel with
frames in flight), OIP REST ``/v2/models/M/infer`` and OIP gRPC ``ModelInfer``, for ``--soak-s`` (the first
``--warmup-s`` is warm-up); process samples every ``--sample-s``. Then SIGTERM goes to the server with the clients
still running; each goes on until its connection is refused. Reported per protocol and phase (soak, after SIGTERM):
requests by outcome (see ``bench/soak_clients.py``) and p50/p99; after warm-up the growth of RSS (median of the last
3 samples vs the first 3), of open fds and of threads (peak vs the first 3); for the whole run, requests sent =
answered (a 503 / UNAVAILABLE "draining" is an answer) + cancelled by the client + after SIGTERM: refused, cut (a
gRPC call the server's gRPC layer ended with CANCELLED before any handler saw it), stream status masked by grpcio
+ unanswered; the exit code. Targets: RSS growth < ``--rss-growth-pct`` (5 %); fd and thread growth <=
``--fd-slack`` / ``--thread-slack``; no errors before SIGTERM; nothing unanswered; no call cut; exit code 0.

A table per mode and one PASS/FAIL line per target are printed; ``--json PATH`` writes the same results. The exit
code is 0 whatever the verdicts (a benchmark, not a gate; tests/deploy/test_soak.py asserts the hard properties).

This file is the command line; the modes are ``bench/soak_overload.py`` and ``bench/soak_mixed.py``, over the clients
and outcome names of ``bench/soak_clients.py`` and the ``/proc`` sampler of ``bench/process_sampler.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench import soak_mixed, soak_overload  # noqa: E402
from bench.load import PROTOCOLS, SpawnedServer, sample_jpeg  # noqa: E402
from bench.machine import describe  # noqa: E402
from bench.soak_report import Check  # noqa: E402
from service.cli import event_loop_factory  # noqa: E402

# mode: (run(args, server, jpeg) -> results, report(results, args) -> checks)
MODES = {
    "overload": (soak_overload.run_overload, soak_overload.report_overload),
    "soak": (soak_mixed.run_soak, soak_mixed.report_soak),
}


def spawn(args: argparse.Namespace, *extra: str) -> SpawnedServer:
    """The server under test, with the bundle, backend and device of ``args``."""
    flags = ["--bundle", str(args.bundle)] if args.bundle else []
    return SpawnedServer([*flags, "--backend", args.backend, "--device", args.device, *args.server_arg, *extra])


def protocol_list(allowed: tuple[str, ...]):
    """argparse type: a comma-separated subset of ``allowed``."""

    def parse(text: str) -> list[str]:
        chosen = [p for p in text.split(",") if p]
        unknown = sorted(set(chosen) - set(allowed))
        if unknown or not chosen:
            raise argparse.ArgumentTypeError(f"unknown protocol(s) {unknown}; choose from {', '.join(allowed)}")
        return chosen

    return parse


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add = parser.add_argument
    add("--mode", choices=(*MODES, "both"), default="both")
    add("--bundle", type=Path, help="bundle to serve (default: the embedded default model)")
    add("--backend", default="auto")
    add("--device", default="cpu")
    add("--server-arg", action="append", default=[], help="extra `yoloxpai serve` flag (repeatable)")
    add("--image", type=Path, help="JPEG to send (default: a synthetic 640x480 JPEG)")
    add("--json", type=Path, help="also write the results to this file")
    overload = parser.add_argument_group("overload")
    overload.add_argument("--overload-s", type=float, default=60.0, help="length of the open loop")
    overload.add_argument("--factor", type=float, default=4.0, help="offered rate as a multiple of the capacity")
    overload.add_argument("--capacity-img-s", type=float, help="the server's capacity (default: measure it)")
    overload.add_argument("--capacity-s", type=float, default=5.0, help="length of the capacity measurement")
    overload.add_argument("--capacity-concurrency", type=int, default=8, help="closed-loop clients measuring it")
    overload.add_argument("--deadline-ms", type=float, default=1000.0, help="every overload request's deadline")
    overload.add_argument(
        "--overload-protocols", type=protocol_list(soak_overload.PROTOCOLS), default=list(soak_overload.PROTOCOLS),
        help=f"comma-separated, sharing the offered rate: {', '.join(soak_overload.PROTOCOLS)}",
    )  # fmt: skip
    overload.add_argument(
        "--grpc-calls-per-channel", type=int, default=16,
        help="gRPC calls in flight on one connection before the generator opens another (many clients, not one)",
    )  # fmt: skip
    overload.add_argument("--reject-p99-ms", type=float, default=100.0, help="target: rejection p99 at most this")
    soak = parser.add_argument_group("soak")
    soak.add_argument("--soak-s", type=float, default=600.0, help="length of the soak before SIGTERM")
    soak.add_argument("--warmup-s", type=float, default=60.0, help="start of the soak left out of growth figures")
    soak.add_argument("--concurrency", type=int, default=10, help="closed-loop clients, all protocols together")
    soak.add_argument(
        "--soak-protocols", type=protocol_list(PROTOCOLS), default=list(PROTOCOLS),
        help=f"comma-separated, clients assigned round-robin: {', '.join(PROTOCOLS)}",
    )  # fmt: skip
    soak.add_argument("--stream-frames", type=int, default=4, help="most frames one DetectStream writes")
    soak.add_argument("--sample-s", type=float, default=2.0, help="interval of the process samples")
    soak.add_argument("--drain-timeout-s", type=float, default=30.0, help="the server's --drain-timeout-s")
    soak.add_argument("--client-timeout-s", type=float, default=60.0, help="a client gives up on a call after this")
    soak.add_argument("--rss-growth-pct", type=float, default=5.0, help="target: RSS growth after warm-up below")
    soak.add_argument("--fd-slack", type=int, default=8, help="target: open fds grow by at most this")
    soak.add_argument("--thread-slack", type=int, default=4, help="target: threads grow by at most this")
    args = parser.parse_args(argv)
    if min(args.stream_frames, args.concurrency, args.capacity_concurrency, args.grpc_calls_per_channel) < 1:
        parser.error("--stream-frames, --concurrency, --capacity-concurrency, --grpc-calls-per-channel must be >= 1")
    if min(args.overload_s, args.soak_s, args.sample_s, args.factor, args.deadline_ms) <= 0:
        parser.error("durations, --factor and --deadline-ms must be > 0")
    return args


def main(argv: list[str] | None = None) -> int:
    """CLI entry point: run the chosen modes, print tables and verdicts, write ``--json``; always 0."""
    args = parse_args(argv)
    jpeg = args.image.read_bytes() if args.image else sample_jpeg()
    modes = list(MODES) if args.mode == "both" else [args.mode]
    results: dict[str, Any] = {"machine": describe(), "image_bytes": len(jpeg)}
    checks: list[Check] = []
    print(describe())
    for mode in modes:
        extra = ("--drain-timeout-s", f"{args.drain_timeout_s:g}") if mode == "soak" else ()
        run, report = MODES[mode]
        server = spawn(args, *extra)
        try:
            with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
                results[mode] = runner.run(run(args, server, jpeg))
        finally:
            server.stop()
        results[mode]["server_error_lines"] = server.error_lines
        checks += report(results[mode], args)
        print(
            f"server log: {len(server.error_lines)} ERROR line(s)"
            + "".join(f"\n  {line}" for line in server.error_lines[:3])
        )
    print()
    for check in checks:
        print(check.line())
    results["checks"] = [asdict(check) for check in checks]
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
