"""OpenVINO runner: the bundle's IR (or its ONNX graph) compiled for CPU (or an Intel GPU)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from model.runtime import RawOutput, as_raw_output

# int8: the IR's quantised ops run in int8 whatever the hint; the hint sets the ops NNCF left out (decode, NMS)
_HINTS = {"fp32": "f32", "bf16": "bf16", "fp16": "f16", "int8": "f32"}


class OpenVinoRunner:
    """One compiled model and one infer request."""

    backend = "openvino"

    def __init__(self, path: Path, device: str = "cpu", precision: str = "fp32", threads: int | None = None) -> None:
        import openvino as ov

        core = ov.Core()
        ov_device = "CPU" if device == "cpu" else device.upper()
        # OpenVINO silently picks bf16 on CPUs with AVX-512 BF16: state the precision explicitly.
        config = {"INFERENCE_PRECISION_HINT": _HINTS[precision], "PERFORMANCE_HINT": "LATENCY"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        compiled = core.compile_model(core.read_model(str(path)), ov_device, config)
        self.request = compiled.create_infer_request()
        # An output port can carry several tensor names (e.g. "classes" and "/Where_9_output_0"): match by set.
        names = ("num_dets", "boxes", "scores", "classes")
        self.outputs = [next(o for o in compiled.outputs if name in o.get_names()) for name in names]
        self.device = device
        self.precision = precision

    def run(self, batch: np.ndarray) -> RawOutput:
        """Run one batch."""
        result = self.request.infer({0: batch})
        return as_raw_output([result[port] for port in self.outputs])
