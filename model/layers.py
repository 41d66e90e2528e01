"""Convolution blocks shared by the YOLOX backbones, necks and heads.

Attribute names (``conv``, ``bn``, ``dconv``, ``pconv``, ``m``...) are the state_dict grammar of the official
Megvii and EasyCV checkpoints (``../shared/reference/yolox.md`` §2.1), so do not rename them. Every BatchNorm is
created with Megvii's ``init_yolo`` values (eps 1e-3, momentum 0.03): they are not stored in checkpoints.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

BN_EPS = 1e-3
BN_MOMENTUM = 0.03


def batch_norm(channels: int) -> nn.BatchNorm2d:
    """BatchNorm2d with the YOLOX eps/momentum."""
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


def get_activation(name: str = "silu") -> nn.Module:
    """Activation by name: ``silu`` (default), ``relu``, ``lrelu`` (slope 0.1) or ``identity``."""
    if name == "silu":
        return nn.SiLU(inplace=True)
    if name == "relu":
        return nn.ReLU(inplace=True)
    if name == "lrelu":
        return nn.LeakyReLU(0.1, inplace=True)
    if name == "identity":
        return nn.Identity()
    raise ValueError(f"unsupported activation {name!r}")


class BaseConv(nn.Module):
    """Conv2d (same padding) -> BatchNorm -> activation. ``fuse()`` folds the BN into the conv."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        ksize: int,
        stride: int = 1,
        groups: int = 1,
        bias: bool = False,
        act: str = "silu",
    ) -> None:
        super().__init__()
        pad = (ksize - 1) // 2
        self.conv = nn.Conv2d(in_channels, out_channels, ksize, stride, pad, groups=groups, bias=bias)
        self.bn: nn.Module = batch_norm(out_channels)
        self.act = get_activation(act)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.bn(self.conv(x)))


class DWConv(nn.Module):
    """Depthwise conv (``dconv``) followed by a pointwise conv (``pconv``), each with BN + activation."""

    def __init__(self, in_channels: int, out_channels: int, ksize: int, stride: int = 1, act: str = "silu") -> None:
        super().__init__()
        self.dconv = BaseConv(in_channels, in_channels, ksize, stride, groups=in_channels, act=act)
        self.pconv = BaseConv(in_channels, out_channels, 1, 1, act=act)

    def forward(self, x: Tensor) -> Tensor:
        return self.pconv(self.dconv(x))


def conv_block(depthwise: bool) -> type[nn.Module]:
    """The 3x3 conv type: ``DWConv`` when depthwise, else ``BaseConv`` (same call signature)."""
    return DWConv if depthwise else BaseConv


class Bottleneck(nn.Module):
    """1x1 then 3x3 conv with an optional residual (only when shapes allow it)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        shortcut: bool = True,
        expansion: float = 0.5,
        depthwise: bool = False,
        act: str = "silu",
    ) -> None:
        super().__init__()
        hidden = int(out_channels * expansion)
        self.conv1 = BaseConv(in_channels, hidden, 1, 1, act=act)
        self.conv2 = conv_block(depthwise)(hidden, out_channels, 3, 1, act=act)
        self.use_add = shortcut and in_channels == out_channels

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv2(self.conv1(x))
        return y + x if self.use_add else y


class CSPLayer(nn.Module):
    """CSP block: ``conv3(cat[m(conv1(x)), conv2(x)])`` (the bottleneck path first, as the reference)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        n: int = 1,
        shortcut: bool = True,
        expansion: float = 0.5,
        depthwise: bool = False,
        act: str = "silu",
    ) -> None:
        super().__init__()
        hidden = int(out_channels * expansion)
        self.conv1 = BaseConv(in_channels, hidden, 1, 1, act=act)
        self.conv2 = BaseConv(in_channels, hidden, 1, 1, act=act)
        self.conv3 = BaseConv(2 * hidden, out_channels, 1, 1, act=act)
        self.m = nn.Sequential(*[Bottleneck(hidden, hidden, shortcut, 1.0, depthwise, act=act) for _ in range(n)])

    def forward(self, x: Tensor) -> Tensor:
        return self.conv3(torch.cat([self.m(self.conv1(x)), self.conv2(x)], dim=1))


class SPPBottleneck(nn.Module):
    """Spatial pyramid pooling (parallel max-pools 5/9/13) between two 1x1 convs."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel_sizes: tuple[int, ...] = (5, 9, 13), act: str = "silu"
    ) -> None:
        super().__init__()
        hidden = in_channels // 2
        self.conv1 = BaseConv(in_channels, hidden, 1, 1, act=act)
        self.m = nn.ModuleList([nn.MaxPool2d(k, stride=1, padding=k // 2) for k in kernel_sizes])
        self.conv2 = BaseConv(hidden * (len(kernel_sizes) + 1), out_channels, 1, 1, act=act)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv1(x)
        return self.conv2(torch.cat([x] + [pool(x) for pool in self.m], dim=1))


def space_to_depth(x: Tensor) -> Tensor:
    """[B, C, H, W] -> [B, 4C, H/2, W/2] in the reference order: TL, BL, TR, BR (baked into stem weights)."""
    return torch.cat(
        [x[..., ::2, ::2], x[..., 1::2, ::2], x[..., ::2, 1::2], x[..., 1::2, 1::2]],
        dim=1,
    )


class Focus(nn.Module):
    """Space-to-depth then a conv: the CSPDarknet stem."""

    def __init__(self, in_channels: int, out_channels: int, ksize: int = 1, stride: int = 1, act: str = "silu"):
        super().__init__()
        self.conv = BaseConv(in_channels * 4, out_channels, ksize, stride, act=act)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(space_to_depth(x))
