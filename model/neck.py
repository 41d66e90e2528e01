"""``PAFPN``: backbone + path-aggregation neck (+ optional ASFF), Megvii's ``YOLOPAFPN`` extended as in YOLOX-PAI.

The backbone lives in the attribute ``backbone`` so official keys read ``backbone.backbone.*`` (backbone) and
``backbone.*`` (neck) once the whole PAFPN is stored as ``YOLOX.backbone``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from model.asff import ASFF
from model.config import YoloxConfig
from model.darknet import CSPDarknet
from model.gsconv import GSConv, VoVGSCSP
from model.layers import BaseConv, CSPLayer, conv_block
from model.repvgg import RepVGGBackbone


def build_backbone(cfg: YoloxConfig) -> nn.Module:
    """CSPDarknet or RepVGG per ``cfg.backbone``."""
    if cfg.backbone == "repvgg":
        return RepVGGBackbone(cfg.depth, cfg.width)
    return CSPDarknet(cfg.depth, cfg.width, depthwise=cfg.depthwise, act=cfg.act)


class PAFPN(nn.Module):
    """Backbone -> top-down FPN -> bottom-up PAN -> (ASFF) -> features at strides 8, 16, 32."""

    def __init__(self, cfg: YoloxConfig) -> None:
        super().__init__()
        self.backbone = build_backbone(cfg)
        w, act, dw = cfg.width, cfg.act, cfg.depthwise
        c0, c1, c2 = (int(c * w) for c in cfg.in_channels)  # 256w, 512w, 1024w
        n = round(3 * cfg.depth)
        Conv = conv_block(dw)
        self.gsconv = cfg.neck == "gsconv"
        self.vov = self.gsconv and cfg.neck_mode == "all"
        self.upsample = nn.Upsample(scale_factor=2, mode="nearest")
        if self.gsconv:
            self.gsconv1 = GSConv(c2, c1, 1, 1)
            self.gsconv2 = GSConv(c1, c0, 1, 1)
            self.gsconv4 = GSConv(c0, c0, 3, 2)
            self.gsconv5 = GSConv(c1, c1, 3, 2)
            if self.vov:
                self.vovGSCSP1 = VoVGSCSP(2 * c1, c1, n)
                self.gsconv3 = GSConv(2 * c0, 2 * c0, 1, 1)
                self.vovGSCSP2 = VoVGSCSP(2 * c0, c0, n)
                self.vovGSCSP3 = VoVGSCSP(2 * c0, c1, n)
                self.vovGSCSP4 = VoVGSCSP(2 * c1, c2, n)
            else:
                self._csp_layers(c0, c1, c2, n, dw, act)
        else:
            # Registration order = Megvii's state_dict order.
            self.lateral_conv0 = BaseConv(c2, c1, 1, 1, act=act)
            self.C3_p4 = CSPLayer(2 * c1, c1, n, False, depthwise=dw, act=act)
            self.reduce_conv1 = BaseConv(c1, c0, 1, 1, act=act)
            self.C3_p3 = CSPLayer(2 * c0, c0, n, False, depthwise=dw, act=act)
            self.bu_conv2 = Conv(c0, c0, 3, 2, act=act)
            self.C3_n3 = CSPLayer(2 * c0, c1, n, False, depthwise=dw, act=act)
            self.bu_conv1 = Conv(c1, c1, 3, 2, act=act)
            self.C3_n4 = CSPLayer(2 * c1, c2, n, False, depthwise=dw, act=act)
        self.fusion = cfg.fusion
        if cfg.fusion != "none":
            kw = dict(width=w, kind=cfg.fusion, asff_channel=cfg.asff_channel, act=act)
            self.asff_1 = ASFF(level=0, **kw)
            self.asff_2 = ASFF(level=1, **kw)
            self.asff_3 = ASFF(level=2, **kw)

    def _csp_layers(self, c0: int, c1: int, c2: int, n: int, dw: bool, act: str) -> None:
        self.C3_p4 = CSPLayer(2 * c1, c1, n, False, depthwise=dw, act=act)
        self.C3_p3 = CSPLayer(2 * c0, c0, n, False, depthwise=dw, act=act)
        self.C3_n3 = CSPLayer(2 * c0, c1, n, False, depthwise=dw, act=act)
        self.C3_n4 = CSPLayer(2 * c1, c2, n, False, depthwise=dw, act=act)

    def _lateral(self, x: Tensor) -> Tensor:
        return self.gsconv1(x) if self.gsconv else self.lateral_conv0(x)

    def _reduce(self, x: Tensor) -> Tensor:
        return self.gsconv2(x) if self.gsconv else self.reduce_conv1(x)

    def _down8(self, x: Tensor) -> Tensor:
        return self.gsconv4(x) if self.gsconv else self.bu_conv2(x)

    def _down16(self, x: Tensor) -> Tensor:
        return self.gsconv5(x) if self.gsconv else self.bu_conv1(x)

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        x2, x1, x0 = self.backbone(images)  # strides 8, 16, 32
        fpn_out0 = self._lateral(x0)  # /32
        f_out0 = torch.cat([self.upsample(fpn_out0), x1], dim=1)  # /16
        f_out0 = self.vovGSCSP1(f_out0) if self.vov else self.C3_p4(f_out0)
        fpn_out1 = self._reduce(f_out0)  # /16
        f_out1 = torch.cat([self.upsample(fpn_out1), x2], dim=1)  # /8
        pan_out2 = self.vovGSCSP2(self.gsconv3(f_out1)) if self.vov else self.C3_p3(f_out1)
        p_out1 = torch.cat([self._down8(pan_out2), fpn_out1], dim=1)  # /16
        pan_out1 = self.vovGSCSP3(p_out1) if self.vov else self.C3_n3(p_out1)
        p_out0 = torch.cat([self._down16(pan_out1), fpn_out0], dim=1)  # /32
        pan_out0 = self.vovGSCSP4(p_out0) if self.vov else self.C3_n4(p_out0)
        outputs = (pan_out2, pan_out1, pan_out0)
        if self.fusion != "none":
            outputs = (self.asff_3(outputs), self.asff_2(outputs), self.asff_1(outputs))
        return outputs
