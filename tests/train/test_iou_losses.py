"""IoU / GIoU / SIoU losses: hand-computed values, finiteness at coincident centres, parity with Megvii."""

from __future__ import annotations

import math

import pytest
import torch

from model.loss.iou import box_regression_loss, pairwise_iou_cxcywh


def _loss(kind: str, pred: list[float], target: list[float]) -> float:
    return float(box_regression_loss(kind, torch.tensor([pred]), torch.tensor([target]))[0])


@pytest.mark.parametrize("kind", ["iou", "giou", "siou"])
def test_identical_boxes_cost_nothing(kind: str) -> None:
    assert _loss(kind, [5.0, 5.0, 4.0, 2.0], [5.0, 5.0, 4.0, 2.0]) == pytest.approx(0.0, abs=1e-6)


def test_nested_boxes_hand_computed() -> None:
    # pred 2x2 inside target 4x4, same centre: IoU = 4/16, enclosing box = target.
    pred, target = [0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 4.0, 4.0]
    assert _loss("iou", pred, target) == pytest.approx(1 - 0.25**2)
    assert _loss("giou", pred, target) == pytest.approx(1 - 0.25)
    # Coincident centres: no angle/distance cost; shape cost 2 * (1 - e^-0.5)^4, halved.
    assert _loss("siou", pred, target) == pytest.approx(0.75 + (1 - math.exp(-0.5)) ** 4, rel=1e-5)


def test_disjoint_boxes_hand_computed() -> None:
    pred, target = [0.0, 0.0, 2.0, 2.0], [4.0, 0.0, 2.0, 2.0]
    assert _loss("iou", pred, target) == pytest.approx(1.0)
    # Enclosing box 6 x 2 = 12, union 8: GIoU = 0 - 4/12.
    assert _loss("giou", pred, target) == pytest.approx(1 + 1 / 3, rel=1e-6)


def test_siou_offset_hand_computed() -> None:
    # Same-size boxes 3 px right, 4 px down: IoU 0, sin(2a) = 2*3*4/25, spans 3+2 and 4+2, no shape cost.
    gamma = 2 - 24 / 25
    distance = 2 - math.exp(-gamma * (3 / 5) ** 2) - math.exp(-gamma * (4 / 6) ** 2)
    assert _loss("siou", [0.0, 0.0, 2.0, 2.0], [3.0, 4.0, 2.0, 2.0]) == pytest.approx(1 + distance / 2, rel=1e-5)


def test_siou_coincident_centres_is_finite_with_finite_gradient() -> None:
    pred = torch.tensor([[10.0, 10.0, 4.0, 6.0], [3.0, 3.0, 2.0, 2.0]], requires_grad=True)
    target = torch.tensor([[10.0, 10.0, 5.0, 5.0], [3.0, 3.0, 2.0, 2.0]])
    loss = box_regression_loss("siou", pred, target)
    assert torch.isfinite(loss).all()
    loss.sum().backward()
    assert torch.isfinite(pred.grad).all()


def test_unknown_kind_and_bad_shapes_raise() -> None:
    with pytest.raises(ValueError, match="iou loss must be"):
        box_regression_loss("diou", torch.zeros(1, 4), torch.zeros(1, 4))
    with pytest.raises(ValueError, match=r"\[N, 4\]"):
        box_regression_loss("iou", torch.zeros(2, 4), torch.zeros(3, 4))


def _random_boxes(n: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.cat([torch.rand(n, 2, generator=gen) * 100, torch.rand(n, 2, generator=gen) * 40 + 1], 1)


@pytest.mark.parametrize("kind", ["iou", "giou"])
def test_matches_megvii_iouloss(kind: str, megvii) -> None:
    from yolox.models.losses import IOUloss

    pred, target = _random_boxes(500, 1), _random_boxes(500, 2)
    target[:100] = pred[:100] + torch.rand(100, 4)  # plenty of overlapping pairs
    expected = IOUloss(reduction="none", loss_type=kind)(pred, target)
    torch.testing.assert_close(box_regression_loss(kind, pred, target), expected, rtol=1e-6, atol=1e-6)


def test_pairwise_iou_matches_megvii_bboxes_iou(megvii) -> None:
    from yolox.utils.boxes import bboxes_iou

    a, b = _random_boxes(30, 3), _random_boxes(50, 4)
    torch.testing.assert_close(pairwise_iou_cxcywh(a, b), bboxes_iou(a, b, xyxy=False))
