"""One inference request through the engine, shared by the OIP transports: resolve the model and version, check
the request against the detector's tensor contract, call ``Engine.detect_many``, build the output tensors.
Imports nothing from ``model``."""

from __future__ import annotations

from dataclasses import dataclass

from service.engine import Engine, ModelInfo
from service.errors import ModelNotFound
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
