"""ONNX Runtime runner (CPU, or CUDA execution provider when asked and available)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from model.runtime import RawOutput, as_raw_output


class OnnxRuntimeRunner:
    """One ``InferenceSession`` over the bundle's ``model.onnx``."""

    backend = "onnxruntime"

    def __init__(self, path: Path, device: str = "cpu", threads: int | None = None, spin: bool = False) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.inter_op_num_threads = 1
        if threads:
            options.intra_op_num_threads = threads
        # Spinning intra-op threads hand work between parallel sections without a futex wake-up (a 416 px nano runs
        # in 4.5 ms instead of 6.8 ms on 2 cores) but burn the cores a busy server needs for HTTP and decoding
        # (docs/benchmarks.md): the server spins only in its idle-latency session.
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
        providers = ["CPUExecutionProvider"]
        if device.startswith("cuda"):
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise RuntimeError("onnxruntime has no CUDAExecutionProvider here; install onnxruntime-gpu")
            index = int(device.split(":")[1]) if ":" in device else 0
            providers = [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]
        self.session = ort.InferenceSession(str(path), options, providers=providers)
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.device = device
        self.precision = "fp32"

    def run(self, batch: np.ndarray) -> RawOutput:
        """Run one batch."""
        return as_raw_output(self.session.run(self.output_names, {self.input_name: batch}))
