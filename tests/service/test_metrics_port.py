"""``metrics_port``: ``/metrics`` on its own plain-HTTP port (no TLS, no key) and gone from the main HTTP port."""

from __future__ import annotations

import argparse
import asyncio
import ssl

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from service.cli import add_arguments, settings_from_args
from service.metrics import CONTENT_TYPE
from service.metrics_http import create_metrics_app
from tests.service.conftest import server_settings
from tests.service.servers import ServerThread


def test_flag_and_default() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert settings_from_args(parser.parse_args([])).metrics_port is None  # default: /metrics stays on HTTP
    assert settings_from_args(parser.parse_args(["--metrics-port", "8002"])).metrics_port == 8002


def test_metrics_port_is_plain_http_beside_tls_and_keys(tiny_bundle, certificate, jpeg) -> None:
    cert, key = certificate
    settings = server_settings(tiny_bundle, tls_cert_file=cert, tls_key_file=key, api_keys=["k1"], metrics_port=0)
    with ServerThread(settings) as server:
        metrics_url = f"http://127.0.0.1:{server.server.metrics_port}"
        https = f"https://127.0.0.1:{server.server.http_port}"
        with httpx.Client(base_url=https, verify=ssl.create_default_context(cafile=cert), timeout=10) as client:
            headers = {"content-type": "image/jpeg", "authorization": "Bearer k1"}
            assert client.post("/v1/detect", content=jpeg, headers=headers).status_code == 200
            # Probes stay on the main port, open without a key; /metrics left it.
            assert client.get("/healthz").status_code == 200
            assert client.get("/readyz").status_code == 200
            assert client.get("/metrics").status_code == 404
            assert client.get("/metrics", headers={"authorization": "Bearer k1"}).status_code == 404
        # Plain HTTP, no certificate, no key: what Prometheus does.
        scrape = httpx.get(metrics_url + "/metrics", timeout=10)
        assert scrape.status_code == 200
        assert scrape.headers["content-type"] == CONTENT_TYPE
        counted = [line for line in scrape.text.splitlines() if line.startswith("yoloxpai_requests_total{")]
        assert any('model="tiny"' in line and 'protocol="rest"' in line and line.endswith(" 1.0") for line in counted)
        assert "nv_inference_request_success" in scrape.text
        assert httpx.get(metrics_url + "/healthz", timeout=10).status_code == 404  # nothing else on this port
        with grpc.secure_channel(server.grpc_target, grpc.ssl_channel_credentials(cert.read_bytes())) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
    # Shutdown closed the metrics listener too.
    with pytest.raises(httpx.TransportError):
        httpx.get(metrics_url + "/metrics", timeout=2)


def test_without_metrics_port_metrics_stay_on_the_http_port(server) -> None:
    assert server.server.metrics_port is None
    response = httpx.get(server.http_url + "/metrics", timeout=10)
    assert response.status_code == 200 and "yoloxpai_ready" in response.text


def test_metrics_app_answers_get_metrics_only() -> None:
    class _Telemetry:
        def render(self) -> bytes:
            return b"yoloxpai_ready 1\n"

    class _Engine:
        telemetry = _Telemetry()

    async def main() -> None:
        transport = httpx.ASGITransport(app=create_metrics_app(_Engine()))  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport, base_url="http://metrics") as client:
            ok = await client.get("/metrics")
            assert ok.status_code == 200 and ok.text == "yoloxpai_ready 1\n"
            assert (await client.post("/metrics")).status_code == 405
            assert (await client.get("/v1/models")).status_code == 404

    asyncio.run(main())
