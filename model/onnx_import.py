"""Import released ONNX weights (a Megvii-style YOLOX export, BatchNorm folded) into our trainable model.

``load_model("yolox_nano.onnx", arch="yolox-nano")`` lands here. Steps:
1. export our own preset (BatchNorms removed) to ONNX in memory and match its convolutions to the file's by graph
   structure (``model.onnx_graph``): which tensor each conv reads, its attributes, what it feeds. Initializer names
   are never trusted; a file that is not the preset is refused naming the first conv without a counterpart;
2. copy each folded weight into its conv (its direction; the norm a fresh conv has, so SGD steps are the size the
   recipe expects) and un-fold the BatchNorms (``model.bn_unfold``) with statistics measured on real images and
   the scale the weight gave up, so eval mode reproduces the file and training starts from a sensible state;
3. run the file in ONNX Runtime (when installed) beside the imported model and refuse a difference.
Supported: the Megvii presets nano..x (their exports hold plain convs; YOLOX-PAI's RepVGG/TOOD graphs are not).
"""

from __future__ import annotations

import dataclasses
import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from model.bn_unfold import (
    DEFAULT_MAX_IMAGES,
    Calibration,
    calibration_batches,
    default_calibration_source,
    find_images,
    unfold_batchnorms,
)
from model.config import YoloxConfig, get_config
from model.layers import BaseConv
from model.onnx_graph import ConvGraph, GraphMismatch, match_convs
from model.yolox import YOLOX, build_from_config

# Megvii's export (decode_in_inference=False) vs ours in eval mode; float32 convs in two runtimes differ ~1e-5.
VERIFY_RTOL = 1e-3
VERIFY_ATOL = 1e-3


class OnnxImportError(ValueError):
    """An ONNX file that is not the requested preset, or cannot be read."""


@dataclass(frozen=True)
class OnnxImport:
    """What the import did."""

    config: YoloxConfig
    convs: int
    calibration: Calibration
    max_abs_diff: float | None  # vs ONNX Runtime on a calibration image; None when ONNX Runtime is absent
    output_form: str  # "raw" (decode_in_inference=False) or "decoded"

    def summary(self) -> str:
        """One line for logs."""
        check = (
            f"matches ONNX Runtime within {self.max_abs_diff:.2g} ({self.output_form} outputs)"
            if self.max_abs_diff is not None
            else "not run through ONNX Runtime (not installed)"
        )
        return (f"imported {self.convs} convs into {self.config.name} ({self.config.num_classes} classes), "
                f"{self.calibration.layers} BatchNorms un-folded with statistics of {self.calibration.images} "
                f"images from {self.calibration.source}; {check}")  # fmt: skip


def _check_supported(cfg: YoloxConfig) -> None:
    plain = cfg.backbone == "cspdarknet" and cfg.neck == "pafpn" and cfg.fusion == "none" and cfg.head == "yolox"
    if not plain or cfg.head_conv_type == "repconv":
        raise OnnxImportError(
            f"ONNX import supports the Megvii presets (yolox-nano..yolox-x); {cfg.name} has RepVGG/ASFF/TOOD "
            "parts whose deploy graphs cannot be un-fused: load its EasyCV checkpoint instead"
        )


class _Raw(nn.Module):
    """Our model with Megvii's export output (``decode_in_inference=False``)."""

    def __init__(self, model: YOLOX) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images, decode=False)


def reference_graph(cfg: YoloxConfig) -> tuple[ConvGraph, list[str], YOLOX]:
    """Our preset exported without BatchNorms, as a ``ConvGraph``; conv names are our module paths."""
    import onnx

    model = build_from_config(cfg).eval()
    bare = build_from_config(cfg).eval()
    bare.load_state_dict(model.state_dict())
    for module in bare.modules():
        if isinstance(module, BaseConv):
            module.bn = nn.Identity()
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript-based exporter is deprecated; it keeps parameter names
        torch.onnx.export(_Raw(bare), (torch.zeros(1, 3, 64, 64),), buffer, opset_version=11, dynamo=False,
                          input_names=["images"], output_names=["output"])  # fmt: skip
    graph = ConvGraph(onnx.load_from_string(buffer.getvalue()).graph)
    names = [conv.weight.removeprefix("model.").removesuffix(".weight") for conv in graph.convs]
    return graph, names, model


def _graph_classes_and_size(graph) -> tuple[int | None, tuple[int, int] | None]:
    """num_classes from the output's last dim (5 + C) and the input's static H, W, when the file states them."""
    dims = [d.dim_value if d.HasField("dim_value") else None for d in graph.output[0].type.tensor_type.shape.dim]
    num_classes = dims[-1] - 5 if dims and dims[-1] and dims[-1] > 5 else None
    inputs = [i for i in graph.input if i.name not in {init.name for init in graph.initializer}]
    size = None
    if inputs:
        in_dims = [d.dim_value if d.HasField("dim_value") else None for d in inputs[0].type.tensor_type.shape.dim]
        if len(in_dims) == 4 and in_dims[2] and in_dims[3] and not in_dims[2] % 32 and not in_dims[3] % 32:
            size = (int(in_dims[2]), int(in_dims[3]))
    return num_classes, size


@torch.no_grad()
def import_onnx(
    path: str | Path,
    arch: str,
    num_classes: int | None = None,
    calibration_images: str | Path | None = None,
    max_images: int = DEFAULT_MAX_IMAGES,
) -> tuple[YOLOX, OnnxImport]:
    """Build preset ``arch`` from the ONNX file at ``path``; returns the eval-mode model and a report.

    ``calibration_images``: a folder of images for the BatchNorm statistics (default: the photos shipped in
    ``model/assets/calibration``); the first ``max_images`` (sorted, recursive) are used.
    """
    import onnx

    path = Path(path)
    try:
        proto = onnx.load(str(path))
    except Exception as exc:  # onnx raises DecodeError, OSError... for anything that is not a model file
        raise OnnxImportError(f"{path}: not a readable ONNX model: {exc}") from exc
    graph_classes, graph_hw = _graph_classes_and_size(proto.graph)
    if num_classes is None:
        num_classes = graph_classes or 80
    try:
        cfg = get_config(arch, num_classes=num_classes)
    except KeyError as exc:
        raise OnnxImportError(str(exc)) from exc
    if graph_hw is not None:
        cfg = dataclasses.replace(cfg, input_hw=graph_hw)
    _check_supported(cfg)
    ours, names, model = reference_graph(cfg)
    try:
        theirs = ConvGraph(proto.graph)
        mapping = match_convs(ours, theirs, names, f"{path.name} is not {arch} with {num_classes} classes")
    except GraphMismatch as exc:
        raise OnnxImportError(str(exc)) from exc

    folded_bias, weight_scale = _copy_weights(model, ours, theirs, names, mapping)
    source = Path(calibration_images) if calibration_images is not None else default_calibration_source()
    batches = calibration_batches(find_images(source, max_images), cfg.input_hw, cfg.convention)
    calibration = unfold_batchnorms(model, folded_bias, batches, str(source), weight_scale)
    model.eval()
    diff, form = _verify(path, model, batches[0][:1], cfg.input_hw)
    return model, OnnxImport(cfg, len(mapping), calibration, diff, form)


def fresh_norm_scale(weight: torch.Tensor) -> torch.Tensor:
    """Per output channel, the factor that brings a folded weight to the norm of a freshly initialised conv.

    PyTorch's default conv init (uniform +-1/sqrt(fan_in)) gives every output channel a norm of ~1/sqrt(3)
    whatever its shape; the recipe's learning rate is tuned for such weights. Behind a BN the output does not
    depend on that norm, but SGD's effective step does (~lr / norm^2): a folded stem weight is ~7x smaller
    (it absorbed 1/std of 0..255 pixels), and kept as it is, 10 fine-tuning steps at lr 8e-5 took COCO nano from
    0.307 to 0.002 AP on coco-tiny; rescaled, the same steps give 0.310.
    """
    norms = weight.flatten(1).norm(dim=1)
    return torch.where(norms > 0, norms * 3**0.5, torch.ones_like(norms))


def _copy_weights(model: YOLOX, ours: ConvGraph, theirs: ConvGraph, names: list[str], mapping: dict[int, int]):
    """Folded weights into the convs (rescaled where a BN follows, see ``fresh_norm_scale``); returns each BN's
    folded bias and weight scale (applied by ``unfold_batchnorms``)."""
    folded_bias: dict[nn.BatchNorm2d, torch.Tensor] = {}
    weight_scale: dict[nn.BatchNorm2d, torch.Tensor] = {}
    for i, name in enumerate(names):
        conv: nn.Conv2d = model.get_submodule(name)
        src = theirs.convs[mapping[i]]
        weight = torch.from_numpy(np.array(theirs.constant(src.weight), dtype=np.float32))
        bias_value = theirs.constant(src.bias) if src.bias else None
        bias = (torch.from_numpy(np.array(bias_value, dtype=np.float32)) if bias_value is not None
                else torch.zeros(weight.shape[0]))  # fmt: skip
        conv.weight.copy_(weight)
        parent = model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else None
        if isinstance(parent, BaseConv) and isinstance(parent.bn, nn.BatchNorm2d) and conv.bias is None:
            folded_bias[parent.bn] = bias
            scale = fresh_norm_scale(weight)
            conv.weight.copy_(weight / scale.reshape(-1, 1, 1, 1))
            weight_scale[parent.bn] = scale
        elif conv.bias is not None:
            conv.bias.copy_(bias)
        elif bias.abs().max() > 0:
            raise OnnxImportError(f"{name}: the ONNX conv has a bias but the model's conv has none and no BN")
    return folded_bias, weight_scale


def _verify(path: Path, model: YOLOX, image: torch.Tensor, input_hw: tuple[int, int]) -> tuple[float | None, str]:
    """Run the file in ONNX Runtime and the model on one calibration image; refuse a difference."""
    try:
        import onnxruntime as ort
    except ImportError:
        return None, "unverified"
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    expected = session.run(None, {session.get_inputs()[0].name: image.numpy()})[0]
    best = (float("inf"), "raw")
    for form, decode in (("raw", False), ("decoded", True)):
        got = model(image, decode=decode).numpy()
        if got.shape != expected.shape:
            continue
        diff = float(np.abs(got - expected).max())
        if np.allclose(got, expected, rtol=VERIFY_RTOL, atol=VERIFY_ATOL):
            return diff, form
        best = min(best, (diff, form))
    raise OnnxImportError(
        f"{path.name}: the imported weights do not reproduce the file's output (max |diff| {best[0]:.3g} on "
        f"{best[1]} outputs, shape {list(expected.shape)}): its convs match {model.cfg.name}, but the glue "
        "around them differs (input normalisation? another head layout?)"
    )
