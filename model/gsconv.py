"""GSConv blocks for the YOLOX-PAI ``gsconv`` neck (EasyCV ``yolo_pafpn.py``).

Checkpoint quirk kept on purpose (reference bug #4): EasyCV passes the activation name positionally into
``BaseConv``'s ``bias`` slot, so every GSConv conv has ``bias=True`` and the activation is always SiLU. ``VoVGSCSP``
is built without an activation argument there, so it is SiLU too whatever the model's ``act``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from model.layers import BaseConv


class GSConv(nn.Module):
    """``cv1`` (k x k) to half the channels, a depthwise 5x5 ``cv2`` on that, concat, then channel shuffle."""

    def __init__(self, in_channels: int, out_channels: int, ksize: int = 1, stride: int = 1) -> None:
        super().__init__()
        half = out_channels // 2
        self.cv1 = BaseConv(in_channels, half, ksize, stride, bias=True, act="silu")
        self.cv2 = BaseConv(half, half, 5, 1, groups=half, bias=True, act="silu")

    def forward(self, x: Tensor) -> Tensor:
        x1 = self.cv1(x)
        x2 = torch.cat([x1, self.cv2(x1)], dim=1)
        b, n, h, w = x2.shape
        # Shuffle: interleave the two halves' channel groups, as the reference's reshape/permute does.
        y = x2.reshape(b * n // 2, 2, h * w).permute(1, 0, 2).reshape(2, -1, n // 2, h, w)
        return torch.cat([y[0], y[1]], dim=1)


class GSBottleneck(nn.Module):
    """Two 1x1 GSConvs (``conv_lighting``)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        hidden = out_channels // 2
        self.conv_lighting = nn.Sequential(GSConv(in_channels, hidden, 1, 1), GSConv(hidden, out_channels, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.conv_lighting(x)


class VoVGSCSP(nn.Module):
    """``cv2(cat[m(cv1(x)), cv1(x)])`` with GS bottlenecks; replaces the PAFPN CSP layers in mode ``all``.

    Always SiLU (EasyCV's ``VoVGSCSP(c1, c2, n)`` has no activation argument).
    """

    def __init__(self, in_channels: int, out_channels: int, n: int = 1) -> None:
        super().__init__()
        hidden = int(out_channels * 0.5)
        self.cv1 = BaseConv(in_channels, hidden, 1, 1, act="silu")
        self.cv2 = BaseConv(2 * hidden, out_channels, 1, 1, act="silu")
        self.m = nn.Sequential(*[GSBottleneck(hidden, hidden) for _ in range(n)])

    def forward(self, x: Tensor) -> Tensor:
        x1 = self.cv1(x)
        return self.cv2(torch.cat([self.m(x1), x1], dim=1))
