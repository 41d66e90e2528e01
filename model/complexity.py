"""Parameter and FLOP counts, in the convention of the YOLOX README (thop via ``get_model_info``).

GFLOPs = 2 x (conv multiply-accumulates + 2 per BatchNorm input element), measured with forward hooks; this
reproduces every published YOLOX figure (nano 1.08 @416 ... x 281.9 @640). GroupNorm counts like BatchNorm and the
TOOD dynamic 1x1 conv (a ``bmm``) counts its multiply-accumulates; activations, pooling and resizing count zero.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from model.fuse import reparameterize
from model.head import TaskDecomposition
from model.repvgg import RepVGGBlock


@dataclass(frozen=True)
class Complexity:
    """Sizes of one model at one input size."""

    params_m: float  # training form (un-fused)
    params_repvgg_fused_m: float  # RepVGG branches merged, BatchNorms kept (EasyCV's "deploy" count)
    params_deploy_m: float  # RepVGG merged and every BatchNorm folded (what an exported bundle holds)
    gflops: float
    input_hw: tuple[int, int]


def count_params(model: nn.Module) -> int:
    """Number of parameters (buffers excluded)."""
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def count_gflops(model: nn.Module, input_hw: tuple[int, int]) -> float:
    """GFLOPs of one forward pass on a ``[1, 3, H, W]`` input (README convention, see module docstring)."""
    total = [0]

    def on_conv(mod: nn.Conv2d, _inp, out) -> None:
        total[0] += out.numel() * (mod.in_channels // mod.groups) * mod.kernel_size[0] * mod.kernel_size[1]

    def on_norm(_mod, inp, _out) -> None:
        total[0] += 2 * inp[0].numel()

    def on_decomp(mod: TaskDecomposition, inp, out) -> None:
        total[0] += out.numel() * mod.in_channels

    handles = []
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            handles.append(module.register_forward_hook(on_conv))
        elif isinstance(module, nn.BatchNorm2d | nn.GroupNorm):
            handles.append(module.register_forward_hook(on_norm))
        elif isinstance(module, TaskDecomposition):
            handles.append(module.register_forward_hook(on_decomp))
    was_training = model.training
    model.eval()
    try:
        model(torch.zeros(1, 3, *input_hw))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return 2 * total[0] / 1e9


def measure(model: nn.Module, input_hw: tuple[int, int]) -> Complexity:
    """Parameters in the three forms and GFLOPs of the training form."""
    repvgg = copy.deepcopy(model).eval()
    for module in repvgg.modules():
        if isinstance(module, RepVGGBlock):
            module.fuse()
    deploy = reparameterize(copy.deepcopy(model))
    return Complexity(
        params_m=count_params(model) / 1e6,
        params_repvgg_fused_m=count_params(repvgg) / 1e6,
        params_deploy_m=count_params(deploy) / 1e6,
        gflops=count_gflops(model, input_hw),
        input_hw=tuple(input_hw),
    )
