"""NMS and postprocess semantics on hand-built cases, and agreement with a brute-force greedy NMS."""

from __future__ import annotations

import torch

from model.boxes import box_iou, box_iou_aligned, cxcywh_to_xyxy, generalized_box_iou, xyxy_to_cxcywh
from model.postprocess import batched_nms, postprocess


def decoded_from(boxes_xyxy: list[list[float]], obj: list[float], cls: list[list[float]]) -> torch.Tensor:
    """Build a [1, N, 5 + C] decoded tensor from corner boxes and scores."""
    b = xyxy_to_cxcywh(torch.tensor(boxes_xyxy, dtype=torch.float32))
    return torch.cat([b, torch.tensor(obj)[:, None], torch.tensor(cls)], dim=1)[None]


def test_box_helpers() -> None:
    a = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    b = torch.tensor([[5.0, 0.0, 15.0, 10.0], [20.0, 20.0, 30.0, 30.0]])
    assert torch.allclose(box_iou(a, b), torch.tensor([[50 / 150, 0.0]]))
    # GIoU of disjoint boxes: 0 - (900 - 200) / 900
    assert torch.allclose(generalized_box_iou(a, b)[0, 1], torch.tensor(-700 / 900))
    assert torch.allclose(box_iou_aligned(a, b[:1]), torch.tensor([1 / 3]))
    assert torch.allclose(cxcywh_to_xyxy(xyxy_to_cxcywh(b)), b)


def test_same_class_overlap_is_suppressed_other_class_kept() -> None:
    boxes = [[0, 0, 10, 10], [1, 0, 11, 10], [1, 0, 11, 10]]  # IoU(0, 1) = 90 / 110 = 0.82
    d = decoded_from(boxes, obj=[1.0, 1.0, 1.0], cls=[[0.9, 0.0], [0.8, 0.0], [0.0, 0.7]])
    num, out_boxes, scores, classes = postprocess(d, 0.1, 0.65, max_detections=5)
    assert num.tolist() == [2]
    assert scores[0, :2].tolist() == [0.8999999761581421, 0.699999988079071]
    assert classes[0, :2].tolist() == [0, 1] and classes.dtype == torch.int32
    assert torch.equal(out_boxes[0, 2:], torch.zeros(3, 4)) and torch.equal(scores[0, 2:], torch.zeros(3))
    num_agnostic, *_ = postprocess(d, 0.1, 0.65, max_detections=5, class_agnostic=True)
    assert num_agnostic.tolist() == [1]


def test_iou_equal_to_threshold_is_not_suppressed_and_score_threshold_is_inclusive() -> None:
    boxes = [[0, 0, 10, 10], [0, 0, 10, 5]]  # IoU exactly 0.5
    d = decoded_from(boxes, obj=[1.0, 0.5], cls=[[1.0], [1.0]])
    num, *_ = postprocess(d, 0.5, 0.5, max_detections=10)
    assert num.tolist() == [2]  # kept: suppression needs IoU > threshold; 0.5 >= 0.5 passes the score filter
    num, *_ = postprocess(d, 0.500001, 0.5, max_detections=10)
    assert num.tolist() == [1]


def test_score_is_obj_times_best_class_and_one_class_per_anchor() -> None:
    d = decoded_from([[0, 0, 4, 4]], obj=[0.5], cls=[[0.2, 0.6, 0.4]])
    num, _, scores, classes = postprocess(d, 0.01, 0.5, max_detections=3)
    assert num.tolist() == [1] and classes[0, 0].item() == 1
    assert abs(scores[0, 0].item() - 0.3) < 1e-6


def test_max_detections_keeps_the_best_in_score_order() -> None:
    boxes = [[i * 20, 0, i * 20 + 10, 10] for i in range(6)]
    obj = [0.3, 0.9, 0.5, 0.8, 0.1, 0.7]
    d = decoded_from(boxes, obj=obj, cls=[[1.0]] * 6)
    num, out_boxes, scores, _ = postprocess(d, 0.05, 0.5, max_detections=3)
    assert num.tolist() == [3]
    assert [round(s, 4) for s in scores[0].tolist()] == [0.9, 0.8, 0.7]
    assert out_boxes[0, 0].tolist() == [20.0, 0.0, 30.0, 10.0]


def test_batch_images_are_independent_and_empty_images_give_zero() -> None:
    d = torch.cat(
        [decoded_from([[0, 0, 10, 10]], [0.9], [[1.0]]), decoded_from([[0, 0, 10, 10]], [0.001], [[1.0]])], dim=0
    )
    num, _, scores, _ = postprocess(d, 0.01, 0.5, max_detections=2)
    assert num.tolist() == [1, 0] and scores[1].tolist() == [0.0, 0.0]


def greedy_reference(boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor, thr: float) -> list[int]:
    order, keep = scores.argsort(descending=True).tolist(), []
    for i in order:
        if all(labels[i] != labels[j] or box_iou(boxes[i : i + 1], boxes[j : j + 1]).item() <= thr for j in keep):
            keep.append(i)
    return keep


def test_vectorised_nms_equals_greedy_on_random_clusters() -> None:
    gen = torch.Generator().manual_seed(0)
    for _ in range(30):
        n = 150
        centres = torch.rand(8, 2, generator=gen) * 200
        xy = centres[torch.randint(0, 8, (n,), generator=gen)] + torch.randn(n, 2, generator=gen) * 6
        wh = torch.rand(n, 2, generator=gen) * 30 + 5
        boxes = torch.cat([xy, xy + wh], dim=1)
        scores = torch.rand(n, generator=gen)
        labels = torch.randint(0, 3, (n,), generator=gen)
        assert batched_nms(boxes, scores, labels, 0.45).tolist() == greedy_reference(boxes, scores, labels, 0.45)
