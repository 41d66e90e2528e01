"""RepVGG blocks and EasyCV's ``RepVGGYOLOX`` backbone (YOLOX-PAI).

Training form: three branches (``rbr_dense`` 3x3+BN, ``rbr_1x1`` 1x1+BN, ``rbr_identity`` BN) summed, then ReLU.
Deploy form (:meth:`RepVGGBlock.fuse`): one 3x3 conv with bias, ``rbr_reparam``. Load un-fused checkpoints first,
fuse after (EasyCV's predictor fuses first and silently drops the backbone weights; we do not).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from model.layers import BaseConv, batch_norm


def _conv_bn(in_channels: int, out_channels: int, ksize: int, stride: int, padding: int, groups: int):
    branch = nn.Sequential()
    branch.add_module("conv", nn.Conv2d(in_channels, out_channels, ksize, stride, padding, groups=groups, bias=False))
    branch.add_module("bn", batch_norm(out_channels))
    return branch


def fold_bn(kernel: Tensor, bn: nn.BatchNorm2d) -> tuple[Tensor, Tensor]:
    """Fold an eval-mode BatchNorm into a bias-free conv kernel: returns ``(kernel', bias')``."""
    std = (bn.running_var + bn.eps).sqrt()
    scale = bn.weight / std
    return kernel * scale.reshape(-1, 1, 1, 1), bn.bias - bn.running_mean * scale


class RepVGGBlock(nn.Module):
    """RepVGG block (3x3 only, padding 1). The activation is always ReLU, as in the reference."""

    def __init__(self, in_channels: int, out_channels: int, ksize: int = 3, stride: int = 1, groups: int = 1):
        super().__init__()
        if ksize != 3:
            raise ValueError("RepVGGBlock supports ksize=3 only")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.stride = stride
        self.groups = groups
        self.deploy = False
        self.nonlinearity = nn.ReLU()
        self.se = nn.Identity()
        self.rbr_identity = batch_norm(in_channels) if in_channels == out_channels and stride == 1 else None
        self.rbr_dense = _conv_bn(in_channels, out_channels, 3, stride, 1, groups)
        self.rbr_1x1 = _conv_bn(in_channels, out_channels, 1, stride, 0, groups)

    def forward(self, x: Tensor) -> Tensor:
        if self.deploy:
            return self.nonlinearity(self.se(self.rbr_reparam(x)))
        out = self.rbr_dense(x) + self.rbr_1x1(x)
        if self.rbr_identity is not None:
            out = out + self.rbr_identity(x)
        return self.nonlinearity(self.se(out))

    def equivalent_kernel_bias(self) -> tuple[Tensor, Tensor]:
        """The single 3x3 kernel and bias equal to the three branches (eval-mode BN statistics)."""
        k3, b3 = fold_bn(self.rbr_dense.conv.weight, self.rbr_dense.bn)
        k1, b1 = fold_bn(self.rbr_1x1.conv.weight, self.rbr_1x1.bn)
        kernel, bias = k3 + F.pad(k1, [1, 1, 1, 1]), b3 + b1
        if self.rbr_identity is not None:
            per_group = self.in_channels // self.groups
            eye = torch.zeros_like(k3)
            idx = torch.arange(self.in_channels, device=eye.device)
            eye[idx, idx % per_group, 1, 1] = 1.0
            ki, bi = fold_bn(eye, self.rbr_identity)
            kernel, bias = kernel + ki, bias + bi
        return kernel, bias

    @torch.no_grad()
    def fuse(self) -> None:
        """Switch to the deploy form: replace the branches by ``rbr_reparam``."""
        if self.deploy:
            return
        kernel, bias = self.equivalent_kernel_bias()
        conv = nn.Conv2d(self.in_channels, self.out_channels, 3, self.stride, 1, groups=self.groups, bias=True)
        conv.weight.copy_(kernel)
        conv.bias.copy_(bias)
        self.rbr_reparam = conv.to(kernel.device)
        del self.rbr_dense, self.rbr_1x1
        self.rbr_identity = None
        self.deploy = True


class MTSPPF(nn.Module):
    """EasyCV's simplified SPPF: one 5x5 max-pool applied three times in sequence, ReLU convs."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 5) -> None:
        super().__init__()
        hidden = in_channels // 2
        self.cv1 = BaseConv(in_channels, hidden, 1, 1, act="relu")
        self.cv2 = BaseConv(hidden * 4, out_channels, 1, 1, act="relu")
        self.maxpool = nn.MaxPool2d(kernel_size, stride=1, padding=kernel_size // 2)

    def forward(self, x: Tensor) -> Tensor:
        x = self.cv1(x)
        y1 = self.maxpool(x)
        y2 = self.maxpool(y1)
        return self.cv2(torch.cat([x, y1, y2, self.maxpool(y2)], dim=1))


def repvgg_layout(depth: float, width: float) -> tuple[list[int], list[int]]:
    """(channels per stage 0..4, repeats per stage 0..4) per the reference formula."""
    base_repeats = [1, 6, 12, 18, 6]
    base_channels = [64, 128, 256, 512, 1024]
    repeats = [max(round(r * depth), 1) if r > 1 else r for r in base_repeats]
    channels = [int(math.ceil(c * width / 8) * 8) for c in base_channels]
    return channels, repeats


class RepVGGBackbone(nn.Module):
    """``RepVGGYOLOX``: stage0 (stride 2) + four stages of RepVGG blocks; returns strides 8/16/32."""

    def __init__(self, depth: float, width: float, in_channels: int = 3) -> None:
        super().__init__()
        channels, repeats = repvgg_layout(depth, width)
        self.stage0 = RepVGGBlock(in_channels, channels[0], stride=2)
        self.stage1 = self._stage(channels[0], channels[1], repeats[1])
        self.stage2 = self._stage(channels[1], channels[2], repeats[2])
        self.stage3 = self._stage(channels[2], channels[3], repeats[3])
        self.stage4 = self._stage(channels[3], channels[4], repeats[4], add_sppf=True)
        self.out_channels = (channels[2], channels[3], channels[4])

    @staticmethod
    def _stage(in_channels: int, out_channels: int, repeat: int, add_sppf: bool = False) -> nn.Sequential:
        blocks: list[nn.Module] = [RepVGGBlock(in_channels, out_channels, stride=2)]
        blocks += [RepVGGBlock(out_channels, out_channels) for _ in range(repeat)]
        if add_sppf:
            blocks.append(MTSPPF(out_channels, out_channels, kernel_size=5))
        return nn.Sequential(*blocks)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        c2 = self.stage2(self.stage1(self.stage0(x)))
        c3 = self.stage3(c2)
        c4 = self.stage4(c3)
        return c2, c3, c4
