"""Building TensorRT engines from the bundle's ``model.trt.onnx`` (EfficientNMS_TRT inside), with a cache.

An engine is specific to the GPU model and the TensorRT version, so it is either built at export time on the
target machine (and recorded with both) or built at deploy time and cached under a key made of the ONNX sha256,
TensorRT version, GPU name and compute capability, precision and batch profiles.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from model.artifacts import sha256_file
from model.runtime.cuda_runtime import device_index, device_name_and_capability, load_cudart, use_device

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
    """``$YOLOXPAI_ENGINE_CACHE``, else ``$XDG_CACHE_HOME/yoloxpai/engines``, else ``~/.cache/yoloxpai/engines``
    (a container points the first at a mounted volume so engines survive restarts)."""
    if os.environ.get("YOLOXPAI_ENGINE_CACHE"):
        return Path(os.environ["YOLOXPAI_ENGINE_CACHE"]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "yoloxpai" / "engines"
    return Path.home() / ".cache" / "yoloxpai" / "engines"


def current_spec(onnx_path: Path, precision: str, input_hw: tuple[int, int], max_batch: int, device: str) -> EngineSpec:
    """The spec an engine built here, now, would have."""
    import tensorrt as trt

    rt = load_cudart()
    index = device_index(device)
    use_device(rt, index)
    gpu_name, capability = device_name_and_capability(rt, index)
    return EngineSpec(
        onnx_sha256=sha256_file(onnx_path),
        tensorrt_version=trt.__version__,
        gpu_name=gpu_name,
        compute_capability=capability,
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


def _write_atomically(path: Path, data: bytes) -> None:
    """Write beside ``path`` under a unique name, then rename: a concurrent loader (another worker or replica
    sharing the cache volume) sees either no file or the whole file, never a partly written one."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def cached_engine(onnx_path: Path, spec: EngineSpec, cache_dir: Path | None = None) -> Path:
    """Path of an engine for ``spec``, building and caching it first if needed (atomic writes)."""
    cache_dir = cache_dir or default_cache_dir()
    cache_dir.mkdir(parents=True, exist_ok=True)
    engine_path = cache_dir / f"{spec.key()}.engine"
    if not engine_path.exists():
        data = build_engine(onnx_path, spec)
        # The spec first: an engine in the cache always has its description beside it.
        _write_atomically(engine_path.with_suffix(".json"), json.dumps(asdict(spec), indent=2).encode())
        _write_atomically(engine_path, data)
    return engine_path
