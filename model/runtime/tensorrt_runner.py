"""TensorRT runner: an engine with one optimisation profile per batch range, run on a private CUDA stream.

Device buffers are torch CUDA tensors (no extra CUDA binding needed); host staging uses pinned memory.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from model.runtime import RawOutput, as_raw_output
from model.runtime.tensorrt_engine import INPUT_NAME, EngineSpec, cached_engine, current_spec

OUTPUT_NAMES = ("num_dets", "boxes", "scores", "classes")


class TensorRTRunner:
    """Loads a prebuilt engine when it matches this GPU + TensorRT, else builds one (cached) from the ONNX."""

    backend = "tensorrt"

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
        import torch

        if not device.startswith("cuda") or not torch.cuda.is_available():
            raise RuntimeError("the TensorRT backend needs a CUDA device")
        self._torch = torch
        self.device = device
        self.precision = precision
        spec = current_spec(onnx_path, precision, input_hw, max_batch, device)
        if prebuilt is not None and prebuilt_spec is not None and EngineSpec(**_tuple_fields(prebuilt_spec)) == spec:
            engine_path = prebuilt
        else:
            engine_path = cached_engine(onnx_path, spec)
        self.spec = spec
        logger = trt.Logger(trt.Logger.WARNING)
        trt.init_libnvinfer_plugins(logger, "")
        self.engine = trt.Runtime(logger).deserialize_cuda_engine(Path(engine_path).read_bytes())
        self.context = self.engine.create_execution_context()
        self.stream = torch.cuda.Stream(device=device)
        self.profiles = list(spec.profiles)
        self._profile = -1
        self._dtypes = {name: trt.nptype(self.engine.get_tensor_dtype(name)) for name in (INPUT_NAME, *OUTPUT_NAMES)}
        self._pinned = None

    def _select_profile(self, batch_size: int) -> None:
        index = next(i for i, (lo, hi) in enumerate(self.profiles) if lo <= batch_size <= hi)
        if index != self._profile:
            self.context.set_optimization_profile_async(index, self.stream.cuda_stream)
            self._profile = index

    def run(self, batch: np.ndarray) -> RawOutput:
        """Run one batch."""
        torch = self._torch
        b = batch.shape[0]
        self._select_profile(b)
        if self._pinned is None or self._pinned.shape[0] < b:
            self._pinned = torch.empty((self.profiles[-1][1], *batch.shape[1:]), dtype=torch.float32).pin_memory()
        pinned = self._pinned[:b]
        pinned.copy_(torch.from_numpy(batch))
        with torch.cuda.stream(self.stream):
            images = pinned.to(self.device, non_blocking=True)
            self.context.set_input_shape(INPUT_NAME, tuple(images.shape))
            self.context.set_tensor_address(INPUT_NAME, images.data_ptr())
            outputs = []
            for name in OUTPUT_NAMES:
                shape = tuple(self.context.get_tensor_shape(name))
                dtype = torch.from_numpy(np.zeros(0, self._dtypes[name])).dtype
                out = torch.empty(shape, dtype=dtype, device=self.device)
                self.context.set_tensor_address(name, out.data_ptr())
                outputs.append(out)
            if not self.context.execute_async_v3(self.stream.cuda_stream):
                raise RuntimeError("TensorRT execution failed")
            host = [o.to("cpu", non_blocking=True) for o in outputs]
        self.stream.synchronize()
        return as_raw_output([h.numpy() for h in host])


def _tuple_fields(spec: dict) -> dict:
    spec = json.loads(json.dumps(spec))
    spec["input_hw"] = tuple(spec["input_hw"])
    spec["profiles"] = tuple(tuple(p) for p in spec["profiles"])
    return spec
