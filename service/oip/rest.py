"""Open Inference Protocol over REST: the ``/v2`` routes (KServe v2 + Triton's config, statistics and binary
tensor extensions). Thin: the infer route is ``service.oip.rest_infer`` (framing -> ``serving.infer`` -> framing).

The model repository extension: ``POST /v2/repository/index`` (body ``{"ready": bool}`` optional) lists every model
version with its state and reason; ``POST /v2/repository/models/{m}/load`` and ``/unload`` (explicit model control)
answer 200 with an empty body once the new version serves / the model no longer takes requests.

Errors are Triton's: ``{"error": "<message>"}`` with ``service.errors.TRITON_STATUS``. Health follows Triton:
``/v2/health/{live,ready}`` answer 200 or 400 with an empty body, and 503 ``{"error": "Server exiting"}`` once the
server drains. Server live/ready are open; every other route needs the API key when keys are configured.
Imports nothing from ``model``.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from service.auth import check_api_key
from service.engine import Engine
from service.errors import InvalidOption, ServiceError
from service.http_io import read_body
from service.oip import descriptions
from service.oip.rest_infer import infer_response, oip_error
from service.oip.serving import check_load_parameters, resolve_model, served_versions
from service.settings import Settings

OIP_PREFIX = "/v2"
Endpoint = Callable[[Request], Awaitable[Response]]
CONTROL_BODY_BYTES = 64 * 1024  # a repository request's JSON body: a few parameters


async def _json_object(request: Request, timeout_s: float) -> dict[str, Any]:
    """A repository request's optional JSON object body (empty: ``{}``)."""
    body = await read_body(request.receive, request.headers.get("content-length"), CONTROL_BODY_BYTES, timeout_s)
    try:
        value = json.loads(body) if body.strip() else {}
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidOption(f"the body is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise InvalidOption("the body must be a JSON object")
    return value


def _paths(*tails: str, versioned: bool = True) -> list[str]:
    # Every model route also exists under /versions/{version}.
    out = []
    for tail in tails:
        out.append(f"/models/{{model}}{tail}")
        if versioned:
            out.append(f"/models/{{model}}/versions/{{version}}{tail}")
    return out


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
                    return oip_error(exc, settings.retry_after_s)

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
        telemetry = engine.telemetry
        stats = [descriptions.model_statistics(i, telemetry.statistics(i.name, i.version)) for i in infos]
        return JSONResponse({"model_stats": stats})

    @route(_paths(""), "GET", "Model metadata: tensors, datatypes, shapes")
    async def model_metadata(request: Request) -> Response:
        authorize(request)
        info = resolve_model(engine, request.path_params["model"], request.path_params.get("version", ""))
        return JSONResponse(descriptions.model_metadata(info, served_versions(engine, info.name)))

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

    @route(["/repository/index"], "POST", "Repository index: every model version, its state and reason")
    async def repository_index(request: Request) -> Response:
        authorize(request)
        ready = (await _json_object(request, settings.body_timeout_s)).get("ready", False)
        if not isinstance(ready, bool):
            raise InvalidOption(f"ready must be a boolean, got {ready!r}")
        return JSONResponse(descriptions.repository_index(engine.repository_index(ready)))

    @route(["/repository/models/{model}/load"], "POST", "Load or reload a model (explicit model control)")
    async def repository_load(request: Request) -> Response:
        authorize(request)
        parameters = (await _json_object(request, settings.body_timeout_s)).get("parameters") or {}
        if not isinstance(parameters, dict):
            raise InvalidOption("parameters must be a JSON object")
        check_load_parameters(parameters)
        await engine.load_model(request.path_params["model"])
        return Response(status_code=200)

    @route(["/repository/models/{model}/unload"], "POST", "Unload a model: it drains, then is freed")
    async def repository_unload(request: Request) -> Response:
        authorize(request)
        await _json_object(request, settings.body_timeout_s)  # unload_dependents: no model depends on another
        await engine.unload_model(request.path_params["model"])
        return Response(status_code=200)

    @route(_paths("/infer"), "POST", "Inference (JSON tensors or the binary tensor extension)")
    async def model_infer(request: Request) -> Response:
        model, version = request.path_params["model"], request.path_params.get("version", "")
        return await infer_response(engine, settings, model, version, request.headers, request.receive)

    return router
