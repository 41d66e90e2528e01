"""INT8 OpenVINO artifacts: NNCF post-training quantisation of the bundle's graph, calibrated on real images.

What is quantised: the network's convolutions and the element-wise ops between them (int8 weights per channel,
activation ranges from the calibration images). What stays fp32: the prediction convolutions (``*_preds*``: box
offsets, objectness and class logits, whose error the decode multiplies by the stride and the exponent) and
everything outside the network (``/net/model/``): decode, top-k and NMS. The CPU runs the int8 parts on VNNI/AMX.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from model.config import InputConvention

DEFAULT_CALIBRATION_COUNT = 300  # NNCF's own default subset size
# Node-name patterns NNCF must leave in fp32 (ONNX names as torch.onnx writes them from the EndToEnd module).
KEEP_FP32_PATTERNS = (r".*_preds.*", r"^(?!/net/model/).*")


def calibration_files(folder: str | Path, count: int) -> list[Path]:
    """The first ``count`` images under ``folder`` (recursively, sorted by path): a plain folder of images or a
    COCO-format folder; the same image search as the BatchNorm calibration (``model.bn_unfold.find_images``)."""
    from model.bn_unfold import find_images  # imports torch: only when an export quantises

    return find_images(folder, count)


def calibration_inputs(files: list[Path], input_hw: tuple[int, int], convention: InputConvention) -> list[np.ndarray]:
    """Network inputs ``float32 [1, 3, H, W]`` for the ``files`` that decode (``model.bn_unfold.letterboxed_images``:
    an unreadable file is skipped, as in the BatchNorm calibration; none readable is an error)."""
    from model.bn_unfold import letterboxed_images

    return [tensor[None] for tensor in letterboxed_images(files, input_hw, convention)]


def quantize_openvino(
    onnx_path: Path,
    out_xml: Path,
    files: list[Path],
    input_hw: tuple[int, int],
    convention: InputConvention,
) -> dict:
    """Quantise the ONNX graph at ``onnx_path`` into an int8 OpenVINO IR at ``out_xml`` (+ ``.bin``); returns the
    artifact's ``extra`` (weights file and what the calibration was)."""
    import nncf
    import openvino as ov

    model = ov.convert_model(str(onnx_path))
    inputs = calibration_inputs(files, input_hw, convention)
    quantized = nncf.quantize(
        model,
        nncf.Dataset(inputs),
        preset=nncf.QuantizationPreset.MIXED,  # symmetric weights, asymmetric activations (accuracy first)
        subset_size=len(inputs),
        ignored_scope=nncf.IgnoredScope(patterns=list(KEEP_FP32_PATTERNS), validate=False),
    )
    ov.save_model(quantized, str(out_xml), compress_to_fp16=False)
    return {
        "weights_file": out_xml.with_suffix(".bin").name,
        "quantizer": f"nncf {nncf.__version__}",
        "calibration": {"images": len(inputs), "unreadable": len(files) - len(inputs), "data": _data_name(files)},
        "fp32_patterns": list(KEEP_FP32_PATTERNS),
    }


def _data_name(files: list[Path]) -> str:
    """The calibration folder as recorded: the last two parts of the images' common folder (no machine prefix)."""
    common = Path(os.path.commonpath([str(f.resolve().parent) for f in files]))
    return "/".join(common.parts[-2:])
