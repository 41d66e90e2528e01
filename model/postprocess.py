"""Score filtering, class-aware / class-agnostic NMS and top-K, vectorised in pure torch.

Semantics of Megvii's ``postprocess`` + torchvision's ``batched_nms``: one class per anchor (arg-max), score =
obj x class confidence, keep ``score >= score_threshold``, suppress a box when its IoU with a kept higher-scored box
of the same class (any class when agnostic) is ``> iou_threshold``. Output follows the bundle contract: fixed K =
``max_detections`` rows per image, padded with zeros, and ``num_dets``.

NMS without per-box Python loops: with candidates sorted by score, greedy NMS is the unique fixed point of
``keep_i = valid_i and not any_{j<i}(keep_j and S_ji)`` (S_ji: j suppresses i). Iterating that map from
"all kept" fixes at least one more leading box per step and stops as soon as it no longer changes, so the loop
runs as many times as the longest suppression chain (a handful in practice), each step one batched matrix op.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from model.boxes import box_iou, cxcywh_to_xyxy


def nms_keep(
    boxes_xyxy: Tensor, labels: Tensor, valid: Tensor, iou_threshold: float, class_agnostic: bool = False
) -> Tensor:
    """Greedy NMS for candidates already sorted by descending score.

    Args:
        boxes_xyxy: ``[B, M, 4]``; labels: ``[B, M]``; valid: ``[B, M]`` bool (padding / below threshold = False).
    Returns:
        keep ``[B, M]`` bool, exactly torchvision's ``batched_nms`` selection.
    """
    m = boxes_xyxy.shape[1]
    overlap = box_iou(boxes_xyxy, boxes_xyxy) > iou_threshold  # [B, M, M], [b, j, i]
    if not class_agnostic:
        overlap = overlap & (labels[:, :, None] == labels[:, None, :])
    earlier = torch.ones(m, m, dtype=torch.bool, device=boxes_xyxy.device).triu(diagonal=1)
    suppresses = overlap & earlier & valid[:, :, None]  # j < i, both real candidates
    keep = valid.clone()
    for _ in range(m):
        suppressed = (suppresses & keep[:, :, None]).any(dim=1)
        new_keep = valid & ~suppressed
        if torch.equal(new_keep, keep):
            break
        keep = new_keep
    return keep


def postprocess(
    decoded: Tensor,
    score_threshold: float,
    iou_threshold: float,
    max_detections: int,
    class_agnostic: bool = False,
    pre_nms_topk: int = 1000,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Decoded predictions -> the bundle output contract.

    Args:
        decoded: ``[B, N, 5 + C]`` (cx, cy, w, h, obj, cls...) as returned by ``YOLOX`` in eval mode.
        pre_nms_topk: at most this many highest-scoring candidates per image enter NMS (bounds memory).
    Returns:
        ``num_dets`` int32 ``[B]``, ``boxes`` ``[B, K, 4]`` xyxy, ``scores`` ``[B, K]``, ``classes`` int32 ``[B, K]``.
    """
    decoded = decoded.float()
    b, n = decoded.shape[0], decoded.shape[1]
    class_conf, class_ids = decoded[..., 5:].max(dim=-1)  # [B, N]
    scores = decoded[..., 4] * class_conf
    candidate = scores >= score_threshold
    m = min(pre_nms_topk, n)
    # Only as many candidates as the fullest image needs (dynamic in eager/TorchScript).
    m = max(min(m, int(candidate.sum(dim=1).max().item())), 1)
    masked = torch.where(candidate, scores, torch.full_like(scores, -1.0))
    top_scores, order = masked.topk(m, dim=1)  # sorted descending
    boxes = cxcywh_to_xyxy(decoded[..., :4]).gather(1, order.unsqueeze(-1).expand(b, m, 4))
    labels = class_ids.gather(1, order)
    valid = top_scores >= score_threshold
    keep = nms_keep(boxes, labels, valid, iou_threshold, class_agnostic)
    return select_top_k(boxes, top_scores, labels, keep, max_detections)


def select_top_k(
    boxes: Tensor, scores: Tensor, labels: Tensor, keep: Tensor, max_detections: int
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Pack kept rows (already score-sorted) into fixed ``[B, K]`` outputs padded with zeros."""
    b = scores.shape[0]
    rows = min(max_detections, int(scores.shape[1]))  # int(): a constant K in traced/exported graphs
    kept_scores = torch.where(keep, scores, torch.full_like(scores, -1.0))
    top, idx = kept_scores.topk(rows, dim=1)
    present = top >= 0
    out_boxes = torch.where(present[..., None], boxes.gather(1, idx[..., None].expand(b, rows, 4)), 0.0)
    out_scores = torch.where(present, top, torch.zeros_like(top))
    out_classes = torch.where(present, labels.gather(1, idx), torch.zeros_like(idx)).int()
    num_dets = present.sum(dim=1).int()
    missing = max_detections - rows
    if missing > 0:  # fewer candidates than K: pad to the fixed output size
        out_boxes = F.pad(out_boxes, [0, 0, 0, missing])
        out_scores = F.pad(out_scores, [0, missing])
        out_classes = F.pad(out_classes, [0, missing])
    return num_dets, out_boxes, out_scores, out_classes


def batched_nms(boxes_xyxy: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float) -> Tensor:
    """torchvision-compatible ``batched_nms`` for one image: indices kept, by descending score."""
    order = scores.argsort(descending=True)
    keep = nms_keep(
        boxes_xyxy[order][None],
        idxs[order][None],
        torch.ones(1, order.numel(), dtype=torch.bool, device=scores.device),
        iou_threshold,
    )[0]
    return order[keep]
