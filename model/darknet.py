"""Megvii's CSPDarknet backbone (Focus stem, dark2..dark5); returns strides 8/16/32."""

from __future__ import annotations

from torch import Tensor, nn

from model.layers import CSPLayer, Focus, SPPBottleneck, conv_block


class CSPDarknet(nn.Module):
    """CSPDarknet with depth/width multipliers; ``depthwise`` switches the stride-2 and bottleneck 3x3 convs."""

    def __init__(self, depth: float, width: float, depthwise: bool = False, act: str = "silu") -> None:
        super().__init__()
        Conv = conv_block(depthwise)
        bc = int(width * 64)
        bd = max(round(depth * 3), 1)
        self.stem = Focus(3, bc, ksize=3, act=act)
        self.dark2 = nn.Sequential(
            Conv(bc, bc * 2, 3, 2, act=act),
            CSPLayer(bc * 2, bc * 2, n=bd, depthwise=depthwise, act=act),
        )
        self.dark3 = nn.Sequential(
            Conv(bc * 2, bc * 4, 3, 2, act=act),
            CSPLayer(bc * 4, bc * 4, n=bd * 3, depthwise=depthwise, act=act),
        )
        self.dark4 = nn.Sequential(
            Conv(bc * 4, bc * 8, 3, 2, act=act),
            CSPLayer(bc * 8, bc * 8, n=bd * 3, depthwise=depthwise, act=act),
        )
        self.dark5 = nn.Sequential(
            Conv(bc * 8, bc * 16, 3, 2, act=act),
            SPPBottleneck(bc * 16, bc * 16, act=act),
            CSPLayer(bc * 16, bc * 16, n=bd, shortcut=False, depthwise=depthwise, act=act),
        )
        self.out_channels = (bc * 4, bc * 8, bc * 16)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        x = self.dark2(self.stem(x))
        c3 = self.dark3(x)
        c4 = self.dark4(c3)
        c5 = self.dark5(c4)
        return c3, c4, c5
