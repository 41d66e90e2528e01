"""Logging for ``yoloxpai serve``: text or one JSON object per line, every record carrying the request id of the
request it belongs to (``service.request_ids.REQUEST_ID``; empty outside requests). Access lines go to the
``yoloxpai.access`` logger (one per HTTP request and gRPC call; ``--no-access-log`` turns them off).
"""

from __future__ import annotations

import json
import logging
import sys
import time

from service.request_ids import REQUEST_ID

ACCESS = logging.getLogger("yoloxpai.access")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s%(request_suffix)s"


class RequestIdFilter(logging.Filter):
    """Adds ``request_id`` (and a `` [request_id=...]`` suffix for text) to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        rid = getattr(record, "request_id", None) or REQUEST_ID.get()
        record.request_id = rid
        record.request_suffix = f" [request_id={rid}]" if rid else ""
        return True


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "message", "request_id", ...extra fields, "exc"}`` on one line."""

    _STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"request_suffix", "message"}

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        out.update({k: v for k, v in record.__dict__.items() if k not in self._STANDARD})
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def configure_logging(level: str, log_format: str) -> None:
    """Root handler on stderr in the chosen format; uvicorn's own handlers defer to it."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def access(protocol: str, target: str, status: str | int, duration_s: float, request_id: str) -> None:
    """One access line (``yoloxpai.access``, info)."""
    if ACCESS.isEnabledFor(logging.INFO):
        ACCESS.info(
            "%s %s %s %.1f ms",
            protocol,
            target,
            status,
            duration_s * 1000.0,
            extra={
                "protocol": protocol,
                "target": target,
                "status": status,
                "duration_ms": round(duration_s * 1e3, 3),
                "request_id": request_id,
            },  # fmt: skip
        )
