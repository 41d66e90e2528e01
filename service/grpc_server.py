"""gRPC front end (grpc.aio): ``yoloxpai.v1.Detector`` + ``grpc.health.v1`` + server reflection, and the Open
Inference Protocol's ``inference.GRPCInferenceService`` (``service.oip.grpc_service``) on the same server.

Thin: protobuf -> engine inputs -> ``engine.detect`` -> protobuf; domain errors become statuses through
``service.errors.GRPC_CODE`` (unary calls) or an in-band ``Status`` (stream frames). With ``service.oip``, the only
code that imports the generated ``service.pb`` modules on the server side. Reflection lists ``yoloxpai.v1`` and
health only: the ``inference`` protos live in a private descriptor pool (see ``proto/gen.py``), which the
reflection service cannot read beside the default one. ``create_server`` returns a bound, not yet started server
so tests can bind port 0. Imports nothing from ``model``.
"""

from __future__ import annotations

import contextlib
import hmac
import time
from collections.abc import AsyncIterator

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection

from service import errors
from service.engine import DetectOptions, DetectResult, Engine
from service.errors import InvalidImage, ServiceError, Unauthenticated
from service.imaging import EncodedImage, ImageInput, RawImage
from service.oip import grpc_service as oip_grpc
from service.oip.serving import counted
from service.pb.yoloxpai.v1 import detection_pb2 as pb
from service.pb.yoloxpai.v1 import detection_pb2_grpc as pb_grpc
from service.settings import Settings
from service.streaming import windowed_stream

PROTOCOL = "grpc"
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Detector"].full_name  # "yoloxpai.v1.Detector"
_CHANNEL_ORDER = {pb.CHANNEL_ORDER_UNSPECIFIED: "bgr", pb.CHANNEL_ORDER_BGR: "bgr", pb.CHANNEL_ORDER_RGB: "rgb"}
# gRPC's own floor for the message limit: a 4 MB default rejects ordinary camera frames sent raw.
MIN_MESSAGE_BYTES = 16 * 1024 * 1024


def request_to_inputs(request: pb.DetectRequest) -> tuple[ImageInput, DetectOptions]:
    """Protobuf request -> engine image input and options."""
    kind = request.image.WhichOneof("data")
    if kind == "encoded":
        image: ImageInput = EncodedImage(request.image.encoded)
    elif kind == "raw":
        raw = request.image.raw
        if raw.channel_order not in _CHANNEL_ORDER:
            raise InvalidImage(f"unknown channel order {raw.channel_order}")
        image = RawImage(raw.pixels, raw.width, raw.height, _CHANNEL_ORDER[raw.channel_order])
    else:
        raise InvalidImage("the request has no image: set image.encoded or image.raw")
    classes = (*request.class_ids, *request.class_names)
    options = DetectOptions(
        score_threshold=request.score_threshold if request.HasField("score_threshold") else None,
        max_detections=request.max_detections if request.HasField("max_detections") else None,
        classes=classes or None,
    )
    return image, options


def result_to_pb(result: DetectResult, frame_id: int = 0, total_ms: float = 0.0) -> pb.DetectResponse:
    """Engine result -> protobuf response."""
    detections = [
        pb.Detection(box=pb.Box(x1=b[0], y1=b[1], x2=b[2], y2=b[3]), score=s, class_id=c, class_name=n)
        for b, s, c, n in zip(
            result.boxes_xyxy.tolist(),
            result.scores.tolist(),
            result.class_ids.tolist(),
            result.class_names,
            strict=True,
        )
    ]
    t = result.timing
    return pb.DetectResponse(
        model=result.model,
        model_version=result.model_version,
        width=result.width,
        height=result.height,
        detections=detections,
        timing=pb.Timing(
            decode_ms=t.decode_ms,
            queue_ms=t.queue_ms,
            inference_ms=t.inference_ms,
            postprocess_ms=t.postprocess_ms,
            total_ms=total_ms,
        ),
        frame_id=frame_id,
    )


def error_status(error: ServiceError) -> pb.Status:
    """A domain error as an in-band frame status."""
    return pb.Status(code=errors.grpc_code(error).value[0], error=error.code, message=error.message)


class DetectorServicer(pb_grpc.DetectorServicer):
    """``yoloxpai.v1.Detector`` over an :class:`Engine`."""

    def __init__(self, engine: Engine, settings: Settings) -> None:
        self._engine = engine
        self._settings = settings
        self._keys = [key.encode() for key in settings.api_keys]

    def _check_key(self, context: grpc.aio.ServicerContext) -> None:
        if not self._keys:
            return
        metadata = dict(context.invocation_metadata() or ())
        scheme, _, token = str(metadata.get("authorization", "")).partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise Unauthenticated("missing API key: send metadata `authorization: Bearer <key>`")
        if not any([hmac.compare_digest(token.strip().encode(), key) for key in self._keys]):
            raise Unauthenticated("invalid API key")

    async def _abort(self, context: grpc.aio.ServicerContext, error: ServiceError) -> None:
        trailing = (("retry-after", str(self._settings.retry_after_s)),) if isinstance(error, errors.RETRYABLE) else ()
        await context.abort(errors.grpc_code(error), error.message, trailing_metadata=trailing)

    async def _authorize(self, context: grpc.aio.ServicerContext) -> None:
        """Check the API key; a missing or wrong one ends the call with UNAUTHENTICATED."""
        try:
            self._check_key(context)
        except ServiceError as exc:
            await self._abort(context, exc)

    async def _detect(
        self, request: pb.DetectRequest, context: grpc.aio.ServicerContext, start: float
    ) -> pb.DetectResponse:
        # Protobuf in, engine, protobuf out; a domain error raises (the callers answer it).
        image, options = request_to_inputs(request)
        result = await self._engine.detect(
            image, model=request.model or None, options=options, timeout_s=context.time_remaining()
        )
        return result_to_pb(result, request.frame_id, (time.perf_counter() - start) * 1000.0)

    async def Detect(self, request: pb.DetectRequest, context: grpc.aio.ServicerContext) -> pb.DetectResponse:
        """One image; errors are call statuses."""
        start = time.perf_counter()

        async def work() -> pb.DetectResponse:
            self._check_key(context)
            return await self._detect(request, context, start)

        outcome = await counted(self._engine, PROTOCOL, request.model, start, work())
        if isinstance(outcome, ServiceError):
            await self._abort(context, outcome)  # raises: ends the call with the mapped status
        return outcome

    async def _frame(self, request: pb.DetectRequest, context: grpc.aio.ServicerContext) -> pb.DetectResponse:
        # One stream frame; never raises a domain error (it is answered in band).
        start = time.perf_counter()
        outcome = await counted(self._engine, PROTOCOL, request.model, start, self._detect(request, context, start))
        if isinstance(outcome, ServiceError):
            return pb.DetectResponse(model=request.model, frame_id=request.frame_id, status=error_status(outcome))
        outcome.status.code = grpc.StatusCode.OK.value[0]
        return outcome

    async def DetectStream(
        self, request_iterator: AsyncIterator[pb.DetectRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.DetectResponse]:
        """Frames in, responses out in the same order; at most ``stream_window`` frames in flight."""
        await self._authorize(context)
        draining = self._engine.draining
        stream = windowed_stream(
            request_iterator,
            lambda request: self._frame(request, context),
            window=self._settings.stream_window,
            draining=draining,
            ordered=True,
        )
        async with contextlib.aclosing(stream) as responses:
            async for _, response in responses:
                yield response
        if draining.is_set():
            context.set_trailing_metadata((("yoloxpai-stream-end", "draining"),))

    async def ListModels(
        self, request: pb.ListModelsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListModelsResponse:
        """The served models, default first."""
        await self._authorize(context)
        models = []
        for i, info in enumerate(self._engine.models()):
            models.append(
                pb.ModelInfo(
                    name=info.name,
                    version=info.version,
                    default=i == 0,
                    classes=info.class_names,
                    input_height=info.input_hw[0],
                    input_width=info.input_hw[1],
                    backend=info.backend,
                    devices=info.devices,
                    instances=info.instances,
                    max_batch_size=info.max_batch_size,
                    max_queue_delay_ms=info.max_queue_delay_ms,
                    queue_capacity=info.queue_capacity,
                    min_score_threshold=info.score_threshold,
                    default_score_threshold=info.default_score_threshold,
                    max_detections=info.max_detections,
                )
            )
        return pb.ListModelsResponse(models=models)


class EngineHealthServicer(health_aio.HealthServicer):
    """``grpc.health.v1.Health`` whose ``Check`` reads the engine's readiness live (Watch gets pushed updates)."""

    SERVICES = ("", SERVICE_NAME, oip_grpc.SERVICE_NAME)

    def __init__(self, engine: Engine) -> None:
        super().__init__()
        self._engine = engine

    async def Check(
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext
    ) -> health_pb2.HealthCheckResponse:
        """SERVING when the engine is ready."""
        if request.service not in self.SERVICES:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown service {request.service!r}")
        serving = self._engine.is_ready()
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        return health_pb2.HealthCheckResponse(status=status)

    async def publish(self) -> None:
        """Push the current readiness to ``Watch`` subscribers."""
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if self._engine.is_ready()
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
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
        options=[
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", limit),
            ("grpc.so_reuseport", 0),  # a second server on the same port must fail, not share traffic
        ]
    )
    pb_grpc.add_DetectorServicer_to_server(DetectorServicer(engine, settings), server)
    oip_grpc.add_to_server(engine, settings, server)
    health = EngineHealthServicer(engine)
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    health_name = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
    reflection.enable_server_reflection((SERVICE_NAME, health_name, reflection.SERVICE_NAME), server)
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
