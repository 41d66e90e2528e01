"""The built-in demo page: ``GET /`` and ``/ui`` serve one static page (``service/static/``: HTML, CSS, plain
JavaScript, no build step, nothing fetched from elsewhere) that calls only the public API a client calls
(``GET /v1/models``, ``POST /v1/models/{name}/detect``) and draws the boxes in the browser.

Safe by default: the page and its assets carry a strict Content-Security-Policy (same-origin scripts, styles and
requests only; no inline code, no ``eval``; never framed) and ``nosniff``; the headers are set on these routes
alone, so ``/docs`` (Swagger UI: a CDN and inline scripts) keeps working. ``Settings.ui = False`` (``--no-ui``)
leaves the routes out: ``/`` and ``/ui`` are then 404. The routes go through FastAPI (the ASGI router only takes
the detect and infer POSTs). Imports nothing from ``model``.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import Response

STATIC_DIR = Path(__file__).resolve().parent / "static"
# Asset name -> media type; the page refers to them as ``ui/<name>``, relative, so it also works behind a prefix.
ASSETS = {"ui.css": "text/css; charset=utf-8", "ui.js": "text/javascript; charset=utf-8"}

CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' blob: data:",
        "media-src 'self' blob:",  # the webcam preview
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    )
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",  # frame-ancestors for browsers that predate it
    "Referrer-Policy": "no-referrer",
    "Permissions-Policy": "camera=(self), microphone=(), geolocation=()",
    "Cache-Control": "no-cache",  # revalidate: a new server version brings a new page
}


def add_ui_routes(app: FastAPI) -> None:
    """Serve the page at ``/`` and ``/ui`` and its assets at ``/ui/<asset>``, read once from the package."""
    page = (STATIC_DIR / "index.html").read_bytes()
    assets = {name: ((STATIC_DIR / name).read_bytes(), media_type) for name, media_type in ASSETS.items()}

    async def index() -> Response:
        return Response(page, media_type="text/html; charset=utf-8", headers=SECURITY_HEADERS)

    app.add_api_route("/", index, methods=["GET"], include_in_schema=False)
    app.add_api_route("/ui", index, methods=["GET"], include_in_schema=False)
    for name, (body, media_type) in assets.items():
        app.add_api_route(f"/ui/{name}", _asset(body, media_type), methods=["GET"], include_in_schema=False)


def _asset(body: bytes, media_type: str):
    async def asset() -> Response:
        return Response(body, media_type=media_type, headers=SECURITY_HEADERS)

    return asset
