"""``YOLOX``: backbone+neck (``PAFPN``) and head, plus decoding; ``build_model`` is the public constructor.

Forward contract (``forward(images, decode=True)``), images ``[B, 3, H, W]`` with H, W multiples of 32:
- eval, ``decode=True``: ``[B, N, 5 + C]`` = (cx, cy, w, h, obj, cls...) in input pixels, scores sigmoided —
  Megvii's ``decode_in_inference=True`` output;
- eval, ``decode=False``: the raw head output (tx, ty, tw, th, sigmoid(obj), sigmoid(cls)...), Megvii's export form;
- training: ``[B, N, 5 + C]`` logits (tx, ty, tw, th, obj logit, cls logits), what ``model.loss`` consumes.
N = sum over strides 8/16/32 of (H/s)(W/s), anchors in level order then row-major (k = y * W + x).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from model.config import YoloxConfig, get_config
from model.head import build_head
from model.neck import PAFPN


def make_grids(
    input_hw: tuple[int, int], strides: tuple[int, ...], device: torch.device, dtype: torch.dtype
) -> tuple[Tensor, Tensor]:
    """Anchor grid ``[N, 2]`` (x, y cell indices) and per-anchor stride ``[N, 1]`` for an input size."""
    grids, stride_cols = [], []
    for s in strides:
        h, w = input_hw[0] // s, input_hw[1] // s
        ys, xs = torch.meshgrid(
            torch.arange(h, device=device, dtype=dtype), torch.arange(w, device=device, dtype=dtype), indexing="ij"
        )
        grids.append(torch.stack([xs, ys], dim=-1).reshape(-1, 2))
        stride_cols.append(torch.full((h * w, 1), float(s), device=device, dtype=dtype))
    return torch.cat(grids, dim=0), torch.cat(stride_cols, dim=0)


def decode_outputs(raw: Tensor, grid: Tensor, stride: Tensor) -> Tensor:
    """(tx, ty, tw, th, ...) -> (cx, cy, w, h, ...): ``xy = (t + g) * s``, ``wh = exp(t) * s`` (no +0.5)."""
    xy = (raw[..., 0:2] + grid) * stride
    wh = torch.exp(raw[..., 2:4]) * stride
    return torch.cat([xy, wh, raw[..., 4:]], dim=-1)


class YOLOX(nn.Module):
    """The detector: ``backbone`` (PAFPN holding the real backbone) and ``head``."""

    def __init__(self, cfg: YoloxConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.backbone = PAFPN(cfg)
        self.head = build_head(cfg)
        if cfg.prior_prob is not None:  # None: PyTorch's default biases (EasyCV, see YoloxConfig)
            self.head.initialize_biases(cfg.prior_prob)

    @property
    def num_classes(self) -> int:
        """Number of classes C."""
        return self.cfg.num_classes

    def forward(self, images: Tensor, decode: bool = True) -> Tensor:
        levels = self.head(self.backbone(images))
        out = torch.cat([lvl.flatten(start_dim=2) for lvl in levels], dim=2).permute(0, 2, 1)  # [B, N, 5+C]
        if self.training:
            return out
        out = torch.cat([out[..., :4], out[..., 4:].sigmoid()], dim=-1)
        if not decode:
            return out
        grid, stride = make_grids(
            (int(images.shape[2]), int(images.shape[3])), self.head.strides, out.device, out.dtype
        )
        return decode_outputs(out, grid, stride)


def build_model(name: str, num_classes: int = 80, **overrides) -> YOLOX:
    """Build preset ``name`` (see ``model.config.VARIANTS``) with ``num_classes`` and any config overrides."""
    return YOLOX(get_config(name, num_classes=num_classes, **overrides))


def build_from_config(cfg: YoloxConfig) -> YOLOX:
    """Build a model from a full config (e.g. the one stored in a checkpoint)."""
    return YOLOX(cfg)
