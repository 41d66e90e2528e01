"""``bench/soak.py --mode soak``: mixed-protocol closed-loop clients for minutes, the server process sampled from
``/proc``, then SIGTERM under load: does anything grow, and is every accepted request answered?"""

from __future__ import annotations

import argparse
import asyncio
import random
import signal
import subprocess
import time
from typing import Any

from bench.load import SpawnedServer, default_model, detect_grpc_call, http_post, oip_grpc_call, oip_rest_body
from bench.process_sampler import ProcessSampler, growth
from bench.soak_clients import (
    ANSWERED,
    CANCELLED,
    CUT,
    DEADLINE,
    DRAINED,
    JPEG_HEADERS,
    MASKED,
    OK,
    REFUSED,
    REJECTED,
    UNHINTED,
    GrpcChannels,
    HttpPool,
    Tally,
    stream_session,
)
from bench.soak_report import Check, p50_p99, table


def soak_senders(args: argparse.Namespace, server: SpawnedServer, jpeg: bytes, model: str):
    """``(sender, close)``: ``sender(protocol, index)`` is client ``index``'s ``send() -> Result``; ``await close()``
    closes the clients' connections."""
    host, port = "127.0.0.1", server.http_port
    pool = HttpPool(host, port, retry_closed=True, timeout_s=args.client_timeout_s)
    channels = GrpcChannels(f"127.0.0.1:{server.grpc_port}")
    rest = http_post(host, port, "/v1/detect", jpeg, JPEG_HEADERS)
    oip_rest = http_post(host, port, f"/v2/models/{model}/infer", *oip_rest_body(jpeg))
    grpc_detect, oip_grpc = channels.unary(detect_grpc_call(jpeg)), channels.unary(oip_grpc_call(model, jpeg))
    same_every_time = {
        "rest": lambda: pool.request(rest),
        "oip_rest": lambda: pool.request(oip_rest),
        "grpc": lambda: grpc_detect(args.client_timeout_s),
        "oip_grpc": lambda: oip_grpc(args.client_timeout_s),
    }
    frame = detect_grpc_call(jpeg).request

    def sender(protocol: str, index: int):
        if protocol != "grpc_stream":
            return same_every_time[protocol]
        rng = random.Random(index)  # each client its own, reproducible mix of stream lengths and endings

        def stream():
            if args.stream_frames == 1 or rng.random() < 1 / 3:
                frames, cancel_after = rng.randint(1, args.stream_frames), None
            else:  # at least one answer read, at least one frame still in flight
                frames = rng.randint(2, args.stream_frames)
                cancel_after = rng.randint(1, frames - 1)
            return stream_session(channels, frame, frames, cancel_after, args.client_timeout_s)

        return stream

    async def close() -> None:
        pool.close()
        await channels.close()

    return sender, close


async def run_soak(args: argparse.Namespace, server: SpawnedServer, jpeg: bytes) -> dict[str, Any]:
    """Mixed closed-loop clients for ``args.soak_s``, then SIGTERM under load; samples the process throughout."""
    model = await asyncio.to_thread(default_model, f"http://127.0.0.1:{server.http_port}")  # OIP paths name it
    sampler = ProcessSampler(server.proc.pid, args.sample_s).start()
    protocols = args.soak_protocols
    phase = "soak"  # "shutdown" from SIGTERM on: a result counts in the phase it ended in
    tallies = {protocol: {"soak": Tally(), "shutdown": Tally()} for protocol in protocols}
    stop = asyncio.Event()
    sender, close = soak_senders(args, server, jpeg, model)

    async def client(protocol: str, index: int) -> None:
        send = sender(protocol, index)
        while not stop.is_set():
            t0 = time.perf_counter()
            result = await send()
            tallies[protocol][phase].add(result, time.perf_counter() - t0)
            if result.outcome == REFUSED and phase == "shutdown":
                return  # the server has closed its listeners
            if result.outcome not in (OK, CANCELLED):
                await asyncio.sleep(0.1)  # a client backs off after anything but a success (the retry hint, shortened)

    loop = asyncio.get_running_loop()
    started_s = sampler.now_s()
    clients = [loop.create_task(client(protocols[i % len(protocols)], i)) for i in range(args.concurrency)]
    try:
        await asyncio.sleep(args.soak_s)
        phase, sigterm_s = "shutdown", sampler.now_s()
        server.proc.send_signal(signal.SIGTERM)
        try:
            exit_code = await asyncio.to_thread(server.proc.wait, args.drain_timeout_s + 30)
        except subprocess.TimeoutExpired:
            exit_code = None  # still running: SpawnedServer.stop() kills it
        exit_s = sampler.now_s() - sigterm_s
        stop.set()
        await asyncio.wait(clients, timeout=args.client_timeout_s + 5)  # the rest are cancelled below
    finally:
        for task in clients:
            task.cancel()  # no-op for finished ones
        await close()
        sampler.stop()
    steady = sampler.window(started_s + args.warmup_s, sigterm_s)
    samples = sampler.samples
    per_protocol = {
        protocol: {name: {**tally.summary(), "ok_ms": p50_p99(tally.latencies_s[OK])} for name, tally in phases.items()}
        for protocol, phases in tallies.items()
    }
    before = Tally.combine(phases["soak"] for phases in tallies.values())
    after = Tally.combine(phases["shutdown"] for phases in tallies.values())
    every = Tally.combine([before, after])
    answered = sum(every.counts[outcome] for outcome in ANSWERED)
    return {
        "duration_s": args.soak_s,
        "warmup_s": args.warmup_s,
        "concurrency": args.concurrency,
        "protocols": per_protocol,
        "errors_before_sigterm": before.errors + before.shutdown_only + before.counts[UNHINTED],
        "process": {
            "steady_samples": len(steady),
            "rss_kib": growth(steady, "rss_kib"),
            "fds": growth(steady, "fds"),
            "threads": growth(steady, "threads"),
            "samples": [[s.t_s - started_s, s.rss_kib, s.fds, s.threads] for s in samples],
        },
        "sigterm": {
            "exit_code": exit_code,
            "exit_s": exit_s,
            "sent": every.sent,
            "answered": answered,
            "cancelled": every.counts[CANCELLED],
            "refused_after_shutdown": after.counts[REFUSED],
            "cut_after_shutdown": after.counts[CUT],
            "masked_after_shutdown": after.counts[MASKED],
            # refused connections, cut calls and masked stream endings are what a server shutting down looks like
            "unanswered": every.sent - answered - every.counts[CANCELLED] - after.shutdown_only,
            "after_sigterm": after.summary(),
        },
    }


def report_soak(result: dict[str, Any], args: argparse.Namespace) -> list[Check]:
    """Print the soak tables; return its checks."""
    print(
        f"\nsoak: {result['concurrency']} clients over {', '.join(result['protocols'])} for {result['duration_s']:g} s "
        f"(warm-up {result['warmup_s']:g} s), then SIGTERM under load"
    )
    outcomes = [OK, REJECTED, UNHINTED, DEADLINE, DRAINED, CANCELLED, REFUSED, CUT, MASKED]
    columns = ["protocol", "phase", "sent", *outcomes, "errors", "retried", "ok p50 ms", "ok p99 ms"]
    rows = [
        [protocol, name, r["sent"], *(r["counts"].get(o, 0) for o in outcomes), r["errors"], r["retried_after_close"],
         r["ok_ms"]["p50"], r["ok_ms"]["p99"]]
        for protocol, phases in result["protocols"].items()
        for name, r in phases.items()
    ]  # fmt: skip
    print(table(columns, rows))
    for protocol, phases in result["protocols"].items():
        soak, shutdown = phases["soak"], phases["shutdown"]
        if soak["frames_sent"]:
            print(
                f"{protocol}: frames answered {soak['frames_answered']} of {soak['frames_sent']} sent (cancelled "
                "streams leave some unanswered)"
            )
        for example in soak["error_examples"] + shutdown["error_examples"]:
            print(f"  {protocol} {example}")
    process = result["process"]
    rss, fds, threads = process["rss_kib"], process["fds"], process["threads"]
    print(
        f"server after warm-up ({process['steady_samples']} samples every {args.sample_s:g} s): "
        f"RSS {rss['base'] / 1024:.1f} -> {rss['end'] / 1024:.1f} MiB (peak {rss['peak'] / 1024:.1f}); "
        f"fds {fds['base']:g} -> {fds['end']:g} (peak {fds['peak']:g}); "
        f"threads {threads['base']:g} -> {threads['end']:g} (peak {threads['peak']:g})"
    )
    term = result["sigterm"]
    print(
        f"SIGTERM: exit code {term['exit_code']} after {term['exit_s']:.1f} s; requests sent {term['sent']} = "
        f"answered {term['answered']} + cancelled {term['cancelled']} + after shutdown: refused "
        f"{term['refused_after_shutdown']}, cut {term['cut_after_shutdown']}, stream status masked by grpcio "
        f"{term['masked_after_shutdown']} + unanswered {term['unanswered']}"
    )
    soak_errors = result["errors_before_sigterm"]
    rss_pct = 100.0 * rss["growth"] / rss["base"] if rss["base"] else float("nan")
    enough = process["steady_samples"] >= 6  # the first 3 and the last 3 do not overlap
    return [
        Check("soak", "RSS growth after warm-up", f"{rss_pct:.2f} %", f"< {args.rss_growth_pct:g} %",
              enough and rss_pct < args.rss_growth_pct),
        Check("soak", "open fds growth after warm-up", f"{fds['peak_growth']:+g}", f"<= {args.fd_slack}",
              enough and fds["peak_growth"] <= args.fd_slack),
        Check("soak", "threads growth after warm-up", f"{threads['peak_growth']:+g}", f"<= {args.thread_slack}",
              enough and threads["peak_growth"] <= args.thread_slack),
        Check("soak", "errors before SIGTERM (incl. refused, cut, masked, unhinted)", str(soak_errors), "0",
              soak_errors == 0),
        Check("soak", "requests unanswered, SIGTERM included", str(term["unanswered"]), "0", term["unanswered"] == 0),
        Check("soak", "gRPC calls cut by the shutdown (no status; never reached a handler)",
              str(term["cut_after_shutdown"]), "0", term["cut_after_shutdown"] == 0),
        Check("soak", "exit code after SIGTERM", str(term["exit_code"]), "0", term["exit_code"] == 0),
    ]  # fmt: skip
