"""One inference request through the engine, shared by the OIP transports: resolve the model and version, check
the request against the detector's tensor contract, call ``Engine.detect_many``, build the output tensors. Also the
request accounting every transport shares: the model's metric label (``served_label``) and, for handlers that answer
a domain error themselves, the outcome count (``counted``). Imports nothing from ``model``."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import TypeVar

from service.engine import Engine, ModelInfo
from service.errors import ModelNotFound, ServiceError
from service.oip.detector_io import InferRequest, detections_per_image, to_detect_call, to_outputs
from service.oip.tensors import OutputTensor


@dataclass(frozen=True)
class InferResult:
    """The answer to one inference request."""

    model: str
    version: str
    id: str
    outputs: list[OutputTensor]


def resolve_model(engine: Engine, name: str, version: str = "") -> ModelInfo:
    """The served model ``name`` (empty: the default) at ``version`` (empty: the one served)."""
    info = engine.model_info(name or None)
    if version and version != info.version:
        raise ModelNotFound(f"'{info.name}' version {version} is not found (serving version {info.version})")
    return info


def served_label(engine: Engine, name: str | None) -> str:
    """``name`` as a metric label: the default model for an empty name, "" for an unknown one (bounded series)."""
    names = [info.name for info in engine.models()]
    if not name:
        return names[0] if names else ""
    return name if name in names else ""


T = TypeVar("T")


async def counted(engine: Engine, protocol: str, model: str, start_s: float, work: Awaitable[T]) -> T | ServiceError:
    """Await ``work``, one ``protocol`` request for ``model`` begun at ``start_s`` (``time.perf_counter``), and count
    it in the request metric by its outcome. A domain error is returned, for the caller to answer (in band, or as a
    status); a cancellation, or a bug (counted as ``internal``, not ``ok``), propagates."""
    code = "ok"
    try:
        return await work
    except ServiceError as exc:
        code = exc.code
        return exc
    except asyncio.CancelledError:
        code = "cancelled"
        raise
    except Exception:  # a bug: the transport answers it as an internal error
        code = ServiceError.code
        raise
    finally:
        engine.observe_request(protocol, served_label(engine, model), code, time.perf_counter() - start_s)


async def infer(
    engine: Engine, request: InferRequest, *, max_images: int, client_timeout_s: float | None = None
) -> InferResult:
    """Run one request; ``client_timeout_s`` is the transport's deadline (gRPC), the ``timeout`` parameter may
    lower it further and the server's own timeout caps both."""
    info = resolve_model(engine, request.model, request.version)
    call = to_detect_call(request, max_images)
    limits = [t for t in (call.timeout_s, client_timeout_s) if t is not None]
    results = await engine.detect_many(
        call.images,
        model=info.name,
        options=call.options,
        timeout_s=min(limits) if limits else None,
        priority=call.priority,
    )
    k = detections_per_image(call.options, info.max_detections)
    return InferResult(info.name, info.version, request.id, to_outputs(results, k, call.outputs))
