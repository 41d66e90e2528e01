"""The HTTP entry point (ASGI): every request gets its request id (``service.request_ids``: set for the request's
logs, echoed as ``X-Request-ID``) and an access line; the hot POST routes go straight to their framework-free
handlers, every other request to the FastAPI app unchanged.

Taken here: ``POST /v1/detect`` and ``/v1/models/{name}[/versions/{v}]/detect`` with the image as the raw body (an
image or unlabelled media type) and plainly spelled query options -> ``service.rest_detect.detect_response``; and
``POST /v2/models/{name}[/versions/{v}]/infer`` without a query string -> ``service.oip.rest_infer.infer_response``.
FastAPI's routes call the same two functions, so both entry points share every line of the work; the router only
skips the framework's routing, middleware and query validation (~0.1-0.2 ms of event-loop CPU per request on our
2-core machine, measured against a bare ASGI route, about a quarter of what the server adds to the bare
Predictor's latency). Anything it cannot decide from the request line and headers (multipart, JSON, odd or invalid
query values, other methods) goes to FastAPI, whose answer, validation errors included, stays the reference.
Imports nothing from ``model``.
"""

from __future__ import annotations

import re
import time
from urllib.parse import parse_qsl

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from service.engine import Engine
from service.imaging import IMAGE_MEDIA_TYPES, SNIFFED_MEDIA_TYPES
from service.logs import access
from service.oip.rest_infer import infer_response
from service.request_ids import REQUEST_ID, request_id_from
from service.rest_body import DetectQuery, split_classes
from service.rest_detect import detect_response
from service.settings import Settings

_NAMED = re.compile(r"/v1/models/([^/]+)(?:/versions/([^/]+))?/detect")  # as FastAPI's {name}, {version}
_OIP_INFER = re.compile(r"/v2/models/([^/]+)(?:/versions/([^/]+))?/infer")  # FastAPI's {model} is [^/]+ too
# Only the plainest spellings, which FastAPI (pydantic) and Python read alike; others go to FastAPI.
_FLOAT = re.compile(r"-?\d+(\.\d+)?")
_INT = re.compile(r"-?\d{1,18}")  # a longer one is FastAPI's to refuse (int() would raise past 4300 digits)
_SCALARS = {"score_threshold": _FLOAT, "max_detections": _INT, "timeout_ms": _FLOAT}


def parse_query(query_string: bytes) -> tuple[dict[str, str], list[str]] | None:
    """Plain ``score_threshold``/``max_detections``/``timeout_ms`` values (once each) and ``classes``; ``None``
    when anything would need FastAPI's validation (a malformed number, a repeated option, timeout_ms <= 0)."""
    scalars: dict[str, str] = {}
    classes: list[str] = []
    for key, value in parse_qsl(query_string.decode("latin-1"), keep_blank_values=True):
        if key == "classes":
            classes.append(value)
        elif key in _SCALARS:
            if key in scalars or not _SCALARS[key].fullmatch(value):
                return None
            scalars[key] = value
    if "timeout_ms" in scalars and float(scalars["timeout_ms"]) <= 0:
        return None
    return scalars, classes


def detect_query(scalars: dict[str, str], classes: list[str]) -> DetectQuery:
    """``parse_query``'s plain values, typed as FastAPI's ``Query`` would type them."""
    return DetectQuery(
        float(scalars["score_threshold"]) if "score_threshold" in scalars else None,
        int(scalars["max_detections"]) if "max_detections" in scalars else None,
        split_classes(classes),
        float(scalars["timeout_ms"]) if "timeout_ms" in scalars else None,
    )


class Router:
    """ASGI app: the raw-body detect and OIP infer routes to their handlers, everything else to ``app``."""

    def __init__(self, app: ASGIApp, engine: Engine, settings: Settings) -> None:
        self.app, self.engine, self.settings = app, engine, settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        given: dict[bytes, bytes] = {}
        for key, value in scope["headers"]:
            if key in (b"x-request-id", b"traceparent"):
                given.setdefault(key, value)
        rid = request_id_from(
            given.get(b"x-request-id", b"").decode("latin-1"), given.get(b"traceparent", b"").decode("latin-1")
        )
        token = REQUEST_ID.set(rid)
        status = 0

        async def send_with_id(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), (b"x-request-id", rid.encode())]
            await send(message)

        try:
            response = await self._handle(scope, receive) if scope["method"] == "POST" else None
            if response is not None:
                await response(scope, receive, send_with_id)
            else:
                await self.app(scope, receive, send_with_id)
        finally:
            if self.settings.access_log:
                access("http", f"{scope['method']} {scope['path']}", status or 500, time.perf_counter() - start, rid)
            REQUEST_ID.reset(token)

    async def _handle(self, scope: Scope, receive: Receive):
        """The hot route's response, or ``None`` when the request belongs to FastAPI."""
        path = scope["path"]
        if path.startswith("/v2/"):
            oip = _OIP_INFER.fullmatch(path) if not scope["query_string"] else None
            if oip is None:
                return None
            headers = Headers(scope=scope)
            return await infer_response(self.engine, self.settings, oip.group(1), oip.group(2) or "", headers, receive)
        if path == "/v1/detect":
            name = version = None
        else:
            named = _NAMED.fullmatch(path)
            if named is None:
                return None
            name, version = named.group(1), named.group(2)
        headers = Headers(scope=scope)
        media_type = headers.get("content-type", "").split(";", 1)[0].strip().lower()
        query = parse_query(scope["query_string"])
        if query is None or (media_type not in IMAGE_MEDIA_TYPES and media_type not in SNIFFED_MEDIA_TYPES):
            return None
        return await detect_response(self.engine, self.settings, name, detect_query(*query), headers, receive, version)
