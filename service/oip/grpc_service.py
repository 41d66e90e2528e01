"""Open Inference Protocol over gRPC: ``inference.GRPCInferenceService`` (KServe v2 + Triton's streaming, config
and statistics RPCs) beside ``yoloxpai.v1.Detector`` on the same server. Thin: protobuf (``grpc_codec``) ->
``serving.infer`` (the engine) -> protobuf.

Errors: unary calls end with ``service.errors.TRITON_STATUS`` codes and Triton's wording. ``ModelStreamInfer``
answers each request as it completes (match by ``id``), reports a failing request in band (``error_message``)
and keeps the stream open, unless the client sent metadata ``triton_grpc_error: true``: then the first failure
ends the stream with its status. The model repository RPCs (``RepositoryIndex``, ``RepositoryModelLoad``,
``RepositoryModelUnload``) answer once the change is made, as ``POST /v2/repository/...`` does.
ServerLive/ServerReady are open; every other RPC needs the API key when keys are configured. Imports nothing from
``model``.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import grpc

from service import errors
from service.accounting import counted
from service.auth import check_grpc_key
from service.engine import Engine, ModelInfo
from service.errors import NotReady, ServiceError
from service.oip import descriptions
from service.oip.grpc_codec import decode_request, encode_response, from_dict
from service.oip.serving import check_load_parameters, infer, resolve_model, served_versions
from service.pb.inference import grpc_service_pb2 as pb
from service.pb.inference import grpc_service_pb2_grpc as pb_grpc
from service.pb.inference import model_config_pb2 as config_pb
from service.settings import Settings
from service.streaming import windowed_stream

PROTOCOL = "oip_grpc"
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name  # "inference.GRPCInferenceService"
GRPC_ERROR_HEADER = "triton_grpc_error"  # "true": a failing stream request ends the stream with its status


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    """``inference.GRPCInferenceService`` over an :class:`Engine`."""

    def __init__(self, engine: Engine, settings: Settings) -> None:
        self._engine = engine
        self._settings = settings

    # -- helpers -------------------------------------------------------------------------------------------

    async def _abort(self, context: grpc.aio.ServicerContext, error: ServiceError, request_id: str = "") -> None:
        _, code = errors.triton_status(error)
        trailing = errors.grpc_trailers(error, self._settings.retry_after_s)
        await context.abort(code, errors.triton_message(error, request_id), trailing_metadata=trailing)

    async def _authorize(self, context: grpc.aio.ServicerContext) -> None:
        """End the call UNAUTHENTICATED unless it carries a valid API key (when keys are configured)."""
        try:
            check_grpc_key(context.invocation_metadata(), self._settings.api_keys)
        except ServiceError as exc:
            await self._abort(context, exc)

    async def _served_model(self, context: grpc.aio.ServicerContext, name: str, version: str) -> ModelInfo:
        """The served model ``name`` (at ``version``) for an authorised call; otherwise the call ends with the error."""
        await self._authorize(context)
        try:
            return resolve_model(self._engine, name, version)
        except ServiceError as exc:
            await self._abort(context, exc)
            raise  # not reached: abort() raises

    async def _exiting(self, context: grpc.aio.ServicerContext) -> None:
        if self._engine.draining.is_set():
            await self._abort(context, NotReady("Server exiting", draining=True))

    # -- health and metadata -------------------------------------------------------------------------------

    async def ServerLive(
        self, request: pb.ServerLiveRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerLiveResponse:
        """Live while the process runs; UNAVAILABLE "Server exiting" once draining."""
        await self._exiting(context)
        return pb.ServerLiveResponse(live=self._engine.is_live())

    async def ServerReady(
        self, request: pb.ServerReadyRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerReadyResponse:
        """Ready when every model is loaded and warm; UNAVAILABLE "Server exiting" once draining."""
        await self._exiting(context)
        return pb.ServerReadyResponse(ready=self._engine.is_ready())

    async def ModelReady(
        self, request: pb.ModelReadyRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelReadyResponse:
        """Ready when the server is and the model (at that version) is served; unknown models are not ready."""
        await self._authorize(context)
        try:
            resolve_model(self._engine, request.name, request.version)
        except ServiceError:
            return pb.ModelReadyResponse(ready=False)
        return pb.ModelReadyResponse(ready=self._engine.is_ready())

    async def ServerMetadata(
        self, request: pb.ServerMetadataRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerMetadataResponse:
        """Name, version and the implemented extensions."""
        await self._authorize(context)
        return from_dict(descriptions.server_metadata(), pb.ServerMetadataResponse())

    async def ModelMetadata(
        self, request: pb.ModelMetadataRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelMetadataResponse:
        """The model's tensors."""
        info = await self._served_model(context, request.name, request.version)
        metadata = descriptions.model_metadata(info, served_versions(self._engine, info.name))
        return from_dict(metadata, pb.ModelMetadataResponse())

    async def ModelConfig(
        self, request: pb.ModelConfigRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelConfigResponse:
        """Triton's model configuration for what the server really does."""
        info = await self._served_model(context, request.name, request.version)
        config = from_dict(descriptions.model_config(info, self._settings), config_pb.ModelConfig())
        return pb.ModelConfigResponse(config=config)

    async def ModelStatistics(
        self, request: pb.ModelStatisticsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelStatisticsResponse:
        """Statistics of one model, or of every model when ``name`` is empty."""
        if request.name:
            infos = [await self._served_model(context, request.name, request.version)]
        else:
            await self._authorize(context)
            infos = self._engine.models()
        telemetry = self._engine.telemetry
        stats = [descriptions.model_statistics(i, telemetry.statistics(i.name, i.version)) for i in infos]
        return from_dict({"model_stats": stats}, pb.ModelStatisticsResponse())

    # -- the model repository ------------------------------------------------------------------------------

    async def RepositoryIndex(
        self, request: pb.RepositoryIndexRequest, context: grpc.aio.ServicerContext
    ) -> pb.RepositoryIndexResponse:
        """Every model version with its state and reason (``ready``: only READY ones)."""
        await self._authorize(context)
        rows = descriptions.repository_index(self._engine.repository_index(request.ready))
        return from_dict({"models": rows}, pb.RepositoryIndexResponse())

    async def _control(self, context: grpc.aio.ServicerContext, change: Callable[[], Awaitable[None]]) -> None:
        # An authorised repository change; a domain error ends the call with its status.
        await self._authorize(context)
        try:
            await change()
        except ServiceError as exc:
            await self._abort(context, exc)

    async def RepositoryModelLoad(
        self, request: pb.RepositoryModelLoadRequest, context: grpc.aio.ServicerContext
    ) -> pb.RepositoryModelLoadResponse:
        """Load or reload a model (explicit model control); answers once its new versions serve."""

        async def load() -> None:
            check_load_parameters(request.parameters)
            await self._engine.load_model(request.model_name)

        await self._control(context, load)
        return pb.RepositoryModelLoadResponse()

    async def RepositoryModelUnload(
        self, request: pb.RepositoryModelUnloadRequest, context: grpc.aio.ServicerContext
    ) -> pb.RepositoryModelUnloadResponse:
        """Unload a model (explicit model control): it takes no new request, drains, then is freed."""
        await self._control(context, lambda: self._engine.unload_model(request.model_name))
        return pb.RepositoryModelUnloadResponse()

    # -- inference -----------------------------------------------------------------------------------------

    async def _infer(
        self, request: pb.ModelInferRequest, context: grpc.aio.ServicerContext
    ) -> tuple[pb.ModelInferResponse | None, ServiceError | None]:
        # One request, counted in the request metrics; a domain error is returned, not raised.
        try:
            with counted(self._engine, PROTOCOL, request.model_name):
                limit = self._settings.max_images_per_request
                decoded = decode_request(request, limit)
                result = await infer(self._engine, decoded, max_images=limit, client_timeout_s=context.time_remaining())
                return encode_response(result), None
        except ServiceError as exc:
            return None, exc

    async def ModelInfer(
        self, request: pb.ModelInferRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelInferResponse:
        """One inference request; errors are call statuses."""
        await self._authorize(context)
        response, error = await self._infer(request, context)
        if error is not None:
            await self._abort(context, error, request.id)
        return response

    async def ModelStreamInfer(
        self, request_iterator: AsyncIterator[pb.ModelInferRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ModelStreamInferResponse]:
        """Requests in, responses out as each completes; at most ``stream_window`` in flight."""
        await self._authorize(context)
        metadata = dict(context.invocation_metadata() or ())
        errors_end_stream = str(metadata.get(GRPC_ERROR_HEADER, "")).lower() == "true"
        stream = windowed_stream(
            request_iterator,
            lambda request: self._infer(request, context),
            window=self._settings.stream_window,
            draining=self._engine.draining,
            ordered=False,  # Triton answers as each request completes; clients match responses by id
        )
        async with contextlib.aclosing(stream) as results:
            async for request, (response, error) in results:
                if error is None:
                    yield pb.ModelStreamInferResponse(infer_response=response)
                elif errors_end_stream:
                    await self._abort(context, error, request.id)
                else:
                    yield _in_band_error(request, error)


def _in_band_error(request: pb.ModelInferRequest, error: ServiceError) -> pb.ModelStreamInferResponse:
    """A failed stream request: Triton's message, with the request's id and model so the client can match it."""
    echo = pb.ModelInferResponse(model_name=request.model_name, model_version=request.model_version, id=request.id)
    return pb.ModelStreamInferResponse(error_message=errors.triton_message(error, request.id), infer_response=echo)


def add_to_server(engine: Engine, settings: Settings, server: grpc.aio.Server) -> None:
    """Register the service on a (not yet started) server."""
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceServicer(engine, settings), server)
