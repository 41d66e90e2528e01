"""The gRPC server: ``yoloxpai.v1.Detector`` (``service.grpc_server``) and the Open Inference Protocol's
``inference.GRPCInferenceService`` (``service.oip.grpc_service``) on one grpc.aio server, with ``grpc.health.v1``
reading the engine's readiness and server reflection. Reflection lists ``yoloxpai.v1`` and health only: the
``inference`` protos live in a private descriptor pool (see ``proto/gen.py``), which the reflection service cannot
read beside the default one. ``create_server`` returns a bound, not yet started server so tests can bind port 0.
Imports nothing from ``model``.
"""

from __future__ import annotations

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection

from service import grpc_server
from service.engine import Engine
from service.grpc_calls import CallInterceptor
from service.oip import grpc_service as oip_grpc
from service.settings import Settings

# gRPC's own floor for the message limit: a 4 MB default rejects ordinary camera frames sent raw.
MIN_MESSAGE_BYTES = 16 * 1024 * 1024


class EngineHealthServicer(health_aio.HealthServicer):
    """``grpc.health.v1.Health`` whose ``Check`` reads the engine's readiness live (Watch gets pushed updates)."""

    SERVICES = ("", grpc_server.SERVICE_NAME, oip_grpc.SERVICE_NAME)

    def __init__(self, engine: Engine) -> None:
        super().__init__()
        self._engine = engine

    async def Check(
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext
    ) -> health_pb2.HealthCheckResponse:
        """SERVING when the engine is ready."""
        if request.service not in self.SERVICES:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown service {request.service!r}")
        return health_pb2.HealthCheckResponse(status=self._status())

    def _status(self) -> health_pb2.HealthCheckResponse.ServingStatus:
        ready = self._engine.is_ready()
        return health_pb2.HealthCheckResponse.SERVING if ready else health_pb2.HealthCheckResponse.NOT_SERVING

    async def publish(self) -> None:
        """Push the current readiness to ``Watch`` subscribers."""
        status = self._status()
        for service in self.SERVICES:
            await self.set(service, status)


def message_limit_bytes(settings: Settings) -> int:
    """gRPC send/receive limit: the request byte limit plus framing room, never under 16 MB."""
    return max(MIN_MESSAGE_BYTES, settings.max_request_bytes + 64 * 1024)


def create_server(
    engine: Engine, settings: Settings, port: int | None = None
) -> tuple[grpc.aio.Server, int, EngineHealthServicer]:
    """Build and bind (not start) the gRPC server; returns ``(server, bound port, health servicer)``."""
    limit = message_limit_bytes(settings)
    server = grpc.aio.server(
        interceptors=[CallInterceptor(settings.access_log)],
        options=[
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", limit),
            ("grpc.so_reuseport", 0),  # a second server on the same port must fail, not share traffic
            ("grpc.max_concurrent_streams", settings.grpc_max_concurrent_streams),
            ("grpc.keepalive_time_ms", int(settings.grpc_keepalive_s * 1000)),
            ("grpc.keepalive_timeout_ms", 20_000),
            ("grpc.max_connection_age_ms", int(settings.grpc_max_connection_age_s * 1000)),
            ("grpc.max_connection_age_grace_ms", int(max(settings.drain_timeout_s, 1.0) * 1000)),
        ],
    )
    grpc_server.add_to_server(engine, settings, server)
    oip_grpc.add_to_server(engine, settings, server)
    health = EngineHealthServicer(engine)
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    health_name = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
    reflection.enable_server_reflection((grpc_server.SERVICE_NAME, health_name, reflection.SERVICE_NAME), server)
    address = f"{settings.host}:{settings.grpc_port if port is None else port}"
    if settings.tls_cert_file is not None and settings.tls_key_file is not None:
        credentials = grpc.ssl_server_credentials(
            [(settings.tls_key_file.read_bytes(), settings.tls_cert_file.read_bytes())]
        )
        bound = server.add_secure_port(address, credentials)
    else:
        bound = server.add_insecure_port(address)
    if bound == 0:
        raise OSError(f"cannot bind gRPC to {address}")
    return server, bound, health
