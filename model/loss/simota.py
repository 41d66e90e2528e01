"""SimOTA label assignment for one image (``yolox.md`` §4.1).

Two variants: ``SIMOTA_V030`` (YOLOX <= 0.3.0, which trained the released weights: radius 2.5, candidates in a GT
box OR its centre square, 1e5 penalty outside box AND centre) and ``SIMOTA_CENTER`` (YOLOX ``main`` since PR #1589:
radius 1.5, centre square only, 1e6 penalty). Everything here runs without gradients and in float32.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, NamedTuple

import torch
from torch import Tensor

from model.loss.iou import pairwise_iou_cxcywh


@dataclass(frozen=True)
class SimOTAConfig:
    """Candidate region and cost of one SimOTA variant."""

    name: str
    center_radius_strides: float
    region: Literal["box_or_center", "center"]
    outside_penalty: float
    iou_cost_weight: float = 3.0
    dynamic_k_topk: int = 10


SIMOTA_V030 = SimOTAConfig("simota-0.3.0", 2.5, "box_or_center", 1e5)
SIMOTA_CENTER = SimOTAConfig("simota-center", 1.5, "center", 1e6)
ASSIGNERS = {c.name: c for c in (SIMOTA_V030, SIMOTA_CENTER)}


class Assignment(NamedTuple):
    """Result for one image with N anchors, G ground truths and F positives."""

    fg_mask: Tensor  # bool [N]
    matched_gt: Tensor  # int64 [F], GT index of each positive in anchor order
    matched_iou: Tensor  # float32 [F], IoU(pred box, its GT): the soft cls target
    candidate_mask: Tensor  # bool [N], anchors that entered the cost matrix
    dynamic_k: Tensor  # int64 [G]


def candidate_masks(
    anchor_centers_xy: Tensor, anchor_strides: Tensor, gt_cxcywh: Tensor, cfg: SimOTAConfig
) -> tuple[Tensor, Tensor]:
    """(candidates ``[N]``, per-GT geometry mask ``[G, N]``) where the cost carries no penalty.

    Anchor centres are cell centres ``(g + 0.5) * s``; both tests are strict, as the reference.
    """
    x = anchor_centers_xy[None, :, 0]  # [1, N]
    y = anchor_centers_xy[None, :, 1]
    gx, gy = gt_cxcywh[:, 0:1], gt_cxcywh[:, 1:2]  # [G, 1]
    radius = cfg.center_radius_strides * anchor_strides[None, :]  # [1, N]
    # Written as the reference's four deltas so boundary anchors round the same way.
    in_center = torch.stack([x - (gx - radius), y - (gy - radius), (gx + radius) - x, (gy + radius) - y], 2)
    in_center = in_center.min(dim=2).values > 0.0  # [G, N]
    if cfg.region == "center":
        return in_center.any(dim=0), in_center
    half_w, half_h = gt_cxcywh[:, 2:3] / 2, gt_cxcywh[:, 3:4] / 2
    in_box = torch.stack([x - (gx - half_w), y - (gy - half_h), (gx + half_w) - x, (gy + half_h) - y], 2)
    in_box = in_box.min(dim=2).values > 0.0
    return in_box.any(dim=0) | in_center.any(dim=0), in_box & in_center


def _bce_cost(cls_logits: Tensor, obj_logits: Tensor, gt_classes: Tensor) -> Tensor:
    """``sum_c BCE(sqrt(sigmoid(cls) * sigmoid(obj)), onehot(gt))`` as ``[G, n]`` without a [G, n, C] tensor."""
    p = (cls_logits.sigmoid() * obj_logits.sigmoid()[:, None]).sqrt()  # [n, C]
    # F.binary_cross_entropy clamps each log at -100; keep that so saturated scores cost the same.
    neg = -torch.log1p(-p).clamp(min=-100.0)
    pos = -torch.log(p).clamp(min=-100.0)
    neg_sum = neg.sum(dim=1)  # [n]
    return neg_sum[None, :] + (pos - neg)[:, gt_classes].T  # [G, n]


def dynamic_k_matching(cost: Tensor, ious: Tensor, topk: int) -> tuple[Tensor, Tensor]:
    """Match each GT to its ``k_g`` cheapest candidates; ties between GTs go to the cheapest GT.

    Args:
        cost, ious: ``[G, n]`` over the candidates.
    Returns:
        (matched GT index ``[n]`` with -1 for background, dynamic k ``[G]``).
    """
    num_gt, n = cost.shape
    top_ious = torch.topk(ious, min(topk, n), dim=1).values
    dynamic_k = top_ious.sum(dim=1).int().clamp(min=1).long()  # int() truncates, as the reference
    k_max = int(dynamic_k.max())
    order = torch.topk(cost, k_max, dim=1, largest=False).indices  # [G, k_max]
    take = torch.arange(k_max, device=cost.device)[None, :] < dynamic_k[:, None]
    matching = torch.zeros_like(cost, dtype=torch.bool)
    matching.scatter_(1, order, take)
    shared = matching.sum(dim=0) > 1
    if bool(shared.any()):
        # The argmin runs over every GT, not only those that picked the anchor (reference semantics).
        best_gt = cost[:, shared].argmin(dim=0)
        matching[:, shared] = False
        matching[best_gt, shared.nonzero()[:, 0]] = True
    matched = torch.where(matching.any(dim=0), matching.to(torch.uint8).argmax(dim=0), -1)
    return matched, dynamic_k


@torch.no_grad()
def simota_assign(
    pred_cxcywh: Tensor,
    obj_logits: Tensor,
    cls_logits: Tensor,
    anchor_centers_xy: Tensor,
    anchor_strides: Tensor,
    gt_cxcywh: Tensor,
    gt_classes: Tensor,
    cfg: SimOTAConfig = SIMOTA_V030,
) -> Assignment:
    """Assign the N anchors of one image to its G ground truths (G >= 1).

    Args:
        pred_cxcywh: decoded boxes ``[N, 4]`` in input pixels; ``obj_logits`` ``[N]``; ``cls_logits`` ``[N, C]``.
        anchor_centers_xy: ``[N, 2]`` cell centres in pixels; ``anchor_strides``: ``[N]``.
        gt_cxcywh: ``[G, 4]`` in input pixels; ``gt_classes``: int64 ``[G]``.
    """
    pred_cxcywh, gt_cxcywh = pred_cxcywh.float(), gt_cxcywh.float()
    candidates, geometry = candidate_masks(anchor_centers_xy.float(), anchor_strides.float(), gt_cxcywh, cfg)
    n_anchors, device = pred_cxcywh.shape[0], pred_cxcywh.device
    empty = torch.zeros(0, device=device)
    if not bool(candidates.any()):  # no anchor near any GT: the image contributes only obj negatives
        fg = torch.zeros(n_anchors, dtype=torch.bool, device=device)
        k = torch.zeros(len(gt_cxcywh), dtype=torch.long, device=device)
        return Assignment(fg, empty.long(), empty, candidates, k)
    ious = pairwise_iou_cxcywh(gt_cxcywh, pred_cxcywh[candidates])  # [G, n]
    with torch.autocast(device_type=device.type, enabled=False):
        cls_cost = _bce_cost(cls_logits[candidates].float(), obj_logits[candidates].float(), gt_classes.long())
    cost = cls_cost + cfg.iou_cost_weight * -torch.log(ious + 1e-8) + cfg.outside_penalty * (~geometry[:, candidates])
    matched, dynamic_k = dynamic_k_matching(cost, ious, cfg.dynamic_k_topk)
    is_fg = matched >= 0
    fg_mask = torch.zeros(n_anchors, dtype=torch.bool, device=device)
    fg_mask[candidates.nonzero()[:, 0][is_fg]] = True
    matched_gt = matched[is_fg]
    matched_iou = ious[matched_gt, is_fg.nonzero()[:, 0]]
    return Assignment(fg_mask, matched_gt, matched_iou, candidates, dynamic_k)
