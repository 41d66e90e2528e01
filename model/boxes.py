"""Box conversions and overlap measures in pure torch (no torchvision).

Conventions: ``xyxy`` = (x1, y1, x2, y2), ``cxcywh`` = (centre x, centre y, width, height), pixels, no +1.
Pairwise functions take ``[..., N, 4]`` and ``[..., M, 4]`` and return ``[..., N, M]``; ``*_aligned`` functions
compare row i with row i and return ``[..., N]``.
"""

from __future__ import annotations

import torch
from torch import Tensor


def cxcywh_to_xyxy(boxes: Tensor) -> Tensor:
    """(cx, cy, w, h) -> (x1, y1, x2, y2)."""
    xy, wh = boxes[..., :2], boxes[..., 2:4]
    return torch.cat([xy - wh / 2, xy + wh / 2], dim=-1)


def xyxy_to_cxcywh(boxes: Tensor) -> Tensor:
    """(x1, y1, x2, y2) -> (cx, cy, w, h)."""
    tl, br = boxes[..., :2], boxes[..., 2:4]
    return torch.cat([(tl + br) / 2, br - tl], dim=-1)


def box_area(boxes_xyxy: Tensor) -> Tensor:
    """Areas ``[...]`` of ``[..., 4]`` xyxy boxes (degenerate boxes give 0 or negative)."""
    return (boxes_xyxy[..., 2] - boxes_xyxy[..., 0]) * (boxes_xyxy[..., 3] - boxes_xyxy[..., 1])


def _pairwise_inter_union(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    tl = torch.maximum(a[..., :, None, :2], b[..., None, :, :2])
    br = torch.minimum(a[..., :, None, 2:4], b[..., None, :, 2:4])
    inter = (br - tl).clamp(min=0).prod(dim=-1)
    union = box_area(a)[..., :, None] + box_area(b)[..., None, :] - inter
    return inter, union


def box_iou(a_xyxy: Tensor, b_xyxy: Tensor) -> Tensor:
    """Pairwise IoU ``[..., N, M]`` (torchvision's ``box_iou`` semantics: inter / union, no epsilon)."""
    inter, union = _pairwise_inter_union(a_xyxy, b_xyxy)
    return inter / union


def generalized_box_iou(a_xyxy: Tensor, b_xyxy: Tensor) -> Tensor:
    """Pairwise GIoU ``[..., N, M]`` = IoU - (|C| - union) / |C|, C the smallest enclosing box."""
    inter, union = _pairwise_inter_union(a_xyxy, b_xyxy)
    iou = inter / union
    tl = torch.minimum(a_xyxy[..., :, None, :2], b_xyxy[..., None, :, :2])
    br = torch.maximum(a_xyxy[..., :, None, 2:4], b_xyxy[..., None, :, 2:4])
    enclosing = (br - tl).clamp(min=0).prod(dim=-1)
    return iou - (enclosing - union) / enclosing


def box_iou_aligned(a_xyxy: Tensor, b_xyxy: Tensor, eps: float = 1e-16) -> Tensor:
    """IoU of row i with row i, ``[..., N]``."""
    tl = torch.maximum(a_xyxy[..., :2], b_xyxy[..., :2])
    br = torch.minimum(a_xyxy[..., 2:4], b_xyxy[..., 2:4])
    inter = (br - tl).clamp(min=0).prod(dim=-1)
    return inter / (box_area(a_xyxy) + box_area(b_xyxy) - inter + eps)
