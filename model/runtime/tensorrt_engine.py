"""Building TensorRT engines from the bundle's ``model.trt.onnx`` (EfficientNMS_TRT inside), with a cache.

An engine is specific to the GPU model and the TensorRT version, so it is either built at export time on the
target machine (and recorded with both) or built at deploy time and cached under a key made of the ONNX sha256,
TensorRT version, GPU name and compute capability, precision and batch profiles.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from model.artifacts import sha256_file

INPUT_NAME = "images"


def batch_profiles(max_batch: int) -> list[tuple[int, int]]:
    """Optimisation-profile batch ranges: [1], [2-4], [5-8], [9-16], ... up to ``max_batch``."""
    ranges, lo, hi = [(1, 1)], 2, 4
    while lo <= max_batch:
        ranges.append((lo, min(hi, max_batch)))
        lo, hi = hi + 1, hi * 2
    return ranges


@dataclass(frozen=True)
class EngineSpec:
    """What an engine was built for; its JSON form sits beside the cached engine."""

    onnx_sha256: str
    tensorrt_version: str
    gpu_name: str
    compute_capability: str
    precision: str
    input_hw: tuple[int, int]
    profiles: tuple[tuple[int, int], ...]

    def key(self) -> str:
        """Stable cache key."""
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:32]


def default_cache_dir() -> Path:
    """``$YOLOXPAI_ENGINE_CACHE`` or ``~/.cache/yoloxpai/engines``."""
    return Path(os.environ.get("YOLOXPAI_ENGINE_CACHE", Path.home() / ".cache" / "yoloxpai" / "engines"))


def current_spec(onnx_path: Path, precision: str, input_hw: tuple[int, int], max_batch: int, device: str) -> EngineSpec:
    """The spec an engine built here, now, would have."""
    import tensorrt as trt
    import torch

    index = int(device.split(":")[1]) if ":" in device else 0
    major, minor = torch.cuda.get_device_capability(index)
    return EngineSpec(
        onnx_sha256=sha256_file(onnx_path),
        tensorrt_version=trt.__version__,
        gpu_name=torch.cuda.get_device_name(index),
        compute_capability=f"{major}.{minor}",
        precision=precision,
        input_hw=tuple(input_hw),
        profiles=tuple(batch_profiles(max_batch)),
    )


def build_engine(onnx_path: Path, spec: EngineSpec, workspace_gib: float = 4.0) -> bytes:
    """Parse the ONNX graph and build a serialized engine with one optimisation profile per batch range."""
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    trt.init_libnvinfer_plugins(logger, "")  # registers EfficientNMS_TRT
    builder = trt.Builder(logger)
    explicit_batch = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    flags = 0 if int(trt.__version__.split(".")[0]) >= 10 else explicit_batch  # TensorRT 10: always explicit
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(Path(onnx_path).read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
    if spec.precision == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
    h, w = spec.input_hw
    for lo, hi in spec.profiles:
        profile = builder.create_optimization_profile()
        profile.set_shape(INPUT_NAME, (lo, 3, h, w), (hi, 3, h, w), (hi, 3, h, w))
        config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT failed to build an engine from {onnx_path}")
    return bytes(serialized)


def cached_engine(onnx_path: Path, spec: EngineSpec, cache_dir: Path | None = None) -> Path:
    """Path of an engine for ``spec``, building and caching it first if needed (atomic write)."""
    cache_dir = cache_dir or default_cache_dir()
    cache_dir.mkdir(parents=True, exist_ok=True)
    engine_path = cache_dir / f"{spec.key()}.engine"
    if not engine_path.exists():
        data = build_engine(onnx_path, spec)
        tmp = engine_path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_bytes(data)
        tmp.replace(engine_path)
        engine_path.with_suffix(".json").write_text(json.dumps(asdict(spec), indent=2))
    return engine_path
