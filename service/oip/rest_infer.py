"""``POST /v2/models/{model}[/versions/{version}]/infer``: the whole work of the route, framework-free, and the
one mapping of a domain error to an OIP REST answer. Called by the ``/v2`` router (``service.oip.rest``) and
straight from ASGI (``service.router``) alike. Errors are Triton's: ``{"error": "<message>"}`` with
``service.errors.TRITON_STATUS``. Imports nothing from ``model``.
"""

from __future__ import annotations

import time

from starlette.datastructures import Headers
from starlette.responses import JSONResponse, Response
from starlette.types import Receive

from service import errors
from service.accounting import counted
from service.auth import check_api_key
from service.engine import Engine
from service.errors import ClientGone, ServiceError
from service.http_io import off_loop, read_body, run_until_disconnect
from service.oip.http_codec import HEADER_LENGTH, decode_request, decompress, encode_response, request_id, split_body
from service.oip.serving import infer, resolve_model
from service.settings import Settings

PROTOCOL = "oip_rest"


def oip_error(error: ServiceError, retry_after_s: int, request_id: str = "") -> JSONResponse:
    """The one place a domain error becomes an OIP REST response."""
    status, _ = errors.triton_status(error)
    headers = errors.http_headers(error, retry_after_s)
    return JSONResponse({"error": errors.triton_message(error, request_id)}, status_code=status, headers=headers)


async def infer_response(
    engine: Engine, settings: Settings, model: str, version: str, headers: Headers, receive: Receive
) -> Response:
    """Answer one inference request; ``receive`` is the request's ASGI channel (body not yet read). A bug
    propagates (the server answers 500) after being counted as ``internal``."""
    start = time.perf_counter()
    rid = ""
    try:
        with counted(engine, PROTOCOL, model, start):
            check_api_key(headers.get("authorization"), settings.api_keys)
            resolve_model(engine, model, version)  # 404 before reading a large body
            body = await read_body(
                receive, headers.get("content-length"), settings.max_request_bytes, settings.body_timeout_s
            )
            body = decompress(body, headers.get("content-encoding"), settings.max_request_bytes)
            header, binary = await off_loop(len(body), split_body, body, headers.get(HEADER_LENGTH))
            rid = request_id(header)
            limit = settings.max_images_per_request
            decoded, binary_outputs = await off_loop(len(body), decode_request, header, binary, model, version, limit)
            work = infer(engine, decoded, max_images=limit)
            result = await run_until_disconnect(receive, work)
            content, response_headers = encode_response(result, binary_outputs)
            return Response(content, headers=response_headers)
    except ServiceError as exc:
        return oip_error(exc, settings.retry_after_s, rid)
    except ClientGone:  # gone while sending the body or while waiting
        return Response(status_code=499)
