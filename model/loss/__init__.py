"""Training losses: IoU losses (``iou``), SimOTA (``simota``) and the YOLOX loss (``yolox_loss``).

Imports torch; nothing here is needed to run an exported bundle.
"""

from model.loss.iou import box_regression_loss, giou_loss, iou_loss, pairwise_iou_cxcywh, siou_loss
from model.loss.simota import ASSIGNERS, SIMOTA_CENTER, SIMOTA_V030, Assignment, SimOTAConfig, simota_assign
from model.loss.yolox_loss import YoloxLoss

__all__ = [
    "ASSIGNERS",
    "SIMOTA_CENTER",
    "SIMOTA_V030",
    "Assignment",
    "SimOTAConfig",
    "YoloxLoss",
    "box_regression_loss",
    "giou_loss",
    "iou_loss",
    "pairwise_iou_cxcywh",
    "simota_assign",
    "siou_loss",
]
