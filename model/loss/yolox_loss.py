"""``YoloxLoss``: SimOTA targets plus the YOLOX loss terms (``yolox.md`` §4.2, ``yolox_pai.md`` §3.1).

``total = 5 * L_iou + L_obj + L_cls + L_l1``; every term is a sum divided by the number of positives in the
local batch (``max(num_fg, 1)``, not all-reduced, as both references). The returned ``iou`` is already weighted,
as Megvii logs it, so ``total == iou + obj + cls + l1``. Losses are computed in float32 whatever the model's
output dtype (under AMP the reference computed the IoU terms in half precision; float32 only removes rounding).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from model.config import YoloxConfig
from model.loss.iou import box_regression_loss
from model.loss.simota import ASSIGNERS, SIMOTA_V030, Assignment, SimOTAConfig, simota_assign
from model.yolox import make_grids

REG_WEIGHT = 5.0
L1_LOG_EPS = 1e-8


def valid_targets(targets: Tensor) -> Tensor:
    """Rows of the zero-padded ``[B, M, 5]`` targets that hold a box (the reference: row sum > 0)."""
    return targets.sum(dim=2) > 0


def assign_with_cpu_fallback(*args, cfg: SimOTAConfig) -> Assignment:
    """SimOTA on the tensors' device; on CUDA out-of-memory retry that image on the CPU (the reference's rescue)."""
    try:
        return simota_assign(*args, cfg=cfg)
    except torch.OutOfMemoryError:
        device = args[0].device
        torch.cuda.empty_cache()
        result = simota_assign(*(a.cpu() for a in args), cfg=cfg)
        return Assignment(*(t.to(device) for t in result))


class YoloxLoss:
    """Callable loss: ``loss(outputs, targets, input_hw, use_l1=False) -> dict of scalar tensors``.

    Keys: ``total`` (differentiable), ``iou`` (x5), ``obj``, ``cls``, ``l1``, ``num_fg`` (positives in the batch).
    """

    def __init__(
        self, cfg: YoloxConfig, *, iou_loss: str | None = None, assigner: SimOTAConfig | str = SIMOTA_V030
    ) -> None:
        self.num_classes = cfg.num_classes
        self.strides = tuple(cfg.strides)
        self.iou_loss = iou_loss or cfg.iou_loss
        self.assigner = ASSIGNERS[assigner] if isinstance(assigner, str) else assigner

    def __call__(
        self, outputs: Tensor, targets: Tensor, input_hw: tuple[int, int], use_l1: bool = False
    ) -> dict[str, Tensor]:
        """Args: ``outputs`` training-mode logits ``[B, N, 5 + C]``; ``targets`` ``[B, M, 5]`` = (class, cx, cy,
        w, h) in input pixels, zero rows are padding; ``input_hw`` the batch's (H, W)."""
        b, n, d = outputs.shape
        if d != 5 + self.num_classes:
            raise ValueError(f"outputs have {d} channels, expected 5 + {self.num_classes} classes")
        if targets.dim() != 3 or targets.shape[0] != b or targets.shape[2] != 5:
            raise ValueError(f"expected targets [B={b}, M, 5], got {tuple(targets.shape)}")
        outputs, targets = outputs.float(), targets.float()
        grid, stride = make_grids(input_hw, self.strides, outputs.device, torch.float32)  # [N, 2], [N, 1]
        if grid.shape[0] != n:
            raise ValueError(f"outputs have {n} anchors but input_hw {input_hw} gives {grid.shape[0]}")
        raw_reg = outputs[..., :4]  # [B, N, 4]
        boxes = torch.cat([(raw_reg[..., :2] + grid) * stride, torch.exp(raw_reg[..., 2:4]) * stride], dim=-1)
        obj_logits, cls_logits = outputs[..., 4], outputs[..., 5:]
        centers = (grid + 0.5) * stride
        valid = valid_targets(targets)

        fg_masks, reg_targets, cls_targets, l1_targets = [], [], [], []
        for i in range(b):
            gt = targets[i][valid[i]]  # [G, 5]
            if len(gt) == 0:
                fg_masks.append(torch.zeros(n, dtype=torch.bool, device=outputs.device))
                continue
            a = assign_with_cpu_fallback(
                boxes[i].detach(), obj_logits[i].detach(), cls_logits[i].detach(), centers, stride[:, 0],
                gt[:, 1:5], gt[:, 0].long(), cfg=self.assigner,
            )  # fmt: skip
            fg_masks.append(a.fg_mask)
            matched_boxes = gt[a.matched_gt, 1:5]  # [F, 4]
            reg_targets.append(matched_boxes)
            cls_targets.append(F.one_hot(gt[a.matched_gt, 0].long(), self.num_classes) * a.matched_iou[:, None])
            if use_l1:
                s, g = stride[a.fg_mask], grid[a.fg_mask]
                l1_targets.append(
                    torch.cat([matched_boxes[:, :2] / s - g, torch.log(matched_boxes[:, 2:4] / s + L1_LOG_EPS)], 1)
                )

        fg = torch.stack(fg_masks)  # [B, N]
        num_fg_count = int(fg.sum())
        num_fg = float(max(num_fg_count, 1))
        zero = outputs.new_zeros(())
        if num_fg_count:
            reg_t, cls_t = torch.cat(reg_targets), torch.cat(cls_targets)
            loss_iou = box_regression_loss(self.iou_loss, boxes[fg], reg_t).sum() / num_fg
            loss_cls = F.binary_cross_entropy_with_logits(cls_logits[fg], cls_t, reduction="sum") / num_fg
        else:  # keep the graph connected so DDP sees a gradient for every parameter
            loss_iou = boxes.sum() * 0.0
            loss_cls = cls_logits.sum() * 0.0
        loss_obj = F.binary_cross_entropy_with_logits(obj_logits, fg.float(), reduction="sum") / num_fg
        if use_l1 and num_fg_count:
            loss_l1 = F.l1_loss(raw_reg[fg], torch.cat(l1_targets), reduction="sum") / num_fg
        elif use_l1:
            loss_l1 = raw_reg.sum() * 0.0
        else:
            loss_l1 = zero
        loss_iou = REG_WEIGHT * loss_iou
        total = loss_iou + loss_obj + loss_cls + loss_l1
        return {
            "total": total,
            "iou": loss_iou,
            "obj": loss_obj,
            "cls": loss_cls,
            "l1": loss_l1,
            "num_fg": torch.tensor(float(num_fg_count), device=outputs.device),
        }
