"""The hot REST routes without the framework, answered straight from ASGI: ``POST /v1/detect`` (and
``/v1/models/{name}/detect``) with the image as the raw body, and the Open Inference Protocol's
``POST /v2/models/{name}[/versions/{v}]/infer``; every other request goes to the FastAPI app unchanged.

Why: at one client at a time FastAPI's routing, middleware and query-parameter validation cost ~0.1-0.2 ms of
event-loop CPU per request on our 2-core machine (measured against a bare ASGI route), about a quarter of what the
server adds to the bare Predictor's latency. This path does the same work as ``service.rest``'s route for the
requests it takes: the same checks in the same order (API key, model, body size, media type), the same engine
call with disconnect cancellation, the same metrics, byte-identical JSON (Starlette's ``JSONResponse`` encoding)
and error bodies. It takes only what it can decide from the request line and headers: a raw body of an image (or
unlabelled) type and query options that parse plainly; anything else (multipart, JSON, odd or invalid query
values, other methods) is left to FastAPI, whose answer, validation errors included, stays the reference. An OIP
infer request (no query string: the route takes none) runs ``service.oip.rest.infer_response``, the route's own
function, so both paths share every line of it.
Imports nothing from ``model``.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any
from urllib.parse import parse_qsl

from starlette.datastructures import Headers
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Receive, Scope, Send

from service.engine import DetectOptions, Engine
from service.errors import InvalidImage, ServiceError
from service.http_io import ClientDisconnected, check_api_key, read_body, run_until_disconnect
from service.imaging import IMAGE_MEDIA_TYPES, SNIFFED_MEDIA_TYPES, EncodedImage
from service.oip.rest import infer_response
from service.oip.serving import served_label
from service.rest import PROTOCOL, encode_results, error_parts, split_classes
from service.settings import Settings

_NAMED = re.compile(r"/v1/models/([^/]+)/detect")
_OIP_INFER = re.compile(r"/v2/models/([^/]+)(?:/versions/([^/]+))?/infer")  # FastAPI's {model} is [^/]+ too
# Only the plainest spellings, which FastAPI (pydantic) and Python read alike; others go to FastAPI.
_FLOAT = re.compile(r"-?\d+(\.\d+)?")
_INT = re.compile(r"-?\d+")
_SCALARS = {"score_threshold": _FLOAT, "max_detections": _INT, "timeout_ms": _FLOAT}


def _json(content: Any) -> bytes:
    # Starlette's JSONResponse.render, so both paths answer the same bytes.
    return json.dumps(content, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")).encode()


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


class FastPath:
    """ASGI wrapper: the raw-body detect and OIP infer routes here, everything else to ``app``."""

    def __init__(self, app: ASGIApp, engine: Engine, settings: Settings) -> None:
        self.app, self.engine, self.settings = app, engine, settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            path = scope["path"]
            oip = _OIP_INFER.fullmatch(path) if path.startswith("/v2/") and not scope["query_string"] else None
            if oip is not None:
                model, version = oip.group(1), oip.group(2) or ""
                response = await infer_response(
                    self.engine, self.settings, model, version, Headers(scope=scope), receive
                )
                await response(scope, receive, send)
                return
            if path == "/v1/detect":
                name = None
            else:
                named = _NAMED.fullmatch(path)
                name = named.group(1) if named else ""
            if name != "":
                headers: dict[bytes, bytes] = {}
                for key, value in scope["headers"]:
                    headers.setdefault(key, value)  # the first of repeated headers, as Starlette's get()
                media_type = headers.get(b"content-type", b"").decode("latin-1").split(";", 1)[0].strip().lower()
                query = parse_query(scope["query_string"])
                if query is not None and (media_type in IMAGE_MEDIA_TYPES or media_type in SNIFFED_MEDIA_TYPES):
                    await self._detect(name, media_type, headers, *query, receive, send)
                    return
        await self.app(scope, receive, send)

    async def _detect(
        self,
        name: str | None,
        media_type: str,
        headers: dict[bytes, bytes],
        scalars: dict[str, str],
        classes: list[str],
        receive: Receive,
        send: Send,
    ) -> None:
        start = time.perf_counter()
        code = "ok"
        engine, settings = self.engine, self.settings
        try:
            authorization = headers.get(b"authorization")
            check_api_key(None if authorization is None else authorization.decode("latin-1"), settings.api_keys)
            if name is not None:
                engine.model_info(name)  # 404 before reading a large body
            declared = headers.get(b"content-length")
            content_length = None if declared is None else declared.decode("latin-1")
            body = await read_body(receive, content_length, settings.max_request_bytes)
            if not body:
                raise InvalidImage("empty body: send an image")
            options = DetectOptions(
                float(scalars["score_threshold"]) if "score_threshold" in scalars else None,
                int(scalars["max_detections"]) if "max_detections" in scalars else None,
                split_classes(classes),
            )
            timeout_s = float(scalars["timeout_ms"]) / 1000.0 if "timeout_ms" in scalars else None
            images = [EncodedImage(body, media_type)]
            work = engine.detect_many(images, model=name, options=options, timeout_s=timeout_s)
            results = await run_until_disconnect(receive, work)
            await self._respond(send, 200, _json(encode_results(results, (time.perf_counter() - start) * 1000.0)))
        except ServiceError as exc:
            code = exc.code
            status, error_body, error_headers = error_parts(exc, settings)
            await self._respond(send, status, _json(error_body), error_headers)
        except (ClientDisconnected, ClientDisconnect):  # gone while waiting, or while still sending the body
            code = "cancelled"
            await self._respond(send, 499, None)  # nobody reads it; nginx's "client closed request"
        except Exception:  # a bug: uvicorn answers 500; count it as one, not as "ok"
            code = ServiceError.code
            raise
        finally:
            engine.observe_request(PROTOCOL, served_label(engine, name), code, time.perf_counter() - start)

    @staticmethod
    async def _respond(send: Send, status: int, body: bytes | None, headers: dict[str, str] | None = None) -> None:
        """``body`` is JSON, or ``None`` for an empty answer without a content type."""
        raw = [(b"content-length", str(len(body or b"")).encode())]
        if body is not None:
            raw.append((b"content-type", b"application/json"))
        raw += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()]
        await send({"type": "http.response.start", "status": status, "headers": raw})
        await send({"type": "http.response.body", "body": body or b""})
