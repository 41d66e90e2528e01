"""``POST /v1/detect``, ``/v1/models/{name}/detect`` and ``/v1/models/{name}/versions/{version}/detect``: the whole
work of the route, framework-free.

Called by FastAPI's route (``service.rest``) and straight from ASGI (``service.router``) alike, so both entry points
share every line: API key, model (404 before a large body is read), body (size-bounded), parsing, one engine call
cancelled if the client disconnects, JSON out; one outcome count (``service.accounting``); a domain error becomes
the ``/v1`` error envelope, a client gone mid-request a 499 nobody reads. Imports nothing from ``model``.
"""

from __future__ import annotations

import time

from starlette.datastructures import Headers
from starlette.responses import JSONResponse, Response
from starlette.types import Receive

from service.accounting import counted
from service.auth import check_api_key
from service.engine import Engine
from service.errors import ClientGone, ServiceError
from service.http_io import read_body, run_until_disconnect
from service.rest_body import DetectQuery, parse_detect_body
from service.rest_json import encode_results, error_response
from service.settings import Settings

PROTOCOL = "rest"


async def detect_response(
    engine: Engine,
    settings: Settings,
    name: str | None,
    query: DetectQuery,
    headers: Headers,
    receive: Receive,
    version: str | None = None,
) -> Response:
    """Answer one detect request; ``name`` None = the default model, ``version`` None = its newest served version;
    ``receive``: the request's ASGI channel, its body not yet read. A bug propagates (the server answers 500) after
    being counted as ``internal``."""
    start = time.perf_counter()
    try:
        with counted(engine, PROTOCOL, name, start):
            check_api_key(headers.get("authorization"), settings.api_keys)
            if name is not None:
                engine.model_info(name, version)  # 404 before reading a large body
            body = await read_body(
                receive, headers.get("content-length"), settings.max_request_bytes, settings.body_timeout_s
            )
            images, options = await parse_detect_body(headers, body, query.options, settings.max_images_per_request)
            timeout_s = None if query.timeout_ms is None else query.timeout_ms / 1000.0
            work = engine.detect_many(images, model=name, options=options, timeout_s=timeout_s, version=version)
            results = await run_until_disconnect(receive, work)
            return JSONResponse(encode_results(results, (time.perf_counter() - start) * 1000.0))
    except ServiceError as exc:
        return error_response(exc, settings.retry_after_s)
    except ClientGone:  # gone while sending the body or while waiting
        return Response(status_code=499)  # nobody reads it; nginx's "client closed request"
