"""One inference request through the engine, shared by the OIP transports: resolve the model and version, check
the request against the detector's tensor contract, call ``Engine.detect_many``, build the output tensors; and the
model repository requests' common rule (``check_load_parameters``). Imports nothing from ``model``."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from service.engine import Engine, ModelInfo
from service.errors import InvalidOption
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
    """The served model ``name`` (empty: the default) at ``version`` (empty: its newest served version)."""
    return engine.model_info(name or None, version or None)


def served_versions(engine: Engine, name: str) -> list[str]:
    """The served versions of model ``name``, newest first (model metadata's ``versions``)."""
    return [info.version for info in engine.models() if info.name == name]


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
        version=info.version,  # the version resolved above, even if a newer one is switched in meanwhile
    )
    k = detections_per_image(call.options, info.max_detections)
    return InferResult(info.name, info.version, request.id, to_outputs(results, k, call.outputs))


def check_load_parameters(names: Iterable[str]) -> None:
    """Refuse Triton's load overrides (``config``, ``file:<path>``): what loads is the repository's files, as they
    are on disk (a new version is a new directory). Other parameters are ignored, as Triton ignores unknown ones."""
    unsupported = sorted(name for name in names if name == "config" or name.startswith("file:"))
    if unsupported:
        raise InvalidOption(
            f"load parameters {unsupported} are not supported: the server loads the model repository's files; "
            "publish a new version directory instead (yoloxpai export --repository)"
        )
