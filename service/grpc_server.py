"""gRPC front end for ``yoloxpai.v1.Detector`` (grpc.aio): ``Detect``, ``DetectStream``, ``ListModels``.

Thin: protobuf -> engine inputs -> ``engine.detect`` -> protobuf; domain errors become statuses through
``service.errors.GRPC_CODE`` (unary calls) or an in-band ``Status`` (stream frames). The server that hosts it beside
the Open Inference Protocol, health and reflection is ``service.grpc_host``. Imports nothing from ``model``.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator

import grpc

from service import errors
from service.accounting import counted
from service.auth import check_grpc_key
from service.engine import DetectOptions, DetectResult, Engine
from service.errors import InvalidImage, ServiceError
from service.imaging import EncodedImage, ImageInput, RawImage
from service.pb.yoloxpai.v1 import detection_pb2 as pb
from service.pb.yoloxpai.v1 import detection_pb2_grpc as pb_grpc
from service.settings import Settings
from service.streaming import windowed_stream

PROTOCOL = "grpc"
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Detector"].full_name  # "yoloxpai.v1.Detector"
_CHANNEL_ORDER = {pb.CHANNEL_ORDER_UNSPECIFIED: "bgr", pb.CHANNEL_ORDER_BGR: "bgr", pb.CHANNEL_ORDER_RGB: "rgb"}


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
    return pb.Status(code=errors.grpc_code(error).value[0], error=error.code, message=errors.public_message(error))


class DetectorServicer(pb_grpc.DetectorServicer):
    """``yoloxpai.v1.Detector`` over an :class:`Engine`."""

    def __init__(self, engine: Engine, settings: Settings) -> None:
        self._engine = engine
        self._settings = settings

    async def _abort(self, context: grpc.aio.ServicerContext, error: ServiceError) -> None:
        trailing = errors.grpc_trailers(error, self._settings.retry_after_s)
        await context.abort(errors.grpc_code(error), errors.public_message(error), trailing_metadata=trailing)

    async def _authorize(self, context: grpc.aio.ServicerContext) -> None:
        """Check the API key; a missing or wrong one ends the call with UNAUTHENTICATED."""
        try:
            check_grpc_key(context.invocation_metadata(), self._settings.api_keys)
        except ServiceError as exc:
            await self._abort(context, exc)

    async def _detect(
        self, request: pb.DetectRequest, context: grpc.aio.ServicerContext, start: float
    ) -> pb.DetectResponse:
        # Protobuf in, engine, protobuf out; a domain error raises (the callers answer it).
        image, options = request_to_inputs(request)
        result = await self._engine.detect(
            image,
            model=request.model or None,
            options=options,
            timeout_s=context.time_remaining(),
            version=request.model_version or None,
        )
        return result_to_pb(result, request.frame_id, (time.perf_counter() - start) * 1000.0)

    async def Detect(self, request: pb.DetectRequest, context: grpc.aio.ServicerContext) -> pb.DetectResponse:
        """One image; errors are call statuses."""
        start = time.perf_counter()
        try:
            with counted(self._engine, PROTOCOL, request.model, start):
                check_grpc_key(context.invocation_metadata(), self._settings.api_keys)
                return await self._detect(request, context, start)
        except ServiceError as exc:
            await self._abort(context, exc)  # raises: ends the call with the mapped status
            raise  # not reached

    async def _frame(self, request: pb.DetectRequest, context: grpc.aio.ServicerContext) -> pb.DetectResponse:
        # One stream frame; never raises a domain error (it is answered in band).
        start = time.perf_counter()
        try:
            with counted(self._engine, PROTOCOL, request.model, start):
                response = await self._detect(request, context, start)
        except ServiceError as exc:
            return pb.DetectResponse(model=request.model, frame_id=request.frame_id, status=error_status(exc))
        response.status.code = grpc.StatusCode.OK.value[0]
        return response

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
        """The served model versions, the default model first, each model's versions newest first."""
        await self._authorize(context)
        models = []
        newest: dict[str, str] = {}
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
                    default_version=newest.setdefault(info.name, info.version) == info.version,
                )
            )
        return pb.ListModelsResponse(models=models)


def add_to_server(engine: Engine, settings: Settings, server: grpc.aio.Server) -> None:
    """Register the service on a (not yet started) server."""
    pb_grpc.add_DetectorServicer_to_server(DetectorServicer(engine, settings), server)
