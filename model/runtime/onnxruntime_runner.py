"""ONNX Runtime runner (CPU, or CUDA execution provider when asked and available)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from model.runtime import RawOutput, as_raw_output
from model.runtime.cuda_runtime import device_index


class OnnxRuntimeRunner:
    """One ``InferenceSession`` over the bundle's ``model.onnx``."""

    backend = "onnxruntime"

    def __init__(
        self,
        path: Path,
        device: str = "cpu",
        threads: int | None = None,
        spin: bool = False,
        precision: str = "fp32",
        io_binding: bool | None = None,
    ) -> None:
        """``precision``: the artifact's, reported as is; ``io_binding``: run through an I/O binding (default: on
        CUDA only; the CPU provider takes it too, which is how its code is tested without a GPU)."""
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
        providers: list = ["CPUExecutionProvider"]
        self._device_type, self._device_id = "cpu", 0
        if device.startswith("cuda"):
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise RuntimeError("onnxruntime has no CUDAExecutionProvider here; install onnxruntime-gpu")
            self._device_type, self._device_id = "cuda", device_index(device)
            providers = [("CUDAExecutionProvider", {"device_id": self._device_id}), "CPUExecutionProvider"]
        self.session = ort.InferenceSession(str(path), options, providers=providers)
        if device.startswith("cuda") and "CUDAExecutionProvider" not in self.session.get_providers():
            # ONNX Runtime falls back to the CPU with only a warning when the CUDA libraries fail to load.
            raise RuntimeError(
                f"onnxruntime could not start its CUDAExecutionProvider on {device} (CUDA/cuDNN missing?)"
            )
        self._ortvalue_from_numpy = ort.OrtValue.ortvalue_from_numpy
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.device = device
        self.precision = precision
        self.io_binding = device.startswith("cuda") if io_binding is None else io_binding

    def run(self, batch: np.ndarray) -> RawOutput:
        """Run one batch."""
        if self.io_binding:
            return as_raw_output(self._run_bound(batch))
        return as_raw_output(self.session.run(self.output_names, {self.input_name: batch}))

    def _run_bound(self, batch: np.ndarray) -> list[np.ndarray]:
        """The input goes to the device in one explicit copy before the run; the outputs are allocated on the device
        and come back in one copy after it, instead of ``session.run`` moving each tensor between host and device."""
        binding = self.session.io_binding()  # fresh each run: the output shapes change with the batch size
        binding.bind_ortvalue_input(
            self.input_name, self._ortvalue_from_numpy(batch, self._device_type, self._device_id)
        )
        for name in self.output_names:
            binding.bind_output(name, self._device_type, self._device_id)
        self.session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()
