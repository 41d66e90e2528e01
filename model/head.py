"""Detection heads: the YOLOX decoupled head and YOLOX-PAI's TOOD-style head.

Both return one raw map per level, ``[B, 4 + 1 + C, H, W]`` = (tx, ty, tw, th, obj logit, cls logits); sigmoid,
decode and loss live elsewhere (``model.yolox``, ``model.loss``). Objectness comes from the regression branch, as
in the references. Module creation order mirrors Megvii's (it fixes the state_dict order).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from model.config import YoloxConfig
from model.layers import BaseConv, DWConv, batch_norm
from model.repvgg import RepVGGBlock


def head_conv(conv_type: str, channels: int, act: str) -> nn.Module:
    """One 3x3 head conv of the requested type (RepVGG is always ReLU, as the reference)."""
    if conv_type == "conv":
        return BaseConv(channels, channels, 3, 1, act=act)
    if conv_type == "dwconv":
        return DWConv(channels, channels, 3, 1, act=act)
    return RepVGGBlock(channels, channels)


class YOLOXHead(nn.Module):
    """Decoupled head: per level a 1x1 stem, two cls convs, two reg convs, cls/reg/obj predictions."""

    def __init__(self, cfg: YoloxConfig) -> None:
        super().__init__()
        self.num_classes = cfg.num_classes
        self.strides = tuple(cfg.strides)
        hidden = int(256 * cfg.width)
        self.cls_convs = nn.ModuleList()
        self.reg_convs = nn.ModuleList()
        self.cls_preds = nn.ModuleList()
        self.reg_preds = nn.ModuleList()
        self.obj_preds = nn.ModuleList()
        self.stems = nn.ModuleList()
        for in_ch in cfg.in_channels:
            self.stems.append(BaseConv(int(in_ch * cfg.width), hidden, 1, 1, act=cfg.act))
            self.cls_convs.append(nn.Sequential(*[head_conv(cfg.head_conv_type, hidden, cfg.act) for _ in range(2)]))
            self.reg_convs.append(nn.Sequential(*[head_conv(cfg.head_conv_type, hidden, cfg.act) for _ in range(2)]))
            self.cls_preds.append(nn.Conv2d(hidden, cfg.num_classes, 1))
            self.reg_preds.append(nn.Conv2d(hidden, 4, 1))
            self.obj_preds.append(nn.Conv2d(hidden, 1, 1))

    def initialize_biases(self, prior_prob: float) -> None:
        """Set cls/obj biases to ``-log((1 - p) / p)`` so initial scores start near ``p`` (Megvii)."""
        value = -math.log((1 - prior_prob) / prior_prob)
        for conv in list(self.cls_preds) + list(self.obj_preds):
            nn.init.constant_(conv.bias, value)

    def level_features(self, k: int, x: Tensor) -> tuple[Tensor, Tensor]:
        """(cls input, reg input) of level ``k`` after the stem."""
        x = self.stems[k](x)
        return x, x

    def forward(self, features: tuple[Tensor, Tensor, Tensor]) -> list[Tensor]:
        """Raw ``[B, 5 + C, H, W]`` per level, stride order."""
        outputs: list[Tensor] = []
        for k, x in enumerate(features):
            cls_x, reg_x = self.level_features(k, x)
            cls_feat = self.cls_convs[k](cls_x)
            reg_feat = self.reg_convs[k](reg_x)
            outputs.append(
                torch.cat([self.reg_preds[k](reg_feat), self.obj_preds[k](reg_feat), self.cls_preds[k](cls_feat)], 1)
            )
        return outputs


def _norm_layer(kind: str, channels: int, gn_groups: int) -> tuple[str, nn.Module]:
    """(attribute name, layer) as mmcv's ``build_norm_layer`` names them: ``gn`` or ``bn``."""
    if kind == "gn":
        if channels % gn_groups:
            raise ValueError(f"tood_gn_groups={gn_groups} does not divide the head's {channels} channels")
        return "gn", nn.GroupNorm(gn_groups, channels)
    return "bn", batch_norm(channels)


class ConvNormAct(nn.Module):
    """mmcv ``ConvModule`` (conv -> norm -> ReLU) with its attribute names (``conv``, ``gn``/``bn``, ``activate``).

    As mmcv: the conv has a bias only without a norm, and is initialised Kaiming-normal (fan_out, ReLU) with
    bias 0; the norm starts at weight 1, bias 0.
    """

    def __init__(self, in_channels: int, out_channels: int, ksize: int, norm: str = "gn", gn_groups: int = 32) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, ksize, 1, ksize // 2, bias=norm == "none")
        self.norm_name = None
        if norm != "none":
            self.norm_name, layer = _norm_layer(norm, out_channels, gn_groups)
            self.add_module(self.norm_name, layer)
        self.activate = nn.ReLU(inplace=True)
        nn.init.kaiming_normal_(self.conv.weight, mode="fan_out", nonlinearity="relu")
        if self.conv.bias is not None:
            nn.init.zeros_(self.conv.bias)

    def normalise(self, x: Tensor) -> Tensor:
        """The norm layer, or identity without one."""
        return x if self.norm_name is None else getattr(self, self.norm_name)(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.activate(self.normalise(self.conv(x)))


class TaskDecomposition(nn.Module):
    """TOOD task decomposition: a per-image layer attention scales a 1x1 reduction conv (a dynamic conv)."""

    def __init__(
        self, feat_channels: int, stacked_convs: int, la_down_rate: int, norm: str = "gn", gn_groups: int = 32
    ) -> None:
        super().__init__()
        self.feat_channels = feat_channels
        self.stacked_convs = stacked_convs
        self.in_channels = feat_channels * stacked_convs
        hidden = self.in_channels // la_down_rate
        self.layer_attention = nn.Sequential(
            nn.Conv2d(self.in_channels, hidden, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, stacked_convs, 1),
            nn.Sigmoid(),
        )
        self.reduction_conv = ConvNormAct(self.in_channels, feat_channels, 1, norm, gn_groups)

    def forward(self, feat: Tensor, avg_feat: Tensor) -> Tensor:
        b, _, h, w = feat.shape
        attn = self.layer_attention(avg_feat)  # [B, S, 1, 1]
        base = self.reduction_conv.conv.weight.reshape(1, self.feat_channels, self.stacked_convs, self.feat_channels)
        weight = (attn.reshape(b, 1, self.stacked_convs, 1) * base).reshape(b, self.feat_channels, self.in_channels)
        out = torch.bmm(weight, feat.reshape(b, self.in_channels, h * w)).reshape(b, self.feat_channels, h, w)
        # Only the conv's weight takes part (EasyCV): without a norm its bias exists but is never added.
        return self.reduction_conv.activate(self.reduction_conv.normalise(out))


class TOODHead(YOLOXHead):
    """YOLOX head with TOOD's shared stacked convs and per-task decomposition before the cls/reg convs.

    Initialisation is EasyCV's effective one (see ``YoloxConfig``): mmcv ``ConvModule`` init for the stacked and
    reduction convs, PyTorch defaults for the layer attention.
    """

    def __init__(self, cfg: YoloxConfig) -> None:
        super().__init__(cfg)
        hidden = int(256 * cfg.width)
        stacked = cfg.tood_stacked_convs
        norm = (cfg.tood_norm, cfg.tood_gn_groups)
        self.inter_convs = nn.ModuleList([ConvNormAct(hidden, hidden, 3, *norm) for _ in range(stacked)])
        la = stacked * cfg.tood_la_down_rate
        self.cls_decomps = nn.ModuleList([TaskDecomposition(hidden, stacked, la, *norm) for _ in cfg.in_channels])
        self.reg_decomps = nn.ModuleList([TaskDecomposition(hidden, stacked, la, *norm) for _ in cfg.in_channels])

    def level_features(self, k: int, x: Tensor) -> tuple[Tensor, Tensor]:
        x = self.stems[k](x)
        inter: list[Tensor] = []
        for conv in self.inter_convs:
            x = conv(x)
            inter.append(x)
        feat = torch.cat(inter, dim=1)
        avg = F.adaptive_avg_pool2d(feat, (1, 1))
        return self.cls_decomps[k](feat, avg), self.reg_decomps[k](feat, avg)


def build_head(cfg: YoloxConfig) -> YOLOXHead:
    """The head named by ``cfg.head``."""
    return TOODHead(cfg) if cfg.head == "tood" else YOLOXHead(cfg)
