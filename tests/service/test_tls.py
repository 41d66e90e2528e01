"""TLS: one certificate serves HTTPS and gRPC over TLS (self-signed here, made with the openssl CLI)."""

from __future__ import annotations

import shutil
import subprocess

import httpx
import pytest

from tests.service.conftest import server_settings
from tests.service.servers import ServerThread
from yoloxpai.client import GrpcClient, RestClient

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl CLI")


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    out = tmp_path_factory.mktemp("tls")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
         "-keyout", str(out / "key.pem"), "-out", str(out / "cert.pem")],
        check=True, capture_output=True,
    )  # fmt: skip
    return out / "cert.pem", out / "key.pem"


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
