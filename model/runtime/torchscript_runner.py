"""TorchScript runner: CPU fp32, or CUDA with fp16, a private CUDA stream and pinned host staging memory."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from model.runtime import RawOutput


class TorchScriptRunner:
    """The bundle's ``model.pt`` (end-to-end graph) on one device."""

    backend = "torchscript"

    def __init__(self, path: Path, device: str = "cpu", precision: str = "fp32", threads: int | None = None) -> None:
        import torch

        self._torch = torch
        self.device = device
        if device.startswith("cuda"):
            if not torch.cuda.is_available():
                raise RuntimeError(f"device {device!r} requested but CUDA is not available")
            self.stream = torch.cuda.Stream(device=device)
            if precision == "fp32":
                # fp32 means fp32: PyTorch lets cuDNN run fp32 convolutions in TF32 (10-bit mantissa) by default,
                # which moved boxes 1.7 px from the CPU's on an H200. Process-wide; fp16 graphs are unaffected.
                torch.backends.cudnn.allow_tf32 = False
                torch.backends.cuda.matmul.allow_tf32 = False
        elif precision != "fp32":
            raise ValueError(f"TorchScript {precision} needs a CUDA device; use fp32 on CPU")
        else:
            self.stream = None
            if threads:
                torch.set_num_threads(threads)
        self.precision = precision
        self.module = torch.jit.load(str(path), map_location=device).eval()
        if precision == "fp16":
            self.module.half()  # the graph casts decoded predictions back to fp32 before NMS
        self._pinned: torch.Tensor | None = None

    def _stage(self, batch: np.ndarray):
        """Host -> device copy through a reused pinned buffer (asynchronous on the runner's stream)."""
        torch = self._torch
        host = torch.from_numpy(batch)
        if self.stream is None:
            return host
        if self._pinned is None or self._pinned.shape[0] < batch.shape[0] or self._pinned.shape[1:] != host.shape[1:]:
            self._pinned = torch.empty(host.shape, dtype=torch.float32).pin_memory()
        pinned = self._pinned[: batch.shape[0]]
        pinned.copy_(host)
        x = pinned.to(self.device, non_blocking=True)
        return x.half() if self.precision == "fp16" else x

    def run(self, batch: np.ndarray) -> RawOutput:
        """Run one batch."""
        torch = self._torch
        with torch.inference_mode():
            if self.stream is None:
                return self._forward(self._stage(batch))
            with torch.cuda.stream(self.stream):
                return self._forward(self._stage(batch))

    def run_tensor(self, batch) -> RawOutput:
        """Run one float32 ``[B, 3, H, W]`` batch already on the runner's device, on the current stream (the caller,
        ``model.device_pipeline``, makes the batch on the runner's stream and runs this there)."""
        with self._torch.inference_mode():
            return self._forward(batch.half() if self.precision == "fp16" else batch)

    def _forward(self, batch) -> RawOutput:
        outputs = self.module(batch)
        if self.stream is not None:  # on CUDA: read back on the stream that ran it, then wait for it alone
            outputs = [o.to("cpu", non_blocking=True) for o in outputs]
            self._torch.cuda.current_stream(self.device).synchronize()
        num, boxes, scores, classes = (o.numpy() for o in outputs)
        return RawOutput(num.astype(np.int32), boxes.astype(np.float32), scores.astype(np.float32), classes)
