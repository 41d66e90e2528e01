"""ASFF (adaptively spatial feature fusion) applied after the PAN, as in YOLOX-PAI.

Level 0 is the stride-32 output, level 2 the stride-8 one. ``asff`` uses learned resizers (strided / 1x1 convs),
``asff_sim`` parameter-free ones (space-to-depth + channel averaging). Both then weight the three resized maps by
a softmax over learned per-pixel weights and apply a 3x3 ``expand`` conv.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from model.layers import BaseConv, space_to_depth


def mean_channel(x: Tensor) -> Tensor:
    """Halve the channels by averaging even and odd channels."""
    return (x[:, ::2] + x[:, 1::2]) / 2


class ASFF(nn.Module):
    """Fuse the three PAN outputs into pyramid ``level`` (0: /32, 1: /16, 2: /8)."""

    def __init__(
        self,
        level: int,
        width: float,
        kind: str = "asff",
        asff_channel: int = 2,
        expand_kernel: int = 3,
        act: str = "silu",
    ) -> None:
        super().__init__()
        if level not in (0, 1, 2) or kind not in ("asff", "asff_sim"):
            raise ValueError(f"invalid ASFF level {level} / kind {kind!r}")
        self.level = level
        self.kind = kind
        dims = [int(1024 * width), int(512 * width), int(256 * width)]
        inter = dims[level]
        if kind == "asff":
            if level == 0:
                self.stride_level_1 = BaseConv(dims[1], inter, 3, 2, act=act)
                self.stride_level_2 = BaseConv(dims[2], inter, 3, 2, act=act)
            elif level == 1:
                self.compress_level_0 = BaseConv(dims[0], inter, 1, 1, act=act)
                self.stride_level_2 = BaseConv(dims[2], inter, 3, 2, act=act)
            else:
                self.compress_level_0 = BaseConv(dims[0], inter, 1, 1, act=act)
                self.compress_level_1 = BaseConv(dims[1], inter, 1, 1, act=act)
        self.expand = BaseConv(inter, inter, expand_kernel, 1, act=act)
        self.weight_level_0 = BaseConv(inter, asff_channel, 1, 1, act=act)
        self.weight_level_1 = BaseConv(inter, asff_channel, 1, 1, act=act)
        self.weight_level_2 = BaseConv(inter, asff_channel, 1, 1, act=act)
        self.weight_levels = BaseConv(asff_channel * 3, 3, 1, 1, act=act)

    def _resize_learned(self, x0: Tensor, x1: Tensor, x2: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        if self.level == 0:
            return x0, self.stride_level_1(x1), self.stride_level_2(F.max_pool2d(x2, 3, stride=2, padding=1))
        if self.level == 1:
            up0 = F.interpolate(self.compress_level_0(x0), scale_factor=2.0, mode="nearest")
            return up0, x1, self.stride_level_2(x2)
        up0 = F.interpolate(self.compress_level_0(x0), scale_factor=4.0, mode="nearest")
        up1 = F.interpolate(self.compress_level_1(x1), scale_factor=2.0, mode="nearest")
        return up0, up1, x2

    def _resize_simple(self, x0: Tensor, x1: Tensor, x2: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        if self.level == 0:
            r1 = mean_channel(space_to_depth(x1))
            r2 = F.max_pool2d(space_to_depth(x2), 3, stride=2, padding=1)
            return x0, r1, r2
        if self.level == 1:
            r0 = mean_channel(F.interpolate(x0, scale_factor=2.0, mode="nearest"))
            return r0, x1, mean_channel(space_to_depth(x2))
        r0 = mean_channel(mean_channel(F.interpolate(x0, scale_factor=4.0, mode="nearest")))
        r1 = mean_channel(F.interpolate(x1, scale_factor=2.0, mode="nearest"))
        return r0, r1, x2

    def forward(self, pan_outs: tuple[Tensor, Tensor, Tensor]) -> Tensor:
        """``pan_outs`` in stride order (/8, /16, /32)."""
        x2, x1, x0 = pan_outs
        if self.kind == "asff":
            r0, r1, r2 = self._resize_learned(x0, x1, x2)
        else:
            r0, r1, r2 = self._resize_simple(x0, x1, x2)
        logits = self.weight_levels(
            torch.cat([self.weight_level_0(r0), self.weight_level_1(r1), self.weight_level_2(r2)], dim=1)
        )
        w = logits.softmax(dim=1)  # [B, 3, H, W]
        return self.expand(r0 * w[:, 0:1] + r1 * w[:, 1:2] + r2 * w[:, 2:3])
