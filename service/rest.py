"""REST front end (FastAPI): parse the body into engine inputs, call the engine, encode; errors mapped once.

Routes: ``POST /v1/detect``, ``POST /v1/models/{name}/detect``, ``GET /v1/models``, ``GET /healthz``,
``GET /readyz``, ``GET /metrics``, OpenAPI at ``/docs``; the Open Inference Protocol under ``/v2``
(``service.oip.rest``, with its own Triton-style errors). The image is the raw body (``image/*`` or
``application/octet-stream``), multipart field(s) ``image``, or JSON ``{"images": [{"b64": ...}], ...}``.
Every error body is ``{"error": {"code", "message"}}`` (``service.errors.HTTP_STATUS``). A client that disconnects
while its request waits cancels it, so it is dropped before compute. Imports nothing from ``model``.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError
from starlette.datastructures import Headers, UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect

from service import errors
from service.engine import DetectOptions, DetectResult, Engine, ModelInfo
from service.errors import InvalidImage, InvalidOption, ServiceError, Unauthenticated
from service.http_io import ClientDisconnected, check_api_key, read_body, run_until_disconnect
from service.imaging import EncodedImage, check_media_type
from service.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from service.oip.rest import create_router
from service.oip.serving import served_label
from service.schemas import DetectJSONRequest, DetectResponse, ErrorResponse, ModelList
from service.settings import Settings

PROTOCOL = "rest"

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


def error_parts(error: ServiceError, settings: Settings) -> tuple[int, dict[str, Any], dict[str, str]]:
    """The one place a domain error becomes an HTTP status, body and headers."""
    headers = {}
    if isinstance(error, errors.RETRYABLE):
        headers["Retry-After"] = str(settings.retry_after_s)
    if isinstance(error, Unauthenticated):
        headers["WWW-Authenticate"] = "Bearer"
    return errors.http_status(error), {"error": {"code": error.code, "message": error.message}}, headers


def error_response(error: ServiceError, settings: Settings) -> JSONResponse:
    """A domain error as a FastAPI response."""
    status, body, headers = error_parts(error, settings)
    return JSONResponse(body, status_code=status, headers=headers)


def split_classes(values: list[str] | None) -> tuple[str, ...] | None:
    """``classes`` query values (repeated, comma-separated) -> the class ids or names to keep; ``None``: all."""
    return tuple(c.strip() for raw in values or () for c in raw.split(",") if c.strip()) or None


def _b64_image(value: str, index: int) -> EncodedImage:
    if value.startswith("data:"):  # tolerate data URLs: data:image/png;base64,....
        value = value.partition(",")[2]
    try:
        return EncodedImage(base64.b64decode(value, validate=True))
    except (binascii.Error, ValueError) as exc:
        raise InvalidImage(f"images[{index}].b64 is not valid base64: {exc}") from None


def _validation_message(exc: ValidationError | RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
        parts.append(f"{where}: {err.get('msg')}" if where else str(err.get("msg")))
    return "; ".join(parts) or "invalid request"


def parse_json_body(body: bytes, options: DetectOptions) -> tuple[list[EncodedImage], DetectOptions]:
    """``{"images": [{"b64": ...}], "score_threshold"?, "max_detections"?, "classes"?}`` -> images, options."""
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidOption(f"body is not valid JSON: {exc}") from None
    try:
        parsed = DetectJSONRequest.model_validate(data)
    except ValidationError as exc:
        raise InvalidOption(_validation_message(exc)) from None
    images = [_b64_image(item.b64, i) for i, item in enumerate(parsed.images)]
    # Options in the JSON body win over the query string.
    options = DetectOptions(
        score_threshold=options.score_threshold if parsed.score_threshold is None else parsed.score_threshold,
        max_detections=options.max_detections if parsed.max_detections is None else parsed.max_detections,
        classes=options.classes if parsed.classes is None else tuple(parsed.classes),
    )
    return images, options


async def parse_multipart(headers: Headers, body: bytes, max_images: int) -> list[EncodedImage]:
    """Every ``image`` part of a multipart body (files or fields), in order."""

    async def stream():
        yield body

    parser = MultiPartParser(headers, stream(), max_files=max_images, max_fields=max_images, max_part_size=len(body))
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        raise InvalidImage(f"invalid multipart body: {exc.message}") from None
    images = []
    try:
        for value in form.getlist("image"):
            if isinstance(value, UploadFile):
                media_type = check_media_type(value.content_type)
                images.append(EncodedImage(await value.read(), media_type))
            else:
                raise InvalidImage("multipart field `image` must be a file part")
    finally:
        await form.close()
    if not images:
        raise InvalidImage("multipart body has no `image` part")
    return images


async def parse_detect_body(
    request: Request, body: bytes, options: DetectOptions, settings: Settings
) -> tuple[list[EncodedImage], DetectOptions]:
    """Dispatch on ``Content-Type``: JSON, multipart, or the raw image."""
    content_type = request.headers.get("content-type", "")
    media_type = content_type.split(";", 1)[0].strip().lower()
    if not body:
        raise InvalidImage("empty body: send an image")
    if media_type == "application/json":
        images, options = parse_json_body(body, options)
    elif media_type == "multipart/form-data":
        images = await parse_multipart(request.headers, body, settings.max_images_per_request)
    else:
        images = [EncodedImage(body, check_media_type(content_type))]
    if len(images) > settings.max_images_per_request:
        raise InvalidOption(f"{len(images)} images in one request; the limit is {settings.max_images_per_request}")
    return images, options


def encode_results(results: list[DetectResult], total_ms: float) -> dict[str, Any]:
    """Engine results -> the ``DetectResponse`` JSON shape (plain dicts: no per-box model validation cost)."""
    first = results[0]
    encoded = []
    for r in results:
        boxes, scores, ids = r.boxes_xyxy.tolist(), r.scores.tolist(), r.class_ids.tolist()
        detections = [
            {"box": box, "score": score, "class_id": cid, "class_name": name}
            for box, score, cid, name in zip(boxes, scores, ids, r.class_names, strict=True)
        ]
        encoded.append({"width": r.width, "height": r.height, "detections": detections})
    timing = {
        "decode": max(r.timing.decode_ms for r in results),
        "queue": max(r.timing.queue_ms for r in results),
        "inference": max(r.timing.inference_ms for r in results),
        "postprocess": max(r.timing.postprocess_ms for r in results),
        "total": total_ms,
    }
    return {"model": first.model, "model_version": first.model_version, "results": encoded, "timing_ms": timing}


def describe_model(info: ModelInfo, default: bool) -> dict[str, Any]:
    """``ModelInfo`` -> one ``GET /v1/models`` entry."""
    return {
        "name": info.name,
        "version": info.version,
        "default": default,
        "classes": list(info.class_names),
        "input_size": {"height": info.input_hw[0], "width": info.input_hw[1]},
        "backend": info.backend,
        "devices": list(info.devices),
        "instances": info.instances,
        "max_batch_size": info.max_batch_size,
        "max_queue_delay_ms": info.max_queue_delay_ms,
        "queue_capacity": info.queue_capacity,
        "score_threshold": {"minimum": info.score_threshold, "default": info.default_score_threshold},
        "max_detections": info.max_detections,
    }


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
        return error_response(exc, settings)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        # Query options of a detect route failed FastAPI's type checks: still one request, still counted.
        if request.url.path.endswith("/detect"):
            engine.observe_request(
                PROTOCOL, served_label(engine, request.path_params.get("name")), InvalidOption.code, 0.0
            )
        return error_response(InvalidOption(_validation_message(exc)), settings)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        phrase = HTTPStatus(exc.status_code).phrase if exc.status_code in HTTPStatus._value2member_map_ else "error"
        body = {"error": {"code": phrase.lower().replace(" ", "_"), "message": str(exc.detail)}}
        return JSONResponse(body, status_code=exc.status_code, headers=getattr(exc, "headers", None))

    async def handle_detect(
        request: Request,
        name: str | None,
        score_threshold: float | None,
        max_detections: int | None,
        classes: list[str] | None,
        timeout_ms: float | None,
    ) -> Response:
        start = time.perf_counter()
        code = "ok"
        try:
            check_api_key(request.headers.get("authorization"), settings.api_keys)
            if name is not None:
                engine.model_info(name)  # 404 before reading a large body
            body = await read_body(request.receive, request.headers.get("content-length"), settings.max_request_bytes)
            query_options = DetectOptions(score_threshold, max_detections, split_classes(classes))
            images, options = await parse_detect_body(request, body, query_options, settings)
            timeout_s = None if timeout_ms is None else timeout_ms / 1000.0
            results = await run_until_disconnect(
                request.receive, engine.detect_many(images, model=name, options=options, timeout_s=timeout_s)
            )
            return JSONResponse(encode_results(results, (time.perf_counter() - start) * 1000.0))
        except ServiceError as exc:
            code = exc.code
            return error_response(exc, settings)
        except (ClientDisconnected, ClientDisconnect):  # gone while waiting, or while still sending the body
            code = "cancelled"
            return Response(status_code=499)  # nobody reads it; nginx's "client closed request"
        except Exception:  # a bug: the framework answers 500; count it as one, not as "ok"
            code = ServiceError.code
            raise
        finally:
            engine.observe_request(PROTOCOL, served_label(engine, name), code, time.perf_counter() - start)

    detect_doc = {"response_model": DetectResponse, "responses": _ERROR_RESPONSES, "openapi_extra": _DETECT_BODY}

    @app.post("/v1/detect", summary="Detect objects with the default model", **detect_doc)
    async def detect_default(
        request: Request,
        score_threshold: float | None = Query(None, description="minimum score, in [bundle minimum, 1]"),
        max_detections: int | None = Query(None, description="at most this many detections per image"),
        classes: list[str] | None = Query(None, description="class ids or names to keep (repeat or comma-separate)"),
        timeout_ms: float | None = Query(None, gt=0, description="deadline (capped by the server's)"),
    ) -> Response:
        return await handle_detect(request, None, score_threshold, max_detections, classes, timeout_ms)

    @app.post("/v1/models/{name}/detect", summary="Detect objects with a named model", **detect_doc)
    async def detect_named(
        request: Request,
        name: str,
        score_threshold: float | None = Query(None, description="minimum score, in [bundle minimum, 1]"),
        max_detections: int | None = Query(None, description="at most this many detections per image"),
        classes: list[str] | None = Query(None, description="class ids or names to keep (repeat or comma-separate)"),
        timeout_ms: float | None = Query(None, gt=0, description="deadline (capped by the server's)"),
    ) -> Response:
        return await handle_detect(request, name, score_threshold, max_detections, classes, timeout_ms)

    @app.get("/v1/models", response_model=ModelList, responses={401: {"model": ErrorResponse}})
    async def list_models(request: Request) -> Response:
        check_api_key(request.headers.get("authorization"), settings.api_keys)
        infos = engine.models()
        return JSONResponse({"models": [describe_model(info, i == 0) for i, info in enumerate(infos)]})

    @app.get("/healthz", summary="Liveness: the process is up")
    async def healthz() -> dict[str, str]:
        return {"status": "live"}

    @app.get("/readyz", summary="Readiness: models loaded and warmed, not draining", responses={503: {}})
    async def readyz() -> Response:
        if engine.is_ready():
            return JSONResponse({"status": "ready"})
        reason = "draining" if engine.draining.is_set() else "not ready"
        return error_response(errors.NotReady(f"server is {reason}"), settings)

    @app.get("/metrics", summary="Prometheus metrics (yoloxpai_* and Triton-named nv_inference_*)")
    async def metrics() -> Response:
        return Response(engine.metrics_text(), media_type=METRICS_CONTENT_TYPE)

    app.include_router(create_router(engine, settings))

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
