"""NMS as graph operators: ONNX ``NonMaxSuppression`` and TensorRT's ``EfficientNMS_TRT`` plugin.

Each is a ``torch.autograd.Function`` whose eager ``forward`` computes the same selection with our torch NMS
(so the export wrapper can be run and tested without the runtime) and whose ``symbolic`` emits the graph node.
Attributes are emitted as scalars (EasyCV/YOLOv6's trailing-comma tuples are reference bug #11).
"""

from __future__ import annotations

import torch
from torch import Tensor

from model.postprocess import nms_keep


class OnnxNMS(torch.autograd.Function):
    """ONNX ``NonMaxSuppression`` over one class: returns ``[S, 3]`` int64 (batch, class=0, box), score order."""

    @staticmethod
    def forward(ctx, boxes_xyxy: Tensor, scores: Tensor, max_per_image: Tensor, iou: Tensor, score_min: Tensor):
        # boxes [B, M, 4] already score-sorted per image; scores [B, 1, M]
        b, m = scores.shape[0], scores.shape[2]
        valid = scores[:, 0] > score_min
        labels = torch.zeros(b, m, dtype=torch.int64, device=scores.device)
        keep = nms_keep(boxes_xyxy, labels, valid, float(iou), class_agnostic=True)
        rank = keep.cumsum(dim=1)
        keep = keep & (rank <= int(max_per_image))
        batch_idx, box_idx = keep.nonzero(as_tuple=True)
        return torch.stack([batch_idx, torch.zeros_like(batch_idx), box_idx], dim=1)

    @staticmethod
    def symbolic(g, boxes_xyxy, scores, max_per_image, iou, score_min):
        return g.op("NonMaxSuppression", boxes_xyxy, scores, max_per_image, iou, score_min, center_point_box_i=0)


class EfficientNMS(torch.autograd.Function):
    """TensorRT ``EfficientNMS_TRT`` (plugin version 1): fixed-K outputs, class-aware unless ``class_agnostic``."""

    @staticmethod
    def forward(
        ctx,
        boxes_xyxy: Tensor,
        scores: Tensor,
        score_threshold: float,
        iou_threshold: float,
        max_output_boxes: int,
        class_agnostic: int,
    ):
        from model.postprocess import select_top_k

        # boxes [B, M, 4] xyxy; scores [B, M, C] with only the arg-max class non-zero (one class per anchor).
        conf, labels = scores.max(dim=-1)
        conf_sorted, order = conf.sort(dim=1, descending=True)
        boxes = boxes_xyxy.gather(1, order[..., None].expand(-1, -1, 4))
        labels = labels.gather(1, order)
        valid = conf_sorted >= score_threshold
        keep = nms_keep(boxes, labels, valid, iou_threshold, class_agnostic=bool(class_agnostic))
        num, out_boxes, out_scores, out_classes = select_top_k(boxes, conf_sorted, labels, keep, max_output_boxes)
        return num[:, None], out_boxes, out_scores, out_classes

    @staticmethod
    def symbolic(g, boxes_xyxy, scores, score_threshold, iou_threshold, max_output_boxes, class_agnostic):
        outputs = g.op(
            "TRT::EfficientNMS_TRT",
            boxes_xyxy,
            scores,
            background_class_i=-1,
            box_coding_i=0,
            iou_threshold_f=float(iou_threshold),
            max_output_boxes_i=int(max_output_boxes),
            plugin_version_s="1",
            score_activation_i=0,
            score_threshold_f=float(score_threshold),
            class_agnostic_i=int(class_agnostic),
            outputs=4,
        )
        num, boxes, scores_out, classes = outputs
        # Declare the plugin's output types and ranks so the ONNX graph is well-typed without TensorRT.
        num.setType(num.type().with_dtype(torch.int32).with_sizes([None, 1]))
        boxes.setType(boxes.type().with_dtype(torch.float32).with_sizes([None, max_output_boxes, 4]))
        scores_out.setType(scores_out.type().with_dtype(torch.float32).with_sizes([None, max_output_boxes]))
        classes.setType(classes.type().with_dtype(torch.int32).with_sizes([None, max_output_boxes]))
        return num, boxes, scores_out, classes
