"""SimOTA: exact parity with Megvii 0.3.0's ``get_assignments`` and the assigner's invariants."""

from __future__ import annotations

import pytest
import torch

from model.loss.simota import SIMOTA_CENTER, SIMOTA_V030, candidate_masks, simota_assign
from model.yolox import make_grids

# The reference's autocast call is deprecated in this torch; its warning is not ours.
pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")

INPUT_HW = (128, 160)
NUM_CLASSES = 4


def _scene(seed: int, num_gt: int):
    """Random predictions near plausible sizes and ``num_gt`` GTs, some overlapping, some tiny."""
    gen = torch.Generator().manual_seed(seed)
    grid, stride = make_grids(INPUT_HW, (8, 16, 32), torch.device("cpu"), torch.float32)
    n = grid.shape[0]
    raw = torch.randn(n, 5 + NUM_CLASSES, generator=gen)
    raw[:, 2:4] = torch.log((torch.rand(n, 2, generator=gen) * 56 + 8) / stride)
    pred = torch.cat([(raw[:, :2] + grid) * stride, torch.exp(raw[:, 2:4]) * stride], 1)
    centres = torch.rand(num_gt, 2, generator=gen) * torch.tensor([INPUT_HW[1], INPUT_HW[0]])
    sizes = torch.rand(num_gt, 2, generator=gen) * 70 + 3
    if num_gt > 2:
        centres[1] = centres[0] + 3  # a heavily overlapping pair: anchors wanted by two GTs
        sizes[1] = sizes[0]
    gt = torch.cat([centres, sizes], 1)
    classes = torch.randint(0, NUM_CLASSES, (num_gt,), generator=gen)
    return pred, raw[:, 4], raw[:, 5:], grid, stride[:, 0], gt, classes


def _assign(scene, cfg=SIMOTA_V030):
    pred, obj, cls, grid, stride, gt, classes = scene
    return simota_assign(pred, obj, cls, (grid + 0.5) * stride[:, None], stride, gt, classes, cfg)


@pytest.mark.parametrize(("seed", "num_gt"), [(0, 1), (1, 3), (2, 8), (3, 20), (4, 40)])
def test_matches_megvii_get_assignments(seed: int, num_gt: int, megvii) -> None:
    from yolox.models import YOLOXHead

    scene = _scene(seed, num_gt)
    pred, obj, cls, grid, stride, gt, classes = scene
    head = YOLOXHead(NUM_CLASSES, width=0.25)
    n = pred.shape[0]
    ref = head.get_assignments(
        0, num_gt, n, gt, classes.float(), pred, stride[None], grid[None, :, 0], grid[None, :, 1],
        cls[None], pred[None], obj[None, :, None], None, None,
    )  # fmt: skip
    ref_classes, ref_fg, ref_ious, ref_gt_inds, ref_num_fg = ref
    ours = _assign(scene)
    assert torch.equal(ours.fg_mask, ref_fg)
    assert int(ours.fg_mask.sum()) == ref_num_fg
    assert torch.equal(ours.matched_gt, ref_gt_inds)
    assert torch.equal(classes[ours.matched_gt].float(), ref_classes)
    torch.testing.assert_close(ours.matched_iou, ref_ious)


@pytest.mark.parametrize("cfg", [SIMOTA_V030, SIMOTA_CENTER], ids=lambda c: c.name)
@pytest.mark.parametrize("seed", range(6))
def test_invariants(cfg, seed: int) -> None:
    scene = _scene(100 + seed, num_gt=1 + 5 * seed)
    pred, obj, cls, grid, stride, gt, classes = scene
    centres = (grid + 0.5) * stride[:, None]
    a = _assign(scene, cfg)
    candidates, geometry = candidate_masks(centres, stride, gt, cfg)
    fg_idx = a.fg_mask.nonzero()[:, 0]
    assert len(fg_idx) == len(a.matched_gt) == len(a.matched_iou)
    # Every positive is a candidate, i.e. inside some GT's candidate region.
    assert candidates[fg_idx].all()
    # Dynamic k: 1 <= k <= 10, and a GT never keeps more than k positives.
    assert ((a.dynamic_k >= 1) & (a.dynamic_k <= 10)).all()
    per_gt = torch.bincount(a.matched_gt, minlength=len(gt))
    assert (per_gt <= a.dynamic_k).all()
    # A positive outside its own GT's region only when that GT has fewer region anchors than it wanted.
    in_own = geometry[a.matched_gt, fg_idx]
    region_size = (geometry & candidates[None]).sum(dim=1)
    for g in a.matched_gt[~in_own].unique():
        assert region_size[g] < a.dynamic_k[g]
    # Soft targets are IoUs.
    assert ((a.matched_iou >= 0) & (a.matched_iou <= 1)).all()


def test_centre_variant_uses_radius_one_and_a_half() -> None:
    stride = torch.tensor([8.0, 8.0, 8.0])
    centres = torch.tensor([[4.0, 4.0], [15.0, 4.0], [17.0, 4.0]])  # 0, 11 and 13 px right of the GT centre
    gt = torch.tensor([[4.0, 4.0, 100.0, 100.0]])
    cand_030, geom_030 = candidate_masks(centres, stride, gt, SIMOTA_V030)
    cand_ctr, geom_ctr = candidate_masks(centres, stride, gt, SIMOTA_CENTER)
    assert cand_030.tolist() == [True, True, True]  # all inside the big box
    assert geom_030[0].tolist() == [True, True, True]  # 13 < 2.5 * 8
    assert cand_ctr.tolist() == [True, True, False]  # 13 > 1.5 * 8 = 12
    assert geom_ctr[0].tolist() == [True, True, False]


def test_gt_far_from_every_anchor_gives_no_positives() -> None:
    pred, obj, cls, grid, stride, _, _ = _scene(7, 1)
    gt = torch.tensor([[-500.0, -500.0, 4.0, 4.0]])
    a = simota_assign(pred, obj, cls, (grid + 0.5) * stride[:, None], stride, gt, torch.tensor([0]))
    assert not a.fg_mask.any() and len(a.matched_gt) == 0


def test_a_perfect_prediction_becomes_positive() -> None:
    pred, obj, cls, grid, stride, _, _ = _scene(8, 1)
    gt = torch.tensor([[52.0, 44.0, 30.0, 20.0]])
    k = 5 * (INPUT_HW[1] // 8) + 6  # the stride-8 cell whose centre (52, 44) is the GT centre
    pred[k] = gt[0]
    obj[k], cls[k] = 8.0, torch.tensor([-8.0, 8.0, -8.0, -8.0])
    centres = (grid + 0.5) * stride[:, None]
    assert centres[k].tolist() == [52.0, 44.0]
    a = simota_assign(pred, obj, cls, centres, stride, gt, torch.tensor([1]))
    assert a.fg_mask[k]
    assert a.matched_iou[a.fg_mask.nonzero()[:, 0] == k].item() == pytest.approx(1.0)
