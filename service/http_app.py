"""The HTTP application: FastAPI's ``/v1`` routes (``service.rest``) with the ``/v2`` router
(``service.oip.rest``) mounted beside them and the demo page (``service.ui``, unless ``--no-ui``), behind the ASGI
``service.router.Router``. Imports nothing from ``model``.
"""

from __future__ import annotations

from service.engine import Engine
from service.oip.rest import create_router
from service.rest import create_app
from service.router import Router
from service.settings import Settings
from service.ui import add_ui_routes


def create_http_app(engine: Engine, settings: Settings) -> Router:
    """The ASGI application uvicorn serves."""
    app = create_app(engine, settings)
    app.include_router(create_router(engine, settings))
    if settings.ui:
        add_ui_routes(app)
    return Router(app, engine, settings)
