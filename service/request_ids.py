"""Request ids: every HTTP request and gRPC call has one, for logs and for the client to quote.

Taken from the client when it sends a usable one (``X-Request-ID`` header / ``x-request-id`` metadata, else the
trace id of a W3C ``traceparent``), otherwise made here; echoed back (``X-Request-ID`` response header, gRPC
``x-request-id`` trailing metadata) and set in :data:`REQUEST_ID` for the request's task, so log lines and the
message of an internal error carry it. Imports nothing from ``model``.
"""

from __future__ import annotations

import os
import re
from contextvars import ContextVar

HEADER = "x-request-id"
REQUEST_ID: ContextVar[str] = ContextVar("yoloxpai_request_id", default="")

_CLIENT_ID = re.compile(r"[A-Za-z0-9._:/+=@-]{1,128}")  # printable, no spaces: safe in headers and log lines
_TRACEPARENT = re.compile(r"[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}")


def new_request_id() -> str:
    """A fresh id: 16 random hex digits."""
    return os.urandom(8).hex()


def request_id_from(x_request_id: str | None, traceparent: str | None) -> str:
    """The client's id when it is usable, else the ``traceparent``'s trace id, else a new one."""
    if x_request_id and _CLIENT_ID.fullmatch(x_request_id):
        return x_request_id
    if traceparent:
        match = _TRACEPARENT.fullmatch(traceparent.strip().lower())
        if match and match.group(1) != "0" * 32:
            return match.group(1)
    return new_request_id()
