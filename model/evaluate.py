"""COCO box evaluation of a model on a ``CocoDetection`` split: the 12 COCO numbers and a per-class AP table.

Numbers come from ``faster-coco-eval`` (or ``pycocotools`` when it is missing), never from hand-written mAP.
Detections follow Megvii's COCO evaluator: score = obj x class confidence, class-aware NMS, conf 0.001, IoU 0.65,
at most 100 per image, boxes mapped back with ``/ r`` and clipped. Distributed: each rank predicts its shard, rank 0
gathers the detections and scores them, every rank gets the result. Imports torch.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from model.config import InputConvention
from model.distributed import DistContext, broadcast_object, gather_to_main
from model.inputs import to_device, to_network_batch
from model.postprocess import postprocess

STAT_NAMES = (
    "AP50:95", "AP50", "AP75", "AP_small", "AP_medium", "AP_large",
    "AR1", "AR10", "AR100", "AR_small", "AR_medium", "AR_large",
)  # fmt: skip
_SINGLE = DistContext(0, 1, 0, torch.device("cpu"), None)


@dataclass(frozen=True)
class EvalResult:
    """COCO metrics (fractions in [0, 1]; -1 where COCO has no ground truth for a bucket)."""

    stats: tuple[float, ...]  # the 12 numbers in STAT_NAMES order
    per_class: tuple[tuple[str, float, float], ...]  # (name, AP50:95, AP50)
    num_images: int
    num_detections: int

    @property
    def ap50_95(self) -> float:
        """mAP at IoU 0.50:0.95 (the number ``best`` checkpoints track)."""
        return self.stats[0]

    @property
    def ap50(self) -> float:
        """mAP at IoU 0.50."""
        return self.stats[1]

    def metrics(self) -> dict[str, float]:
        """``{STAT_NAME: value}`` for logs."""
        return dict(zip(STAT_NAMES, self.stats, strict=True))


@torch.no_grad()
def predict_coco(
    model: nn.Module,
    loader: DataLoader,
    convention: InputConvention,
    device: torch.device,
    cat_ids: tuple[int, ...],
    *,
    score_threshold: float = 0.001,
    nms_iou: float = 0.65,
    max_detections: int = 100,
    amp: bool = False,
) -> list[dict]:
    """COCO-format detections (``image_id``, ``category_id``, ``bbox`` xywh original pixels, ``score``)."""
    was_training = model.training
    model.eval()
    results: list[dict] = []
    try:
        for images, ratios, image_ids, image_hw in loader:
            x = to_network_batch(to_device(images, device), convention)
            with torch.autocast(device.type, dtype=torch.float16, enabled=amp and device.type == "cuda"):
                decoded = model(x)
            num, boxes, scores, classes = (t.cpu() for t in postprocess(decoded.float(), score_threshold, nms_iou,
                                                                         max_detections))  # fmt: skip
            for i in range(len(image_ids)):
                n = int(num[i])
                h, w = (float(v) for v in image_hw[i])
                b = boxes[i, :n] / float(ratios[i])
                b[:, 0::2] = b[:, 0::2].clamp(0, w)
                b[:, 1::2] = b[:, 1::2].clamp(0, h)
                xywh = torch.cat([b[:, :2], b[:, 2:] - b[:, :2]], dim=1).tolist()
                for box, score, cls in zip(xywh, scores[i, :n].tolist(), classes[i, :n].tolist(), strict=True):
                    results.append({"image_id": int(image_ids[i]), "category_id": int(cat_ids[cls]),
                                    "bbox": [round(v, 3) for v in box], "score": round(score, 5)})  # fmt: skip
    finally:
        model.train(was_training)
    return results


def _coco_api():
    try:
        from faster_coco_eval import COCO, COCOeval_faster

        return COCO, COCOeval_faster
    except ImportError:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval

        return COCO, COCOeval


def score_detections(
    ann_file: str | Path, detections: list[dict], cat_ids: tuple[int, ...], class_names: tuple[str, ...]
) -> EvalResult:
    """Run COCO bbox evaluation of ``detections`` against ``ann_file``."""
    coco_cls, eval_cls = _coco_api()
    with contextlib.redirect_stdout(io.StringIO()):  # both libraries print progress
        gt = coco_cls(str(ann_file))
        num_images = len(gt.getImgIds())
        if not detections:
            return EvalResult((0.0,) * 12, tuple((n, 0.0, 0.0) for n in class_names), num_images, 0)
        dt = gt.loadRes(detections)
        evaluator = eval_cls(gt, dt, "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    stats = tuple(float(v) for v in evaluator.stats[:12])
    precision = np.asarray(evaluator.eval["precision"])  # [T IoUs, R recalls, K classes, A areas, M max dets]
    order = list(evaluator.params.catIds)
    per_class = []
    for name, cat_id in zip(class_names, cat_ids, strict=True):
        k = order.index(cat_id)
        all_t = precision[:, :, k, 0, -1]
        at_50 = precision[0, :, k, 0, -1]
        ap = float(all_t[all_t > -1].mean()) if (all_t > -1).any() else -1.0
        ap50 = float(at_50[at_50 > -1].mean()) if (at_50 > -1).any() else -1.0
        per_class.append((name, ap, ap50))
    return EvalResult(stats, tuple(per_class), num_images, len(detections))


def evaluate(
    model: nn.Module,
    loader: DataLoader,
    ann_file: str | Path,
    convention: InputConvention,
    cat_ids: tuple[int, ...],
    class_names: tuple[str, ...],
    *,
    ctx: DistContext = _SINGLE,
    device: torch.device | None = None,
    score_threshold: float = 0.001,
    nms_iou: float = 0.65,
    max_detections: int = 100,
    amp: bool = False,
) -> EvalResult:
    """Predict (this rank's shard), gather on rank 0, score, and return the same result on every rank."""
    device = device or ctx.device
    dets = predict_coco(model, loader, convention, device, cat_ids, score_threshold=score_threshold,
                        nms_iou=nms_iou, max_detections=max_detections, amp=amp)  # fmt: skip
    gathered = gather_to_main(dets, ctx)
    result = None
    if ctx.is_main:
        merged = [d for part in gathered for d in part]
        result = score_detections(ann_file, merged, cat_ids, class_names)
    return broadcast_object(result, ctx)


def format_result(result: EvalResult) -> str:
    """The 12 COCO lines and a per-class AP table, as text."""
    lines = [f"{result.num_images} images, {result.num_detections} detections"]
    lines += [f"  {name:<10} {value:7.4f}" for name, value in zip(STAT_NAMES, result.stats, strict=True)]
    width = max([len("class")] + [len(n) for n, _, _ in result.per_class])
    lines.append(f"  {'class':<{width}}  AP50:95    AP50")
    lines += [f"  {name:<{width}}  {ap:7.4f} {ap50:7.4f}" for name, ap, ap50 in result.per_class]
    return "\n".join(lines)
