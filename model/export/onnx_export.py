"""ONNX export of the end-to-end graph (TorchScript-based exporter: fast, dynamic batch, custom NMS nodes)."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from model.export.e2e import EndToEnd

OUTPUT_NAMES = ["num_dets", "boxes", "scores", "classes"]
INPUT_NAME = "images"
OPSET = 17


def export_onnx(e2e: EndToEnd, path: Path, input_hw: tuple[int, int]) -> Path:
    """Write ``e2e`` as ONNX with a dynamic batch axis; returns ``path``."""
    e2e = e2e.eval()
    example = torch.zeros(2, 3, *input_hw)  # batch 2: nothing gets specialised to batch 1
    dynamic = {name: {0: "batch"} for name in [INPUT_NAME, *OUTPUT_NAMES]}
    with warnings.catch_warnings():
        # The dynamo exporter needs onnxscript and is ~10x slower here; the TorchScript one is deprecated but
        # exports custom NMS nodes through `symbolic` and matches eager (see docs/environment.md).
        warnings.simplefilter("ignore")
        torch.onnx.export(
            e2e,
            (example,),
            str(path),
            input_names=[INPUT_NAME],
            output_names=OUTPUT_NAMES,
            dynamic_axes=dynamic,
            opset_version=OPSET,
            do_constant_folding=True,
            custom_opsets={"TRT": 1} if e2e.flavour == "trt" else None,
            dynamo=False,
        )
    _stamp_output_shapes(path, e2e.nms.max_detections)
    return path


def _stamp_output_shapes(path: Path, max_detections: int) -> None:
    """Write the contract's static K into the graph outputs (shape inference loses it through Where/TopK)."""
    import onnx

    model = onnx.load(str(path))
    shapes = {"num_dets": ["batch"], "boxes": ["batch", max_detections, 4], "scores": ["batch", max_detections]}
    shapes["classes"] = shapes["scores"]
    for output in model.graph.output:
        dims = output.type.tensor_type.shape.dim
        for dim, value in zip(dims, shapes[output.name], strict=True):
            if isinstance(value, int):
                dim.dim_value = value
            else:
                dim.dim_param = value
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
