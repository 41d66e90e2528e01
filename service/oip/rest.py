"""Open Inference Protocol over REST: the ``/v2`` routes (KServe v2 + Triton's config, statistics and binary
tensor extensions). Thin: framing (``http_codec``) -> ``serving.infer`` (the engine) -> framing.

Errors are Triton's: ``{"error": "<message>"}`` with ``service.errors.TRITON_STATUS``. Health follows Triton:
``/v2/health/{live,ready}`` answer 200 or 400 with an empty body, and 503 ``{"error": "Server exiting"}`` once the
server drains. Server live/ready are open; every other route needs the API key when keys are configured.
Imports nothing from ``model``.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Awaitable, Callable

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from starlette.datastructures import Headers
from starlette.requests import ClientDisconnect
from starlette.types import Receive

from service import errors
from service.engine import Engine
from service.errors import ServiceError, Unauthenticated
from service.http_io import ClientDisconnected, check_api_key, read_body, run_until_disconnect
from service.oip import descriptions
from service.oip.http_codec import HEADER_LENGTH, decode_request, decompress, encode_response, request_id, split_body
from service.oip.serving import infer, resolve_model, served_label
from service.settings import Settings

OIP_PREFIX = "/v2"
PROTOCOL = "oip_rest"
Endpoint = Callable[[Request], Awaitable[Response]]


def oip_error(error: ServiceError, settings: Settings, request_id: str = "") -> JSONResponse:
    """The one place a domain error becomes an OIP REST response."""
    status, _ = errors.triton_status(error)
    headers = {}
    if isinstance(error, errors.RETRYABLE):
        headers["Retry-After"] = str(settings.retry_after_s)
    if isinstance(error, Unauthenticated):
        headers["WWW-Authenticate"] = "Bearer"
    return JSONResponse({"error": errors.triton_message(error, request_id)}, status_code=status, headers=headers)


def _paths(*tails: str, versioned: bool = True) -> list[str]:
    # Every model route also exists under /versions/{version}.
    out = []
    for tail in tails:
        out.append(f"/models/{{model}}{tail}")
        if versioned:
            out.append(f"/models/{{model}}/versions/{{version}}{tail}")
    return out


async def infer_response(
    engine: Engine, settings: Settings, model: str, version: str, headers: Headers, receive: Receive
) -> Response:
    """``POST /v2/models/{model}[/versions/{version}]/infer``: the route's whole work, also called by
    ``service.rest_fast`` straight from ASGI; ``receive`` is the request's ASGI channel (body not yet read)."""
    start = time.perf_counter()
    code, rid = "ok", ""
    try:
        check_api_key(headers.get("authorization"), settings.api_keys)
        resolve_model(engine, model, version)  # 404 before reading a large body
        body = await read_body(receive, headers.get("content-length"), settings.max_request_bytes)
        body = decompress(body, headers.get("content-encoding"), settings.max_request_bytes)
        header, binary = split_body(body, headers.get(HEADER_LENGTH))
        rid = request_id(header)
        decoded, binary_outputs = decode_request(header, binary, model, version)
        work = infer(engine, decoded, max_images=settings.max_images_per_request)
        result = await run_until_disconnect(receive, work)
        content, response_headers = encode_response(result, binary_outputs)
        return Response(content, headers=response_headers)
    except ServiceError as exc:
        code = exc.code
        return oip_error(exc, settings, rid)
    except (ClientDisconnected, ClientDisconnect):  # gone while waiting, or while still sending the body
        code = "cancelled"
        return Response(status_code=499)
    except Exception:  # a bug: the server answers 500; count it as one, not as "ok"
        code = ServiceError.code
        raise
    finally:
        engine.observe_request(PROTOCOL, served_label(engine, model), code, time.perf_counter() - start)


def create_router(engine: Engine, settings: Settings) -> APIRouter:
    """The ``/v2`` routes over ``engine``."""
    router = APIRouter(prefix=OIP_PREFIX, tags=["Open Inference Protocol (KServe v2)"])

    def route(paths: list[str], method: str, summary: str) -> Callable[[Endpoint], Endpoint]:
        def register(endpoint: Endpoint) -> Endpoint:
            @functools.wraps(endpoint)
            async def answered(request: Request) -> Response:
                try:
                    return await endpoint(request)
                except ServiceError as exc:
                    return oip_error(exc, settings)

            for path in paths:
                router.add_api_route(path, answered, methods=[method], summary=summary)
            return endpoint

        return register

    def authorize(request: Request) -> None:
        check_api_key(request.headers.get("authorization"), settings.api_keys)

    def health(ok: bool) -> Response:
        if engine.draining.is_set():
            return JSONResponse({"error": "Server exiting"}, status_code=503)
        return Response(status_code=200 if ok else 400)

    @route(["/health/live"], "GET", "Liveness: 200 live, 400 not, 503 exiting")
    async def live(request: Request) -> Response:
        return health(engine.is_live())

    @route(["/health/ready"], "GET", "Readiness: 200 ready, 400 not, 503 exiting")
    async def ready(request: Request) -> Response:
        return health(engine.is_ready())

    @route([""], "GET", "Server metadata and its extensions")
    async def server_metadata(request: Request) -> Response:
        authorize(request)
        return JSONResponse(descriptions.server_metadata())

    # Before /models/{model}: "stats" is not a model name.
    @route(["/models/stats", *_paths("/stats")], "GET", "Triton statistics of one or every model")
    async def statistics(request: Request) -> Response:
        authorize(request)
        name = request.path_params.get("model")
        infos = [resolve_model(engine, name, request.path_params.get("version", ""))] if name else engine.models()
        stats = [descriptions.model_statistics(info, engine.statistics(info.name)) for info in infos]
        return JSONResponse({"model_stats": stats})

    @route(_paths(""), "GET", "Model metadata: tensors, datatypes, shapes")
    async def model_metadata(request: Request) -> Response:
        authorize(request)
        info = resolve_model(engine, request.path_params["model"], request.path_params.get("version", ""))
        return JSONResponse(descriptions.model_metadata(info))

    @route(_paths("/ready"), "GET", "Model readiness: 200 ready, 400 not (or unknown)")
    async def model_ready(request: Request) -> Response:
        authorize(request)
        try:
            resolve_model(engine, request.path_params["model"], request.path_params.get("version", ""))
        except ServiceError:
            return Response(status_code=400)
        return Response(status_code=200 if engine.is_ready() else 400)

    @route(_paths("/config"), "GET", "Model configuration in Triton's JSON shape")
    async def model_config(request: Request) -> Response:
        authorize(request)
        info = resolve_model(engine, request.path_params["model"], request.path_params.get("version", ""))
        return JSONResponse(descriptions.model_config(info, settings))

    @route(_paths("/infer"), "POST", "Inference (JSON tensors or the binary tensor extension)")
    async def model_infer(request: Request) -> Response:
        model, version = request.path_params["model"], request.path_params.get("version", "")
        return await infer_response(engine, settings, model, version, request.headers, request.receive)

    return router
