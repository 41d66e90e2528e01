"""IoU / GIoU / EasyCV GIoU / SIoU losses: hand-computed values and gradients, finiteness at coincident centres,
parity with Megvii."""

from __future__ import annotations

import math

import pytest
import torch

from model.loss.iou import box_regression_loss, pairwise_iou_cxcywh


def _loss(kind: str, pred: list[float], target: list[float]) -> float:
    return float(box_regression_loss(kind, torch.tensor([pred]), torch.tensor([target]))[0])


@pytest.mark.parametrize("kind", ["iou", "giou", "giou-easycv", "siou"])
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


# EasyCV's GIoU, written out by hand from ``1 - clamp(IoU - (C - I) / C, -1, 1)`` (I = intersection, C = enclosing
# area, U = union): (pred, target, expected loss).
EASYCV_GIOU_CASES = [
    # coincident 4x2 boxes: I = U = C = 8, IoU = 8 / (8 + 1e-16) -> GIoU 1, loss 0
    ([5.0, 5.0, 4.0, 2.0], [5.0, 5.0, 4.0, 2.0], 0.0),
    # disjoint 2x2 boxes 4 px apart: I = 0, C = 6 x 2 -> GIoU = 0 - 12/12 = -1, loss 2 (textbook: 1 + 1/3)
    ([0.0, 0.0, 2.0, 2.0], [4.0, 0.0, 2.0, 2.0], 2.0),
    # touching edges (x in [-1, 1] and [1, 3]): no overlap -> I = 0, C = 4 x 2 -> loss 2
    ([0.0, 0.0, 2.0, 2.0], [2.0, 0.0, 2.0, 2.0], 2.0),
    # 2x2 nested in 4x4, same centre: I = 4, U = C = 16, IoU 1/4 -> GIoU = 1/4 - 12/16 = -1/2, loss 3/2
    ([0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 4.0, 4.0], 1.5),
    # half overlap, x [-1, 1] vs [0, 2]: I = 2, U = 6, C = 3 x 2 = 6 -> GIoU = 1/3 - 4/6 = -1/3, loss 4/3
    ([0.0, 0.0, 2.0, 2.0], [1.0, 0.0, 2.0, 2.0], 4 / 3),
    # diagonal, [-1, 1]^2 vs x [0, 2] y [-1, 3]: I = 1 x 2, U = 4 + 8 - 2 = 10, C = 3 x 4 = 12
    # -> GIoU = 0.2 - 10/12, loss 0.8 + 10/12
    ([0.0, 0.0, 2.0, 2.0], [1.0, 1.0, 2.0, 4.0], 0.8 + 10 / 12),
]


@pytest.mark.parametrize(("pred", "target", "expected"), EASYCV_GIOU_CASES)
def test_giou_easycv_hand_computed(pred: list[float], target: list[float], expected: float) -> None:
    assert _loss("giou-easycv", pred, target) == pytest.approx(expected, rel=1e-6, abs=1e-7)


def test_giou_easycv_rows_are_independent() -> None:
    pred = torch.tensor([case[0] for case in EASYCV_GIOU_CASES])
    target = torch.tensor([case[1] for case in EASYCV_GIOU_CASES])
    expected = torch.tensor([case[2] for case in EASYCV_GIOU_CASES])
    torch.testing.assert_close(box_regression_loss("giou-easycv", pred, target), expected, rtol=1e-6, atol=1e-7)


def test_giou_easycv_gradients_hand_computed() -> None:
    # Half overlap, pred centre x = c: I = 2(c + 1), U = 8 - I, C = 2(3 - c). d/dc of I/U and of I/C are both
    # (2 * 6 + 2 * 2) / 36 = 4/9 at c = 0, so d loss / dc = -(4/9 + 4/9); the penalty term ignores the union.
    pred = torch.tensor([[0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 2.0, 2.0]], requires_grad=True)
    target = torch.tensor([[1.0, 0.0, 2.0, 2.0], [4.0, 0.0, 2.0, 2.0]])
    box_regression_loss("giou-easycv", pred, target).sum().backward()
    assert float(pred.grad[0, 0]) == pytest.approx(-8 / 9, rel=1e-6)
    # Disjoint boxes: the loss is exactly 2 whatever their distance, so no gradient reaches them.
    torch.testing.assert_close(pred.grad[1], torch.zeros(4), atol=1e-8, rtol=0)
    # The textbook GIoU still pulls the disjoint box towards its target.
    pred.grad = None
    box_regression_loss("giou", pred, target).sum().backward()
    assert float(pred.grad[1, 0]) < 0


def test_giou_easycv_differs_from_textbook_only_by_the_penalty() -> None:
    pred, target = _random_boxes(400, 5), _random_boxes(400, 6)
    target[:200] = pred[:200] + torch.rand(200, 4)
    easycv = box_regression_loss("giou-easycv", pred, target)
    textbook = box_regression_loss("giou", pred, target)
    # (C - I)/C - (C - U)/C = (U - I)/C >= 0, and the clamp never bites (GIoU stays in [-1, 1]).
    assert (easycv >= textbook - 1e-6).all() and (easycv <= 2 + 1e-6).all()
    assert float(easycv.mean()) > float(textbook.mean())


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
