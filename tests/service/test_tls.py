"""TLS: one certificate serves HTTPS and gRPC over TLS (self-signed here, made with the openssl CLI)."""

from __future__ import annotations

import shutil

import httpx
import pytest

from tests.service.conftest import server_settings
from tests.service.servers import ServerThread
from yoloxpai.client import GrpcClient, RestClient

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl CLI")


def test_https_and_grpc_tls(tiny_bundle, certificate, jpeg):
    cert, key = certificate
    with ServerThread(server_settings(tiny_bundle, tls_cert_file=cert, tls_key_file=key)) as server:
        https = f"https://127.0.0.1:{server.server.http_port}"
        with RestClient(https, verify=str(cert)) as rest:
            assert rest.detect(jpeg).width == 128
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{server.server.http_port}/healthz", timeout=5)
        with GrpcClient(server.grpc_target, root_certificates=cert.read_bytes()) as rpc:
            assert rpc.detect(jpeg).width == 128
