"""The other side of the deployment files: a real server answers on the probe paths and ports the manifests use,
exposes every metric (with the labels) that the HPA rule and the dashboard query, and drains on SIGTERM."""

from __future__ import annotations

import re
import signal
import time

import cv2
import numpy as np
import pytest

from ._manifests import metric_names, promql_sources, resolve_series

httpx = pytest.importorskip("httpx", reason="httpx (dev extra) is needed to talk to the server")

_TYPE_LINE = re.compile(r"^# TYPE (\S+) (\S+)$", re.MULTILINE)
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{([^}]*)\})? ", re.MULTILINE)


def _exposition(text: str) -> tuple[dict[str, str], dict[str, set[str]]]:
    """({family name in TYPE lines: type}, {sample name: label names seen})."""
    types = dict(_TYPE_LINE.findall(text))
    samples: dict[str, set[str]] = {}
    for name, labels in _SAMPLE.findall(text):
        samples.setdefault(name, set()).update(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="', labels))
    return types, samples


def _jpeg() -> bytes:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, size=(120, 160, 3), dtype=np.uint8)
    ok, encoded = cv2.imencode(".jpg", image)
    assert ok
    return encoded.tobytes()


def test_probe_paths_answer(live_server) -> None:
    with httpx.Client(base_url=live_server.url, timeout=10) as client:
        for path in ("/healthz", "/readyz"):  # the probe paths of deploy/k8s and the HEALTHCHECK
            assert client.get(path).status_code == 200, path


def test_grpc_health_serving(live_server) -> None:
    grpc = pytest.importorskip("grpc")
    health_pb2 = pytest.importorskip("grpc_health.v1.health_pb2")
    health_pb2_grpc = pytest.importorskip("grpc_health.v1.health_pb2_grpc")
    with grpc.insecure_channel(f"127.0.0.1:{live_server.grpc_port}") as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_metrics_used_by_deploy_files_are_exposed(live_server) -> None:
    with httpx.Client(base_url=live_server.url, timeout=30) as client:
        response = client.post("/v1/detect", content=_jpeg(), headers={"Content-Type": "image/jpeg"})
        assert response.status_code == 200, response.text
        text = client.get("/metrics").text
    types, samples = _exposition(text)
    for where, expr in promql_sources():
        for series in metric_names(expr):
            metric, suffix = resolve_series(series)
            assert types.get(metric.name) == metric.type, (
                f"{where}: the server exposes {metric.name} as {types.get(metric.name)}, contract says {metric.type}"
            )
            if series in samples:  # labelled families have no samples until first used
                extra = samples[series] - metric.labels - {"le"}
                assert not extra, f"{series} carries labels {sorted(extra)} not in docs/contracts.md"
    # After one detection the series behind the HPA signal and the latency panels exist.
    for series in ("yoloxpai_queue_wait_seconds_sum", "yoloxpai_queue_wait_seconds_count",
                   "yoloxpai_request_duration_seconds_bucket", "yoloxpai_batch_size_bucket"):  # fmt: skip
        assert series in samples, f"{series} missing after a request"


def test_sigterm_drains_and_exits_cleanly(live_server) -> None:
    """What the Kubernetes preStop/grace budget and Docker's stop_grace_period rely on."""
    process = live_server.process
    start = time.monotonic()
    process.send_signal(signal.SIGTERM)
    returncode = process.wait(timeout=live_server.drain_timeout_s + 15)
    assert returncode == 0, f"exit {returncode} after SIGTERM:\n{live_server.log_tail()}"
    assert time.monotonic() - start < live_server.drain_timeout_s + 10
