"""TensorRT runner: an engine with one optimisation profile per batch range, run on a private CUDA stream.

CUDA goes through cuda-python (``model.runtime.cuda_runtime``; the serve-gpu image has no torch). The device buffers
and their pinned host twins are sized for the largest profile run so far: grown, never shrunk, reused by every run,
so a steady server allocates nothing per request.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import numpy as np

from model.runtime import RawOutput, as_raw_output
from model.runtime.cuda_runtime import DeviceBuffer, PinnedArray, call, device_index, load_cudart, use_device
from model.runtime.tensorrt_engine import INPUT_NAME, EngineSpec, cached_engine, current_spec

OUTPUT_NAMES = ("num_dets", "boxes", "scores", "classes")
TENSOR_NAMES = (INPUT_NAME, *OUTPUT_NAMES)


class TensorRTRunner:
    """Loads a prebuilt engine when it matches this GPU + TensorRT, else builds one (cached) from the ONNX."""

    backend = "tensorrt"
    _rt = None  # set first in __init__: close() (and __del__) have nothing to free before it

    def __init__(
        self,
        onnx_path: Path,
        input_hw: tuple[int, int],
        max_batch: int,
        device: str = "cuda:0",
        precision: str = "fp16",
        prebuilt: Path | None = None,
        prebuilt_spec: dict | None = None,
    ) -> None:
        import tensorrt as trt

        if not device.startswith("cuda"):
            raise RuntimeError("the TensorRT backend needs a CUDA device")
        rt = load_cudart()
        self._rt = rt
        self._host: dict[str, PinnedArray] = {}
        self._device: dict[str, DeviceBuffer] = {}
        self._capacity = 0  # images the buffers hold
        self._stream = None
        self.context = self.engine = None
        self.device = device
        self.precision = precision
        self._index = device_index(device)
        use_device(rt, self._index)
        spec = current_spec(onnx_path, precision, input_hw, max_batch, device)
        if prebuilt is not None and prebuilt_spec is not None and EngineSpec(**_tuple_fields(prebuilt_spec)) == spec:
            engine_path = prebuilt
        else:
            engine_path = cached_engine(onnx_path, spec)
        self.spec = spec
        logger = trt.Logger(trt.Logger.WARNING)
        trt.init_libnvinfer_plugins(logger, "")
        self.engine = trt.Runtime(logger).deserialize_cuda_engine(Path(engine_path).read_bytes())
        if self.engine is None:
            raise RuntimeError(f"TensorRT could not deserialize the engine {engine_path}")
        self.context = self.engine.create_execution_context()
        self._stream = call(rt, "cudaStreamCreate")
        self.profiles = list(spec.profiles)
        self._profile = -1
        self._dtypes = {name: np.dtype(trt.nptype(self.engine.get_tensor_dtype(name))) for name in TENSOR_NAMES}
        # Per-image shapes: everything but the batch axis is fixed in our graphs (input size, K detections).
        self._item_shapes = {name: tuple(self.engine.get_tensor_shape(name))[1:] for name in TENSOR_NAMES}
        dynamic = [name for name, shape in self._item_shapes.items() if any(d < 0 for d in shape)]
        if dynamic:
            raise RuntimeError(f"the engine's {', '.join(dynamic)} must be dynamic in the batch axis only")

    def _profile_for(self, batch_size: int) -> int:
        for index, (lo, hi) in enumerate(self.profiles):
            if lo <= batch_size <= hi:
                return index
        raise ValueError(f"batch of {batch_size} is outside the engine's profiles (1..{self.profiles[-1][1]})")

    def _reserve(self, images: int) -> None:
        """Buffers for ``images`` images; the previous run has finished (each run synchronises its stream)."""
        if images <= self._capacity:
            return
        self._free_buffers()
        for name in TENSOR_NAMES:
            self._host[name] = PinnedArray(self._rt, (images, *self._item_shapes[name]), self._dtypes[name])
            self._device[name] = DeviceBuffer(self._rt, self._host[name].array.nbytes)
        self._capacity = images

    def run(self, batch: np.ndarray) -> RawOutput:
        """Run one batch."""
        b = batch.shape[0]
        if tuple(batch.shape[1:]) != self._item_shapes[INPUT_NAME]:
            raise ValueError(f"expected [B, {', '.join(map(str, self._item_shapes[INPUT_NAME]))}], got {batch.shape}")
        # The current device is per host thread, and a worker thread is not the one that loaded the runner.
        call(self._rt, "cudaSetDevice", self._index)
        profile = self._profile_for(b)
        self._reserve(self.profiles[profile][1])
        try:
            self._enqueue(batch, profile)
        except BaseException:
            with contextlib.suppress(RuntimeError):  # no copy may stay in flight into buffers a later run frees
                call(self._rt, "cudaStreamSynchronize", self._stream)
            raise
        call(self._rt, "cudaStreamSynchronize", self._stream)
        # Copies: the pinned buffers are overwritten by the next run.
        return as_raw_output([self._host[name].array[:b].copy() for name in OUTPUT_NAMES])

    def _enqueue(self, batch: np.ndarray, profile: int) -> None:
        """Input copy, inference and output copies, queued on the stream in that order."""
        rt, stream, b = self._rt, self._stream, batch.shape[0]
        if profile != self._profile:
            if not self.context.set_optimization_profile_async(profile, int(stream)):
                raise RuntimeError(f"TensorRT could not select optimisation profile {profile}")
            self._profile = profile
        staged = self._host[INPUT_NAME].array[:b]
        np.copyto(staged, batch, casting="same_kind")
        h2d, d2h = rt.cudaMemcpyKind.cudaMemcpyHostToDevice, rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        source, target = self._host[INPUT_NAME].ptr, self._device[INPUT_NAME].ptr
        call(rt, "cudaMemcpyAsync", target, source, staged.nbytes, h2d, stream)
        if not self.context.set_input_shape(INPUT_NAME, tuple(batch.shape)):
            raise RuntimeError(f"TensorRT rejected the input shape {tuple(batch.shape)}")
        for name in TENSOR_NAMES:
            if not self.context.set_tensor_address(name, self._device[name].ptr):
                raise RuntimeError(f"TensorRT rejected the address of {name}")
        if not self.context.execute_async_v3(int(stream)):
            raise RuntimeError("TensorRT execution failed")
        for name in OUTPUT_NAMES:
            host = self._host[name].array[:b]
            shape = tuple(self.context.get_tensor_shape(name))
            if shape != host.shape:
                raise RuntimeError(f"TensorRT output {name} has shape {shape}, expected {host.shape}")
            call(rt, "cudaMemcpyAsync", self._host[name].ptr, self._device[name].ptr, host.nbytes, d2h, stream)

    def _free_buffers(self) -> None:
        buffers = [*self._device.values(), *self._host.values()]
        self._device, self._host, self._capacity = {}, {}, 0
        errors = []
        for buffer in buffers:
            try:
                buffer.free()
            except RuntimeError as exc:
                errors.append(exc)
        if errors:
            raise errors[0]

    def close(self) -> None:
        """Free the buffers and the stream (idempotent); the runner cannot run afterwards."""
        if self._rt is None:
            return
        rt, stream = self._rt, self._stream
        self._rt = self._stream = None
        self.context = self.engine = None  # TensorRT objects go before the memory they were given
        steps = [self._free_buffers]
        if stream is not None:  # nothing may still be writing into the buffers when they are freed
            steps = [
                lambda: call(rt, "cudaStreamSynchronize", stream),
                *steps,
                lambda: call(rt, "cudaStreamDestroy", stream),
            ]
        errors = []
        for step in steps:  # every step is tried: one failure must not leak the rest
            try:
                step()
            except RuntimeError as exc:
                errors.append(exc)
        if errors:
            raise errors[0]

    def __del__(self) -> None:
        # At interpreter exit CUDA may already be torn down; there is nothing useful to report then.
        with contextlib.suppress(Exception):
            self.close()


def _tuple_fields(spec: dict) -> dict:
    spec = json.loads(json.dumps(spec))
    spec["input_hw"] = tuple(spec["input_hw"])
    spec["profiles"] = tuple(tuple(p) for p in spec["profiles"])
    return spec
