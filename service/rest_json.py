"""The ``/v1`` JSON shapes: detect results, the model list (served versions and the repository's states), the error
envelope ``{"error": {"code", "message"}}`` (statuses and headers from ``service.errors``). Imports nothing from
``model``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from starlette.responses import JSONResponse

from service import errors
from service.engine import DetectResult, ModelInfo, ModelStatus
from service.errors import ServiceError


def error_response(error: ServiceError, retry_after_s: int) -> JSONResponse:
    """The one place a domain error becomes a ``/v1`` HTTP response."""
    body = {"error": {"code": error.code, "message": errors.public_message(error)}}
    return JSONResponse(body, status_code=errors.http_status(error), headers=errors.http_headers(error, retry_after_s))


def encode_results(results: list[DetectResult], total_ms: float) -> dict[str, Any]:
    """Engine results -> the ``DetectResponse`` JSON shape (plain dicts: no per-box model validation cost)."""
    first = results[0]
    encoded = []
    for r in results:
        boxes, scores, ids = r.boxes_xyxy.tolist(), r.scores.tolist(), r.class_ids.tolist()
        detections = [
            {"box": box, "score": score, "class_id": cid, "class_name": name}
            for box, score, cid, name in zip(boxes, scores, ids, r.class_names, strict=True)
        ]
        encoded.append({"width": r.width, "height": r.height, "detections": detections})
    timing = {
        "decode": max(r.timing.decode_ms for r in results),
        "queue": max(r.timing.queue_ms for r in results),
        "inference": max(r.timing.inference_ms for r in results),
        "postprocess": max(r.timing.postprocess_ms for r in results),
        "total": total_ms,
    }
    return {"model": first.model, "model_version": first.model_version, "results": encoded, "timing_ms": timing}


def describe_models(infos: list[ModelInfo], index: list[ModelStatus]) -> dict[str, Any]:
    """``GET /v1/models``: the served versions (``engine.models()`` order: the default model first, each model's
    versions newest first) and every version the repository index knows, with its state and reason."""
    states = {(row.name, row.version): row for row in index}
    newest: dict[str, str] = {}
    models = []
    for i, info in enumerate(infos):
        status = states.get((info.name, info.version))
        default_version = newest.setdefault(info.name, info.version) == info.version
        models.append(describe_model(info, i == 0, default_version, status.reason if status else ""))
    repository = [{"name": r.name, "version": r.version, "state": r.state, "reason": r.reason} for r in index]
    return {"models": models, "repository": repository}


def describe_model(info: ModelInfo, default: bool, default_version: bool = True, reason: str = "") -> dict[str, Any]:
    """``ModelInfo`` -> one ``GET /v1/models`` entry (a served version: state READY)."""
    return {
        "name": info.name,
        "version": info.version,
        "default": default,
        "default_version": default_version,
        "state": "READY",
        "reason": reason,
        "classes": list(info.class_names),
        "input_size": {"height": info.input_hw[0], "width": info.input_hw[1]},
        "backend": info.backend,
        "precision": info.precision,
        "backend_choice": None if info.backend_choice is None else dataclasses.asdict(info.backend_choice),
        "devices": list(info.devices),
        "instances": info.instances,
        "max_batch_size": info.max_batch_size,
        "max_queue_delay_ms": info.max_queue_delay_ms,
        "queue_capacity": info.queue_capacity,
        "score_threshold": {"minimum": info.score_threshold, "default": info.default_score_threshold},
        "max_detections": info.max_detections,
    }
