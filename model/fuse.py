"""Deploy form: fold every BatchNorm into its conv and merge RepVGG branches (``reparameterize``).

Run it on an eval-mode model after loading weights. GroupNorm (TOOD) and the TOOD dynamic conv are left as they
are: GN statistics depend on the input, so they cannot be folded.
"""

from __future__ import annotations

import torch
from torch import nn

from model.layers import BaseConv
from model.repvgg import RepVGGBlock


@torch.no_grad()
def fuse_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A conv with bias equal to ``bn(conv(x))`` in eval mode."""
    fused = nn.Conv2d(
        conv.in_channels,
        conv.out_channels,
        conv.kernel_size,
        conv.stride,
        conv.padding,
        dilation=conv.dilation,
        groups=conv.groups,
        bias=True,
    ).to(conv.weight.device, conv.weight.dtype)
    scale = bn.weight / (bn.running_var + bn.eps).sqrt()
    fused.weight.copy_(conv.weight * scale.reshape(-1, 1, 1, 1))
    bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
    fused.bias.copy_(bn.bias + (bias - bn.running_mean) * scale)
    return fused


@torch.no_grad()
def reparameterize(model: nn.Module) -> nn.Module:
    """Fuse RepVGG blocks and conv+BN pairs in place; returns ``model`` in eval mode."""
    model.eval()
    for module in model.modules():
        if isinstance(module, RepVGGBlock):
            module.fuse()
        elif isinstance(module, BaseConv) and isinstance(module.bn, nn.BatchNorm2d):
            module.conv = fuse_conv_bn(module.conv, module.bn)
            module.bn = nn.Identity()
    return model


def is_reparameterized(model: nn.Module) -> bool:
    """True when no foldable BatchNorm or un-fused RepVGG block is left."""
    for module in model.modules():
        if isinstance(module, RepVGGBlock) and not module.deploy:
            return False
        if isinstance(module, BaseConv) and isinstance(module.bn, nn.BatchNorm2d):
            return False
    return True
