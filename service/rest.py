"""REST front end (FastAPI): the ``/v1`` routes, their OpenAPI description and the framework's own errors.

Routes: ``POST /v1/detect``, ``POST /v1/models/{name}[/versions/{version}]/detect`` (the work:
``service.rest_detect``), ``GET /v1/models`` (served versions, and the repository's states),
``GET /healthz``, ``GET /readyz``, ``GET /metrics``, OpenAPI at ``/docs``. The Open Inference Protocol's ``/v2``
routes are a separate router (``service.oip.rest``) that ``service.http_app`` mounts beside these. Every error
body is ``{"error": {"code", "message"}}`` (``service.rest_json``). Imports nothing from ``model``.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from service import errors
from service.accounting import observe
from service.auth import check_api_key
from service.engine import Engine
from service.errors import InvalidOption, ServiceError
from service.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from service.rest_body import DetectQuery, split_classes, validation_message
from service.rest_detect import PROTOCOL, detect_response
from service.rest_json import describe_models, error_response
from service.schemas import DetectJSONRequest, DetectResponse, ErrorResponse, ModelList
from service.settings import Settings

_ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse} for status in (400, 401, 404, 413, 415, 503, 504)
}
_BINARY = {"schema": {"type": "string", "format": "binary"}}
_DETECT_BODY = {
    "requestBody": {
        "required": True,
        "description": "the image as the raw body, multipart field(s) `image`, or JSON with base64 images",
        "content": {
            **{t: _BINARY for t in ("image/jpeg", "image/png", "image/webp", "image/bmp")},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"image": {"type": "array", "items": {"type": "string", "format": "binary"}}},
                    "required": ["image"],
                }
            },
            "application/json": {"schema": {"$ref": "#/components/schemas/DetectJSONRequest"}},
        },
    }
}


def detect_query(
    score_threshold: float | None = Query(None, description="minimum score, in [bundle minimum, 1]"),
    max_detections: int | None = Query(None, description="at most this many detections per image"),
    classes: list[str] | None = Query(None, description="class ids or names to keep (repeat or comma-separate)"),
    timeout_ms: float | None = Query(None, gt=0, description="deadline (capped by the server's)"),
) -> DetectQuery:
    """The detect routes' query options, validated by FastAPI (one dependency for both routes)."""
    return DetectQuery(score_threshold, max_detections, split_classes(classes), timeout_ms)


def create_app(engine: Engine, settings: Settings) -> FastAPI:
    """The FastAPI application over ``engine`` (not started: uvicorn serves it)."""
    app = FastAPI(
        title="yoloxpai",
        description='YOLOX / YOLOX-PAI object detection. Errors: `{"error": {"code", "message"}}`.',
        version="1",
        docs_url="/docs",
    )

    @app.exception_handler(ServiceError)
    async def _service_error(request: Request, exc: ServiceError) -> JSONResponse:
        return error_response(exc, settings.retry_after_s)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        # Query options of a detect route failed FastAPI's type checks: still one request, still counted.
        if request.url.path.endswith("/detect"):
            observe(engine, PROTOCOL, request.path_params.get("name"), InvalidOption.code, 0.0)
        return error_response(InvalidOption(validation_message(exc.errors())), settings.retry_after_s)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        phrase = HTTPStatus(exc.status_code).phrase if exc.status_code in HTTPStatus._value2member_map_ else "error"
        body = {"error": {"code": phrase.lower().replace(" ", "_"), "message": str(exc.detail)}}
        return JSONResponse(body, status_code=exc.status_code, headers=getattr(exc, "headers", None))

    detect_doc = {"response_model": DetectResponse, "responses": _ERROR_RESPONSES, "openapi_extra": _DETECT_BODY}

    @app.post("/v1/detect", summary="Detect objects with the default model", **detect_doc)
    async def detect_default(request: Request, query: DetectQuery = Depends(detect_query)) -> Response:
        return await detect_response(engine, settings, None, query, request.headers, request.receive)

    @app.post("/v1/models/{name}/detect", summary="Detect objects with a named model", **detect_doc)
    async def detect_named(request: Request, name: str, query: DetectQuery = Depends(detect_query)) -> Response:
        return await detect_response(engine, settings, name, query, request.headers, request.receive)

    @app.post("/v1/models/{name}/versions/{version}/detect", summary="Detect with one model version", **detect_doc)
    async def detect_versioned(
        request: Request, name: str, version: str, query: DetectQuery = Depends(detect_query)
    ) -> Response:
        return await detect_response(engine, settings, name, query, request.headers, request.receive, version)

    @app.get("/v1/models", response_model=ModelList, responses={401: {"model": ErrorResponse}})
    async def list_models(request: Request) -> Response:
        check_api_key(request.headers.get("authorization"), settings.api_keys)
        return JSONResponse(describe_models(engine.models(), engine.repository_index()))

    @app.get("/healthz", summary="Liveness: the process is up and no runtime hangs", responses={503: {}})
    async def healthz() -> Response:
        if engine.is_live():
            return JSONResponse({"status": "live"})
        return error_response(errors.NotReady(f"not live: {engine.health_reason()}"), settings.retry_after_s)

    @app.get("/readyz", summary="Readiness: models loaded and warmed, not draining", responses={503: {}})
    async def readyz() -> Response:
        if engine.is_ready():
            return JSONResponse({"status": "ready"})
        reason = "draining" if engine.draining.is_set() else f"not ready {engine.health_reason()}".strip()
        return error_response(errors.NotReady(f"server is {reason}"), settings.retry_after_s)

    if settings.metrics_port is None:  # else service.metrics_http serves it, on its own port

        @app.get("/metrics", summary="Prometheus metrics (yoloxpai_* and Triton-named nv_inference_*)")
        async def metrics() -> Response:
            return Response(engine.telemetry.render(), media_type=METRICS_CONTENT_TYPE)

    # DetectJSONRequest is referenced from the hand-written request body: publish it in the components.
    original_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = original_openapi()
            defs = DetectJSONRequest.model_json_schema(ref_template="#/components/schemas/{model}")
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            components.update(defs.pop("$defs", {}))
            components["DetectJSONRequest"] = defs
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
