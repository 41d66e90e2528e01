"""TorchScript export: the traced network (decode buffers inside) wrapped by a scripted NMS, dynamic batch."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import Tensor, nn

from model.export.e2e import DecodedNet, NmsSettings
from model.postprocess import postprocess


class ScriptedEndToEnd(nn.Module):
    """Scripted wrapper: tracing would unroll NMS for the example batch; scripting keeps it general."""

    def __init__(self, net: nn.Module, nms: NmsSettings) -> None:
        super().__init__()
        self.net = net
        self.score_threshold = float(nms.score_threshold)
        self.iou_threshold = float(nms.iou_threshold)
        self.max_detections = int(nms.max_detections)
        self.class_agnostic = bool(nms.class_agnostic)
        self.pre_nms_topk = int(nms.pre_nms_topk)

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        return postprocess(
            self.net(images),
            self.score_threshold,
            self.iou_threshold,
            self.max_detections,
            self.class_agnostic,
            self.pre_nms_topk,
        )


def export_torchscript(net: DecodedNet, nms: NmsSettings, path: Path, input_hw: tuple[int, int]) -> Path:
    """Trace ``net`` at batch 2, script the NMS wrapper around it, save to ``path``."""
    example = torch.rand(2, 3, *input_hw) * 255
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # fixed input size: grid shapes are constants
        traced = torch.jit.trace(net.eval(), example, check_trace=False)
    scripted = torch.jit.script(ScriptedEndToEnd(traced, nms))
    scripted.save(str(path))
    return path
