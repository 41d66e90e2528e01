"""The benchmark scripts run end to end and print complete tables (tiny sizes: this checks they work, not speed)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
NUMBER = r"[0-9]+(?:\.[0-9]+)?"


def run_script(*args: str, ok_codes: tuple[int, ...] = (0,), timeout_s: float = 300.0) -> str:
    done = subprocess.run(
        [sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout_s, check=False
    )
    assert done.returncode in ok_codes, done.stdout + done.stderr
    return done.stdout


def test_backends_bench_prints_every_backend_and_batch(full_bundle: Path) -> None:
    out = run_script(
        "bench/backends.py", "--bundle", str(full_bundle), "--batch-sizes", "1", "2", "--runs", "1", "--threads", "1"
    )
    assert "cores" in out.splitlines()[0]  # the machine line
    for backend in ("eager-pytorch", "torchscript", "onnxruntime", "openvino"):
        for batch in (1, 2):
            row = rf"^{backend}\s+{batch}\s+{NUMBER}\s+{NUMBER}\s+{NUMBER}\s+{NUMBER}\s+{NUMBER}\s+{NUMBER}x$"
            assert re.search(row, out, re.MULTILINE), (backend, batch, out)


def test_model_latency_bench_prints_train_and_deploy_forms() -> None:
    out = run_script(
        "bench/model_latency.py", "--presets", "yolox-nano", "yolox-pai-s", "--sizes", "64", "--runs", "1",
        "--warmup", "0", "--threads", "1",
    )  # fmt: skip
    for preset in ("yolox-nano", "yolox-pai-s"):
        assert re.search(rf"^{preset}\s+64x64\s+{NUMBER}\s+{NUMBER}\s+{NUMBER}x$", out, re.MULTILINE), out


def test_load_bench_drives_a_real_server(tiny_bundle: Path) -> None:
    out = run_script(
        "bench/load.py", "--bundle", str(tiny_bundle), "--concurrency", "1,2", "--duration-s", "0.5",
        "--warmup-s", "0.2", "--protocols", "rest,grpc,grpc_stream,oip_rest,oip_grpc", "--threads", "1",
        "--baseline-server-arg=--batches-per-instance=1",
        ok_codes=(0, 1),  # 1: a speed target missed, which half-second runs on a busy CI machine may well do
    )  # fmt: skip
    protocols = ("rest", "grpc", "grpc_stream", "oip_rest", "oip_grpc")
    for protocol in (*protocols, *(f"base:{p}" for p in protocols)):
        for c in (1, 2):
            match = re.search(rf"^\s*{protocol}\s+{c}\s+({NUMBER})(?:\s+{NUMBER}){{3}}\s+(\d+)$", out, re.MULTILINE)
            assert match, (protocol, c, out)
            assert float(match.group(1)) > 0 and match.group(2) == "0"  # answered, no errors
        assert re.search(rf"^{protocol}: p50 at C=1 = {NUMBER}x .*blocks interleaved", out, re.MULTILINE), out
    for protocol in protocols:  # the baseline server, side by side
        comparison = rf"^{protocol} vs base:{protocol}: images/s C=1 {NUMBER}x, C=2 {NUMBER}x; p50 C=1 {NUMBER}x"
        assert re.search(comparison, out, re.MULTILINE), out
    assert re.search(rf"^transport floor .*: http {NUMBER} ms, grpc {NUMBER} ms$", out, re.MULTILINE), out
    # the bare Predictor, in the same cycle as the server: a single-image p50 beside each row's C = 1 blocks and a
    # rate per batch size
    assert re.search(r"^bare Predictor \(onnxruntime on cpu, ", out, re.MULTILINE), out
    singles = re.search(r"^  single-image p50: (.*)$", out, re.MULTILINE)
    assert singles, out
    for protocol in (*protocols, *(f"base:{p}" for p in protocols)):
        assert re.search(rf"{NUMBER} ms \(beside {protocol}\)", singles.group(1)), (protocol, out)
    assert re.search(rf"^  batch 1: {NUMBER} img/s(, batch \d+: {NUMBER} img/s)+$", out, re.MULTILINE), out


def test_load_bench_runs_the_bare_predictor_on_the_servers_backend(full_bundle: Path) -> None:
    # the server is told its backend here; with ``auto`` it is the one its load-time timing chose
    out = run_script(
        "bench/load.py", "--bundle", str(full_bundle), "--concurrency", "1", "--duration-s", "0.3",
        "--warmup-s", "0.1", "--protocols", "rest", "--server-arg=--backend=torchscript",
        ok_codes=(0, 1),
    )  # fmt: skip
    assert re.search(r"^bare Predictor \(torchscript on cpu, ", out, re.MULTILINE), out


def test_runtime_threads_bench_compares_session_layouts(tiny_bundle: Path) -> None:
    out = run_script("bench/runtime_threads.py", "--bundle", str(tiny_bundle), "--batch", "2", "--runs", "4")
    assert "cores" in out.splitlines()[0]
    for wait in ("sleep", "spin"):
        assert re.search(rf"^\s+\d+\s+{wait}\s+{NUMBER}\s+\d+\s+\d+\s+(?:\d+|-)$", out, re.MULTILINE), (wait, out)
    assert re.search(rf"spinning threads are {NUMBER}x as fast", out), out


def test_soak_bench_help_and_a_short_overload(tiny_bundle: Path) -> None:
    out = run_script("bench/soak.py", "--help")
    for flag in ("--mode", "--overload-s", "--factor", "--capacity-img-s", "--deadline-ms", "--soak-s", "--warmup-s"):
        assert flag in out, flag
    bad = subprocess.run(
        [sys.executable, "bench/soak.py", "--overload-protocols", "rest,smtp"], cwd=REPO, capture_output=True,
        text=True, timeout=60, check=False,
    )  # fmt: skip
    assert bad.returncode == 2 and "unknown protocol(s) ['smtp']" in bad.stderr, bad.stderr  # before any server
    # the overload table (tests/deploy/test_soak.py runs both modes and checks their properties)
    out = run_script(
        "bench/soak.py", "--bundle", str(tiny_bundle), "--mode", "overload", "--overload-s", "1",
        "--capacity-img-s", "100", "--overload-protocols", "rest",
    )  # fmt: skip
    assert "cores" in out.splitlines()[0]
    row = rf"^\s+rest\s+(\d+)\s+\d+\s+\d+\s+\d+\s+\d+\s+\d+(?:\s+(?:{NUMBER}|nan)){{4}}$"
    match = re.search(row, out, re.MULTILINE)
    assert match and int(match.group(1)) == 400, out  # 4 x 100 req/s for 1 s, as scheduled
    assert re.search(r"^server RSS: start \d+\.\d MiB, peak \d+\.\d MiB, end \d+\.\d MiB$", out, re.MULTILINE), out
    assert re.search(r"^overload: errors \(.*\) = \d+ \(target 0\) (PASS|FAIL)$", out, re.MULTILINE), out


def test_gpu_e2e_bench_runs_every_section_on_the_cpu() -> None:
    # The same code the lent GPU runs (bench/device_check.sh), at CPU size: every table row is printed.
    out = run_script(
        "bench/gpu_e2e.py", "--device", "cpu", "--no-compile", "--arch", "yolox-nano", "--img-size", "96", "96",
        "--batch-sizes", "1", "2", "--runs", "1",
    )  # fmt: skip
    for variant in ("eager fp32", "torchscript fp32"):
        for batch in (1, 2):
            assert re.search(rf"^{variant}\s+{batch}\s+{NUMBER}\s+{NUMBER}\s+{NUMBER}x$", out, re.MULTILINE), out
    for path in ("host OpenCV", "device decode\\+letterbox"):
        assert re.search(rf"^{path}\s+2\s+{NUMBER}\s+{NUMBER}x$", out, re.MULTILINE), out
    for path in ("host decode \\(Predictor\\)", "device pipeline"):
        assert re.search(rf"^{path}\s+2\s+{NUMBER}\s+{NUMBER}\s+{NUMBER}$", out, re.MULTILINE), out


def test_peers_bench_serves_the_same_model_three_ways_and_compares(tiny_bundle: Path, tmp_path: Path) -> None:
    # Ours, FastAPI + ONNX Runtime and LitServe + ONNX Runtime on the same model.onnx, measured alternately.
    results = tmp_path / "peers.json"
    out = run_script(
        "bench/peers.py", "--bundle", str(tiny_bundle), "--concurrency", "1,2", "--duration-s", "0.5",
        "--warmup-s", "0.2", "--rounds", "1", "--json", str(results),
    )  # fmt: skip
    for server in ("yoloxpai", "fastapi\\+ort", "litserve\\+ort"):
        assert re.search(rf"^  {server}\s+\d+ detections", out, re.MULTILINE), out  # each answered the image
        for c in (1, 2):
            assert re.search(rf"^{server}\s+{c}\s+{NUMBER}\s+{NUMBER}\s+{NUMBER}\s+0$", out, re.MULTILINE), out
    for peer in ("fastapi\\+ort", "litserve\\+ort"):
        assert re.search(rf"^{peer}\s+2\s+{NUMBER}x\s+{NUMBER}x$", out, re.MULTILINE), out
    assert "the others are paused (SIGSTOP)" in out, out
    rows = json.loads(results.read_text())["rows"]
    assert {(r["server"], r["concurrency"]) for r in rows} == {
        (s, c) for s in ("yoloxpai", "fastapi+ort", "litserve+ort") for c in (1, 2)
    }
    assert all(r["img_s"] > 0 and r["errors"] == 0 for r in rows)


def test_peers_bench_pauses_the_servers_not_measured() -> None:
    import importlib.util

    # bench/peers.py is a script beside the bench/peers/ package of the peer servers: load it by path
    spec = importlib.util.spec_from_file_location("peers_script", REPO / "bench" / "peers.py")
    peers = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = peers  # its dataclasses look their module up there
    spec.loader.exec_module(peers)
    Server, others_paused, state = peers.Server, peers.others_paused, peers.process_state

    procs = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) for _ in range(2)]
    try:
        servers = [Server(f"s{i}", "", "", b"", {}, p.pid, p.kill) for i, p in enumerate(procs)]
        with others_paused(servers, servers[0], pause=True):
            assert state(procs[1].pid) == "T" and state(procs[0].pid) != "T"
        assert state(procs[1].pid) in ("S", "R")  # continued
        with others_paused(servers, servers[0], pause=False):
            assert state(procs[1].pid) != "T"
    finally:
        for p in procs:
            p.kill()
            p.wait()
