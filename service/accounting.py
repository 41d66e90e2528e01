"""Request accounting, one for every transport: the model's metric label and the outcome count of a request.

Each transport request is counted once in ``yoloxpai_requests_total`` / the request-duration histogram, by its
outcome: ``ok``, the domain error's ``code``, ``cancelled`` (the client went away: an HTTP 499, a cancelled gRPC
call or stream frame) or ``internal`` (a bug, which the transport answers as a 500 / INTERNAL). Imports nothing
from ``model``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterator

from service.engine import Engine
from service.errors import ClientGone, ServiceError

log = logging.getLogger(__name__)


def served_label(engine: Engine, name: str | None) -> str:
    """``name`` as a metric label: the default model for an empty name, "" for an unknown one (bounded series)."""
    names = [info.name for info in engine.models()]
    if not name:
        return names[0] if names else ""
    return name if name in names else ""


def observe(engine: Engine, protocol: str, model: str | None, code: str, duration_s: float) -> None:
    """Count one request that ended with ``code`` (for answers decided outside a ``counted`` block)."""
    engine.telemetry.observe_request(protocol, served_label(engine, model), code, duration_s)


@contextlib.contextmanager
def counted(engine: Engine, protocol: str, model: str | None, start_s: float | None = None) -> Iterator[None]:
    """Count the request whose work runs in the block (begun at ``start_s``, ``time.perf_counter``, default now)
    by how the block ends; every exception propagates for the transport to answer."""
    start = time.perf_counter() if start_s is None else start_s
    code = "ok"
    try:
        yield
    except ServiceError as exc:
        code = exc.code
        if code == ServiceError.code:  # the client sees only the request id: the details go to the log
            log.error("%s request for %s failed: %s", protocol, model or "the default model", exc.message)
        raise
    except (ClientGone, asyncio.CancelledError):
        code = "cancelled"
        raise
    except Exception:  # a bug: the transport answers it as an internal error, so it counts as one
        code = ServiceError.code
        raise
    finally:
        observe(engine, protocol, model, code, time.perf_counter() - start)
