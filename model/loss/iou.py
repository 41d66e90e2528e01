"""IoU on (cx, cy, w, h) boxes and the box-regression losses: ``iou``, ``giou``, ``giou-easycv``, ``siou``.

Formulas follow the references (``yolox.md`` §4.2, ``yolox_pai.md`` §3.2): the intersection is counted only when
both sides overlap, the IoU denominator gets ``1e-16``. Two GIoUs: ``giou`` is the textbook one (Megvii's
``IOUloss(loss_type="giou")``, penalty ``(C - union) / C``); ``giou-easycv`` is what every released YOLOX-PAI
config trains with (EasyCV ``IOUloss``), penalty ``(C - intersection) / C`` — so any disjoint pair costs exactly 2
and, the intersection being 0 there, gets no gradient. Both clamp GIoU to [-1, 1] and ``C`` to >= 1e-16; gradients
are autograd's of these formulas. SIoU adds ``SIOU_EPS`` to the squared centre distance because the reference
divides by it unguarded (NaN for coincident centres, exactly the boxes SimOTA likes).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

SIOU_EPS = 1e-7  # px^2 added to the squared centre distance and enclosing sizes


def _corners(boxes_cxcywh: Tensor) -> tuple[Tensor, Tensor]:
    """(top-left, bottom-right), each ``[..., 2]``."""
    half = boxes_cxcywh[..., 2:4] / 2
    return boxes_cxcywh[..., 0:2] - half, boxes_cxcywh[..., 0:2] + half


def pairwise_iou_cxcywh(a_cxcywh: Tensor, b_cxcywh: Tensor) -> Tensor:
    """IoU matrix ``[len(a), len(b)]`` without an epsilon (the SimOTA cost input, as Megvii ``bboxes_iou``)."""
    a_tl, a_br = _corners(a_cxcywh[:, None, :])  # [A, 1, 2]
    b_tl, b_br = _corners(b_cxcywh[None, :, :])  # [1, B, 2]
    tl = torch.maximum(a_tl, b_tl)
    br = torch.minimum(a_br, b_br)
    overlaps = (tl < br).to(tl.dtype).prod(dim=2)
    inter = (br - tl).prod(dim=2) * overlaps
    area_a = a_cxcywh[:, 2:4].prod(dim=1)[:, None]
    area_b = b_cxcywh[:, 2:4].prod(dim=1)[None, :]
    return inter / (area_a + area_b - inter)


class _IouParts(NamedTuple):
    iou: Tensor  # [N]
    inter: Tensor  # [N]
    union: Tensor  # [N]
    enclosing_area: Tensor  # [N], the smallest box holding both


def _iou_parts(pred: Tensor, target: Tensor) -> _IouParts:
    """Row-wise IoU terms for ``[N, 4]`` cxcywh pairs."""
    p_tl, p_br = _corners(pred)
    t_tl, t_br = _corners(target)
    tl = torch.maximum(p_tl, t_tl)
    br = torch.minimum(p_br, t_br)
    overlaps = (tl < br).to(tl.dtype).prod(dim=1)
    inter = (br - tl).prod(dim=1) * overlaps
    union = pred[:, 2:4].prod(dim=1) + target[:, 2:4].prod(dim=1) - inter
    iou = inter / (union + 1e-16)
    enclosing_area = (torch.maximum(p_br, t_br) - torch.minimum(p_tl, t_tl)).prod(dim=1)
    return _IouParts(iou, inter, union, enclosing_area)


def iou_loss(pred_cxcywh: Tensor, target_cxcywh: Tensor) -> Tensor:
    """Megvii's ``iou`` loss per row: ``1 - IoU^2``."""
    return 1 - _iou_parts(pred_cxcywh, target_cxcywh).iou ** 2


def _one_minus_clamped(iou: Tensor, penalty_numerator: Tensor, enclosing_area: Tensor) -> Tensor:
    giou = iou - penalty_numerator / enclosing_area.clamp(min=1e-16)
    return 1 - giou.clamp(min=-1.0, max=1.0)


def giou_loss(pred_cxcywh: Tensor, target_cxcywh: Tensor) -> Tensor:
    """Textbook GIoU per row: ``1 - clamp(IoU - (C - union) / C, -1, 1)`` (Megvii's ``giou``)."""
    parts = _iou_parts(pred_cxcywh, target_cxcywh)
    return _one_minus_clamped(parts.iou, parts.enclosing_area - parts.union, parts.enclosing_area)


def giou_easycv_loss(pred_cxcywh: Tensor, target_cxcywh: Tensor) -> Tensor:
    """EasyCV's GIoU per row: ``1 - clamp(IoU - (C - intersection) / C, -1, 1)`` (every YOLOX-PAI config)."""
    parts = _iou_parts(pred_cxcywh, target_cxcywh)
    return _one_minus_clamped(parts.iou, parts.enclosing_area - parts.inter, parts.enclosing_area)


def siou_loss(pred_cxcywh: Tensor, target_cxcywh: Tensor, eps: float = SIOU_EPS) -> Tensor:
    """SIoU per row: ``1 - IoU + (distance + shape) / 2`` with EasyCV's angle/distance/shape costs, ε-guarded."""
    iou = _iou_parts(pred_cxcywh, target_cxcywh).iou
    dx = target_cxcywh[:, 0] - pred_cxcywh[:, 0]
    dy = target_cxcywh[:, 1] - pred_cxcywh[:, 1]
    # sin(2 alpha) = 2 |dx| |dy| / sigma^2; written without the sqrt so the gradient is finite at sigma = 0.
    angle = 2 * dx.abs() * dy.abs() / (dx**2 + dy**2 + eps)
    gamma = 2 - angle
    span_w = dx.abs() + (pred_cxcywh[:, 2] + target_cxcywh[:, 2]) / 2
    span_h = dy.abs() + (pred_cxcywh[:, 3] + target_cxcywh[:, 3]) / 2
    rho_x = (dx / (span_w + eps)) ** 2
    rho_y = (dy / (span_h + eps)) ** 2
    distance = 2 - torch.exp(-gamma * rho_x) - torch.exp(-gamma * rho_y)
    w_p, h_p, w_t, h_t = pred_cxcywh[:, 2], pred_cxcywh[:, 3], target_cxcywh[:, 2], target_cxcywh[:, 3]
    omega_w = (w_p - w_t).abs() / torch.maximum(w_p, w_t).clamp(min=eps)
    omega_h = (h_p - h_t).abs() / torch.maximum(h_p, h_t).clamp(min=eps)
    shape = (1 - torch.exp(-omega_w)) ** 4 + (1 - torch.exp(-omega_h)) ** 4
    return 1 - iou + (distance + shape) / 2


IOU_LOSSES = {"iou": iou_loss, "giou": giou_loss, "giou-easycv": giou_easycv_loss, "siou": siou_loss}


def box_regression_loss(kind: str, pred_cxcywh: Tensor, target_cxcywh: Tensor) -> Tensor:
    """Per-row loss ``[N]`` of type ``kind`` (a key of ``IOU_LOSSES``) on ``[N, 4]`` cxcywh boxes."""
    if kind not in IOU_LOSSES:
        raise ValueError(f"iou loss must be one of {sorted(IOU_LOSSES)}, got {kind!r}")
    if pred_cxcywh.shape != target_cxcywh.shape or pred_cxcywh.shape[-1] != 4:
        raise ValueError(f"expected two [N, 4] cxcywh tensors, got {tuple(pred_cxcywh.shape)} and "
                         f"{tuple(target_cxcywh.shape)}")  # fmt: skip
    return IOU_LOSSES[kind](pred_cxcywh.reshape(-1, 4), target_cxcywh.reshape(-1, 4))
