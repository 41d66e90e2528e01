"""``bench/soak.py --mode overload``: the server's capacity, then a multiple of it offered in an open loop with a
deadline on every request; how many were taken, how the rest were refused, and what the server's memory did."""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from bench.load import SpawnedServer, detect_grpc_call, http_post, run_http
from bench.process_sampler import ProcessSampler
from bench.soak_clients import DEADLINE, JPEG_HEADERS, OK, REJECTED, UNHINTED, GrpcChannels, HttpPool, Tally
from bench.soak_report import Check, p50_p99, table

PROTOCOLS = ("rest", "grpc")


async def open_loop(rate_hz: float, duration_s: float, senders: list) -> list[float]:
    """Start ``senders[i % len(senders)]()`` at ``t0 + i / rate_hz`` for ``duration_s`` whatever is still in flight
    (an open loop); wait for all of them; return how late each start was (s): the generator's own lag."""
    loop = asyncio.get_running_loop()
    tasks: set[asyncio.Task] = set()
    lags = []
    t0 = loop.time()
    for i in range(int(rate_hz * duration_s)):
        due = t0 + i / rate_hz
        if due > loop.time():
            await asyncio.sleep(due - loop.time())
        lags.append(loop.time() - due)
        task = loop.create_task(senders[i % len(senders)]())
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.wait(tasks)
    return lags


async def run_overload(args: argparse.Namespace, server: SpawnedServer, jpeg: bytes) -> dict[str, Any]:
    """Capacity, then ``args.factor`` x capacity offered in an open loop with a deadline on every request."""
    url, target = f"http://127.0.0.1:{server.http_port}", f"127.0.0.1:{server.grpc_port}"
    sampler = ProcessSampler(server.proc.pid, 1.0).start()
    capacity = args.capacity_img_s
    if capacity is None:
        c = args.capacity_concurrency
        capacity = (await run_http(url, "/v1/detect", jpeg, JPEG_HEADERS, [c], args.capacity_s, 1.0))[c][0]
    rate_hz, deadline_s = args.factor * capacity, args.deadline_ms / 1000.0
    protocols = args.overload_protocols
    tallies = {protocol: Tally() for protocol in protocols}
    pool = HttpPool("127.0.0.1", server.http_port, timeout_s=10 + 5 * deadline_s)
    rest_request = http_post(
        "127.0.0.1", server.http_port, f"/v1/detect?timeout_ms={args.deadline_ms:g}", jpeg, JPEG_HEADERS
    )
    channels = GrpcChannels(target, args.grpc_calls_per_channel)
    detect = channels.unary(detect_grpc_call(jpeg))
    calls = {"rest": lambda: pool.request(rest_request), "grpc": lambda: detect(deadline_s)}

    def timed(protocol: str):
        async def send() -> None:
            t0 = time.perf_counter()
            result = await calls[protocol]()
            tallies[protocol].add(result, time.perf_counter() - t0)

        return send

    try:
        start = sampler.take()
        lags = await open_loop(rate_hz, args.overload_s, [timed(p) for p in protocols])
        during = sampler.window(start.t_s)
        end = sampler.take()
    finally:
        pool.close()
        await channels.close()
        sampler.stop()
    protocol_results = {}
    for protocol, tally in [*tallies.items(), ("all", Tally.combine(tallies.values()))]:
        accepted = tally.latencies_s[OK] + tally.latencies_s[DEADLINE]
        protocol_results[protocol] = {
            **tally.summary(),
            "errors": tally.errors + tally.shutdown_only,  # nothing shuts down here: refused or cut calls are errors
            "accepted": len(accepted),
            "rejected": tally.counts[REJECTED] + tally.counts[UNHINTED],
            "rejection_ms": p50_p99(tally.latencies_s[REJECTED] + tally.latencies_s[UNHINTED]),
            "accepted_over_deadline": p50_p99(accepted, args.deadline_ms),
        }
    sent = protocol_results["all"]["sent"]
    return {
        "capacity_img_s": capacity,
        "capacity_measured": args.capacity_img_s is None,
        "factor": args.factor,
        "offered_rate_hz": rate_hz,
        "achieved_rate_hz": sent / args.overload_s,
        "generator_lag_ms": p50_p99(lags),
        "deadline_ms": args.deadline_ms,
        "duration_s": args.overload_s,
        "peak_http_connections": pool.peak_open,
        "grpc_connections": channels.count,
        "protocols": protocol_results,
        "rss_mib": {
            "start": start.rss_kib / 1024,
            "peak": max(s.rss_kib for s in [start, *during, end] if s) / 1024,
            "end": (end or during[-1]).rss_kib / 1024,
        },
    }


def report_overload(result: dict[str, Any], args: argparse.Namespace) -> list[Check]:
    """Print the overload table; return its checks."""
    how = "measured over REST" if result["capacity_measured"] else "given"
    print(
        f"\noverload: {result['factor']:g}x capacity ({result['capacity_img_s']:.1f} img/s, {how}) = "
        f"{result['offered_rate_hz']:.1f} req/s offered for {result['duration_s']:g} s, "
        f"deadline {result['deadline_ms']:g} ms"
    )
    columns = ["protocol", "sent", "accepted", "(expired)", "rejected", "(hinted)", "errors", "rej p50 ms"]
    columns += ["rej p99 ms", "acc p50/D", "acc p99/D"]
    rows = [
        [protocol, r["sent"], r["accepted"], r["counts"].get(DEADLINE, 0), r["rejected"], r["counts"].get(REJECTED, 0),
         r["errors"], r["rejection_ms"]["p50"], r["rejection_ms"]["p99"], r["accepted_over_deadline"]["p50"],
         r["accepted_over_deadline"]["p99"]]
        for protocol, r in result["protocols"].items()
    ]  # fmt: skip
    print(table(columns, rows))
    lag = result["generator_lag_ms"]
    print(
        f"generator: {result['achieved_rate_hz']:.1f} req/s sent, start lag p50 {lag['p50']:.2f} ms / p99 "
        f"{lag['p99']:.2f} ms; peak {result['peak_http_connections']} HTTP connections, "
        f"{result['grpc_connections']} gRPC connections"
    )
    rss = result["rss_mib"]
    print(f"server RSS: start {rss['start']:.1f} MiB, peak {rss['peak']:.1f} MiB, end {rss['end']:.1f} MiB")
    every = result["protocols"]["all"]
    for protocol, r in result["protocols"].items():
        for example in r["error_examples"]:
            print(f"  {protocol} {example}")
    rejected, hinted = every["rejected"], every["counts"].get(REJECTED, 0)
    checks = [
        Check("overload", "requests rejected", str(rejected), "> 0: the server was overloaded", rejected > 0),
        Check("overload", "errors (resets, refused, cut, 5xx but 503, timeouts)", str(every["errors"]), "0",
              every["errors"] == 0),
        Check("overload", "rejections with a retry hint", f"{hinted}/{rejected}", "all", hinted == rejected),
    ]  # fmt: skip
    for protocol, r in result["protocols"].items():
        if protocol == "all":
            continue
        reject_p99, accepted_p99 = r["rejection_ms"]["p99"], r["accepted_over_deadline"]["p99"]
        checks += [
            Check("overload", f"{protocol} rejection p99", f"{reject_p99:.1f} ms",
                  f"<= {args.reject_p99_ms:g} ms (immediate)", reject_p99 <= args.reject_p99_ms),
            Check("overload", f"{protocol} accepted p99", f"{accepted_p99:.2f}x deadline", "<= 2x deadline",
                  accepted_p99 <= 2.0),
        ]  # fmt: skip
    return checks
