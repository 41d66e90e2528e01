"""The HTTP application: FastAPI's ``/v1`` routes (``service.rest``) with the ``/v2`` router
(``service.oip.rest``) mounted beside them, behind the ASGI ``service.router.Router``. Imports nothing from
``model``.
"""

from __future__ import annotations

from service.engine import Engine
from service.oip.rest import create_router
from service.rest import create_app
from service.router import Router
from service.settings import Settings


def create_http_app(engine: Engine, settings: Settings) -> Router:
    """The ASGI application uvicorn serves."""
    app = create_app(engine, settings)
    app.include_router(create_router(engine, settings))
    return Router(app, engine, settings)
