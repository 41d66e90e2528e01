"""Triton-shaped descriptions of the server and its models: server metadata, model metadata, model configuration
and statistics, as plain JSON-ready dicts.

REST returns them as they are (Triton's JSON: numbers for 64-bit integers, enum names as strings); gRPC parses
them into the same-named protobuf messages (``json_format.ParseDict``), so both transports say the same thing.
Statistics count images: a request of B images is B inferences and B successes. Imports nothing from ``model``.
"""

from __future__ import annotations

from importlib import metadata
from typing import Any

from service.engine import ModelInfo, ModelStatus
from service.oip.detector_io import INPUTS, OUTPUTS, TensorSpec
from service.settings import Settings
from service.stats import StatsSnapshot

SERVER_NAME = "yoloxpai"
# Only what is implemented: binary tensors, config and statistics endpoints, request parameters, the schedule
# policy extension (`priority` and `timeout` request parameters) and the model repository (index, load, unload).
_INFERENCE_EXTENSIONS = ("binary_tensor_data", "parameters", "schedule_policy")
EXTENSIONS = (*_INFERENCE_EXTENSIONS, "model_configuration", "statistics", "model_repository")
BACKEND = "yoloxpai"  # decode + letterbox + network + NMS in one model: no Triton platform describes it


def _server_version() -> str:
    try:
        return metadata.version("yoloxpai")
    except metadata.PackageNotFoundError:  # a source tree that was never installed
        return "0+unknown"


def server_metadata() -> dict[str, Any]:
    """``GET /v2`` / ``ServerMetadata``."""
    return {"name": SERVER_NAME, "version": _server_version(), "extensions": list(EXTENSIONS)}


def _tensor_metadata(spec: TensorSpec) -> dict[str, Any]:
    return {"name": spec.name, "datatype": spec.datatype, "shape": list(spec.shape)}


def model_metadata(info: ModelInfo, versions: list[str] | None = None) -> dict[str, Any]:
    """``GET /v2/models/{m}`` / ``ModelMetadata``: the served ``versions`` (default: ``info``'s), tensor shapes with
    the batch dimension (-1 = any size)."""
    return {
        "name": info.name,
        "versions": list(versions or [info.version]),
        "platform": BACKEND,
        "inputs": [_tensor_metadata(spec) for spec in INPUTS],
        "outputs": [_tensor_metadata(spec) for spec in OUTPUTS],
    }


def _config_type(datatype: str) -> str:
    return "TYPE_STRING" if datatype == "BYTES" else f"TYPE_{datatype}"


def _config_tensor(spec: TensorSpec, is_input: bool) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": spec.name, "data_type": _config_type(spec.datatype)}
    entry["dims"] = list(spec.config_dims)
    if spec.config_reshape is not None:
        entry["reshape"] = {"shape": list(spec.config_reshape)}
    if is_input:
        entry["format"] = "FORMAT_NHWC" if spec.nhwc else "FORMAT_NONE"
        entry["optional"] = spec.optional
    return entry


def _instance_group(info: ModelInfo) -> dict[str, Any]:
    gpus = [int(d.partition(":")[2] or 0) for d in info.devices if d.startswith("cuda")]
    per_device = max(info.instances // max(len(info.devices), 1), 1)
    group: dict[str, Any] = {"name": info.name, "kind": "KIND_GPU" if gpus else "KIND_CPU", "count": per_device}
    if gpus:
        group["gpus"] = gpus
    return group


def model_config(info: ModelInfo, settings: Settings) -> dict[str, Any]:
    """``GET /v2/models/{m}/config`` / ``ModelConfig``: Triton's config shape for what the server really does."""
    return {
        "name": info.name,
        "platform": "",
        "backend": BACKEND,
        "max_batch_size": info.max_batch_size,
        "input": [_config_tensor(spec, True) for spec in INPUTS],
        "output": [_config_tensor(spec, False) for spec in OUTPUTS],
        "dynamic_batching": {
            "max_queue_delay_microseconds": round(info.max_queue_delay_ms * 1000),
            "preserve_ordering": False,
            "priority_levels": settings.priority_levels,
            "default_priority_level": settings.default_priority_level,
            "default_queue_policy": {
                "timeout_action": "REJECT",
                "default_timeout_microseconds": round(settings.request_timeout_ms * 1000),
                "allow_timeout_override": True,
                "max_queue_size": info.queue_capacity,
            },
        },
        "instance_group": [_instance_group(info)],
        "parameters": {
            "inference_runtime": {"string_value": info.backend},
            "input_height": {"string_value": str(info.input_hw[0])},
            "input_width": {"string_value": str(info.input_hw[1])},
            "class_names": {"string_value": ",".join(info.class_names)},
        },
    }


def repository_index(rows: list[ModelStatus]) -> list[dict[str, str]]:
    """``POST /v2/repository/index`` / ``RepositoryIndex``: one entry per model version, Triton's states."""
    return [{"name": r.name, "version": r.version, "state": r.state, "reason": r.reason} for r in rows]


def _duration(count: int, ns: int) -> dict[str, int]:
    return {"count": count, "ns": ns}


def model_statistics(info: ModelInfo, stats: StatsSnapshot) -> dict[str, Any]:
    """One ``model_stats`` entry of ``GET /v2/models/{m}/stats`` / ``ModelStatistics``."""
    batches = sorted(stats.batch_stats.items())
    # Triton attributes a batch's compute time to each request in it: weigh every execution by its size.
    per_image = {
        stage: sum(size * getattr(b, f"compute_{stage}_ns") for size, b in batches)
        for stage in ("input", "infer", "output")
    }
    inferred = stats.inference_count
    return {
        "name": info.name,
        "version": info.version,
        "last_inference": stats.last_inference_ms,
        "inference_count": inferred,
        "execution_count": stats.execution_count,
        "inference_stats": {
            "success": _duration(stats.success_count, stats.success_ns),
            "fail": _duration(sum(stats.fail_count.values()), stats.fail_ns),
            "queue": _duration(stats.queue_count, stats.queue_ns),
            "compute_input": _duration(inferred, per_image["input"]),
            "compute_infer": _duration(inferred, per_image["infer"]),
            "compute_output": _duration(inferred, per_image["output"]),
            "cache_hit": _duration(0, 0),  # no response cache
            "cache_miss": _duration(0, 0),
        },
        "batch_stats": [
            {
                "batch_size": size,
                "compute_input": _duration(b.count, b.compute_input_ns),
                "compute_infer": _duration(b.count, b.compute_infer_ns),
                "compute_output": _duration(b.count, b.compute_output_ns),
            }
            for size, b in batches
        ],
    }
