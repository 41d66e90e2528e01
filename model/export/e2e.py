"""The end-to-end export graph: reparameterised network + decode + score filter + NMS + top-K.

One output contract for every format: ``num_dets`` int32 ``[B]``, ``boxes`` float32 ``[B, K, 4]`` (xyxy in
letterboxed-input pixels), ``scores`` float32 ``[B, K]``, ``classes`` int32 ``[B, K]``. Three NMS flavours:
``torch`` (our vectorised NMS, for TorchScript), ``onnx`` (``NonMaxSuppression``, for ONNX Runtime and OpenVINO)
and ``trt`` (``EfficientNMS_TRT``). All select exactly what ``model.postprocess.postprocess`` selects.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from model.boxes import cxcywh_to_xyxy
from model.export.nms_ops import EfficientNMS, OnnxNMS
from model.postprocess import postprocess, select_top_k
from model.yolox import YOLOX, decode_outputs, make_grids


@dataclass(frozen=True)
class NmsSettings:
    """Thresholds baked into the graph (requests can only be stricter)."""

    score_threshold: float = 0.05
    iou_threshold: float = 0.65
    max_detections: int = 100
    class_agnostic: bool = False
    pre_nms_topk: int = 1000

    def __post_init__(self) -> None:
        if not 0.0 < self.score_threshold < 1.0:
            raise ValueError(f"score_threshold must be in (0, 1), got {self.score_threshold}")
        if not 0.0 < self.iou_threshold <= 1.0:
            raise ValueError(f"iou_threshold must be in (0, 1], got {self.iou_threshold}")
        if not 1 <= self.max_detections <= self.pre_nms_topk:
            raise ValueError(f"max_detections must be in [1, pre_nms_topk={self.pre_nms_topk}]")


class DecodedNet(nn.Module):
    """The network with decode, grids held as buffers (so the traced graph follows ``.to(device/dtype)``)."""

    def __init__(self, model: YOLOX, input_hw: tuple[int, int]) -> None:
        super().__init__()
        self.model = model
        grid, stride = make_grids(input_hw, model.head.strides, torch.device("cpu"), torch.float32)
        self.register_buffer("grid", grid, persistent=False)
        self.register_buffer("stride", stride, persistent=False)

    def forward(self, images: Tensor) -> Tensor:
        return decode_outputs(self.model(images, decode=False), self.grid, self.stride)  # [B, N, 5+C]


class EndToEnd(nn.Module):
    """``images [B, 3, H, W]`` (already preprocessed) -> the four contract outputs."""

    def __init__(self, net: nn.Module, nms: NmsSettings, flavour: str) -> None:
        super().__init__()
        if flavour not in ("torch", "onnx", "trt"):
            raise ValueError(f"unknown NMS flavour {flavour!r}")
        self.net = net
        self.nms = nms
        self.flavour = flavour

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        decoded = self.net(images).float()
        s = self.nms
        if self.flavour == "torch":
            return postprocess(
                decoded, s.score_threshold, s.iou_threshold, s.max_detections, s.class_agnostic, s.pre_nms_topk
            )
        boxes, scores, labels = self._candidates(decoded)
        if self.flavour == "onnx":
            return self._onnx_nms(boxes, scores, labels)
        one_hot_scores = torch.zeros(
            labels.shape[0], labels.shape[1], decoded.shape[2] - 5, device=decoded.device
        ).scatter(2, labels[..., None], scores[..., None])
        num, out_boxes, out_scores, out_classes = EfficientNMS.apply(
            boxes, one_hot_scores, s.score_threshold, s.iou_threshold, s.max_detections, int(s.class_agnostic)
        )
        return num.reshape(-1), out_boxes, out_scores, out_classes

    def _candidates(self, decoded: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Top ``pre_nms_topk`` anchors by score = obj x best class: xyxy boxes, scores, labels (sorted)."""
        class_conf, class_ids = decoded[..., 5:].max(dim=-1)
        scores = decoded[..., 4] * class_conf
        m = min(self.nms.pre_nms_topk, int(decoded.shape[1]))  # N is fixed by the input size
        top_scores, order = scores.topk(m, dim=1)
        boxes = cxcywh_to_xyxy(decoded[..., :4]).gather(1, order[..., None].expand(-1, -1, 4))
        return boxes, top_scores, class_ids.gather(1, order)

    def _onnx_nms(self, boxes: Tensor, scores: Tensor, labels: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        s = self.nms
        valid = scores >= s.score_threshold
        nms_scores = torch.where(valid, scores, torch.full_like(scores, -1.0))
        nms_boxes = boxes
        if not s.class_agnostic:
            # Class-aware NMS as one single-class NMS: shift each class into its own coordinate range.
            offset = labels.to(boxes.dtype)[..., None] * (boxes.abs().max() + 1.0)
            nms_boxes = boxes + offset
        selected = OnnxNMS.apply(
            nms_boxes,
            nms_scores[:, None, :],
            torch.tensor([s.max_detections], dtype=torch.int64),
            torch.tensor([s.iou_threshold], dtype=torch.float32),
            torch.tensor([-0.5], dtype=torch.float32),  # drop only the masked (-1) candidates
        )
        keep = torch.zeros_like(scores)
        keep[selected[:, 0], selected[:, 2]] = 1.0
        return select_top_k(boxes, scores, labels, (keep > 0.5) & valid, s.max_detections)
