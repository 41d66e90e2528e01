"""``YoloxLoss``: parity with Megvii 0.3.0 ``get_losses`` (values and gradients), edge cases, one real step."""

from __future__ import annotations

import pytest
import torch

from model.config import get_config
from model.loss import YoloxLoss
from model.yolox import build_model, make_grids

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")  # the reference's deprecated autocast call

NUM_CLASSES = 3
INPUT_HW = (128, 160)


def _batch(seed: int, gts_per_image: tuple[int, ...]):
    gen = torch.Generator().manual_seed(seed)
    grid, stride = make_grids(INPUT_HW, (8, 16, 32), torch.device("cpu"), torch.float32)
    b, n = len(gts_per_image), grid.shape[0]
    raw = torch.randn(b, n, 5 + NUM_CLASSES, generator=gen) * 0.5
    raw[..., 2:4] = torch.log((torch.rand(b, n, 2, generator=gen) * 56 + 8) / stride)
    targets = torch.zeros(b, 30, 5)
    for i, g in enumerate(gts_per_image):
        targets[i, :g, 0] = torch.randint(0, NUM_CLASSES, (g,), generator=gen).float()
        targets[i, :g, 1:3] = torch.rand(g, 2, generator=gen) * torch.tensor([INPUT_HW[1], INPUT_HW[0]])
        targets[i, :g, 3:5] = torch.rand(g, 2, generator=gen) * 76 + 4
    return raw, targets, grid, stride


@pytest.mark.parametrize("kind", ["iou", "giou"])
@pytest.mark.parametrize("use_l1", [False, True])
def test_matches_megvii_get_losses(kind: str, use_l1: bool, megvii) -> None:
    from yolox.models import YOLOXHead

    raw, targets, grid, stride = _batch(0, (0, 2, 7, 16))
    head = YOLOXHead(NUM_CLASSES, width=0.25)
    head.use_l1 = use_l1
    head.iou_loss.loss_type = kind
    raw_ref = raw.clone().requires_grad_(True)
    decoded = torch.cat([(raw_ref[..., :2] + grid) * stride, torch.exp(raw_ref[..., 2:4]) * stride,
                         raw_ref[..., 4:]], -1)  # fmt: skip
    ref = head.get_losses(None, [grid[None, :, 0]], [grid[None, :, 1]], [stride[None, :, 0]], targets.clone(),
                          decoded, [raw_ref[..., :4]], torch.float32)  # fmt: skip
    ref[0].backward()

    raw_ours = raw.clone().requires_grad_(True)
    cfg = get_config("yolox-nano", num_classes=NUM_CLASSES)
    ours = YoloxLoss(cfg, iou_loss=kind)(raw_ours, targets, INPUT_HW, use_l1=use_l1)
    ours["total"].backward()
    for key, value in zip(("total", "iou", "obj", "cls", "l1"), ref[:5], strict=True):
        torch.testing.assert_close(ours[key], torch.as_tensor(value, dtype=torch.float32), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(raw_ours.grad, raw_ref.grad, rtol=1e-4, atol=1e-7)
    assert ours["num_fg"].item() > 0


def test_terms_add_up_and_preset_picks_the_loss() -> None:
    raw, targets, _, _ = _batch(1, (3, 5))
    out = YoloxLoss(get_config("yolox-pai-s", num_classes=NUM_CLASSES))(raw, targets, INPUT_HW, use_l1=True)
    total = out["iou"] + out["obj"] + out["cls"] + out["l1"]
    torch.testing.assert_close(out["total"], total)
    assert YoloxLoss(get_config("yolox-pai-s", num_classes=NUM_CLASSES)).iou_loss == "giou-easycv"
    assert YoloxLoss(get_config("yolox-s", num_classes=NUM_CLASSES)).iou_loss == "iou"


def test_batch_without_boxes_trains_objectness_only() -> None:
    raw, _, _, _ = _batch(2, (0, 0))
    raw.requires_grad_(True)
    out = YoloxLoss(get_config("yolox-s", num_classes=NUM_CLASSES))(raw, torch.zeros(2, 30, 5), INPUT_HW, True)
    assert out["num_fg"].item() == 0
    assert out["iou"].item() == 0 and out["cls"].item() == 0 and out["l1"].item() == 0
    assert out["obj"].item() > 0
    out["total"].backward()
    assert torch.isfinite(raw.grad).all()
    assert raw.grad[..., 4].abs().sum() > 0 and raw.grad[..., :4].abs().sum() == 0


def test_rejects_mismatched_shapes() -> None:
    loss = YoloxLoss(get_config("yolox-s", num_classes=NUM_CLASSES))
    raw, targets, _, _ = _batch(3, (1,))
    with pytest.raises(ValueError, match="channels"):
        loss(raw[..., :-1], targets, INPUT_HW)
    with pytest.raises(ValueError, match="anchors"):
        loss(raw, targets, (128, 128))
    with pytest.raises(ValueError, match="targets"):
        loss(raw, targets[..., :4], INPUT_HW)


@pytest.mark.parametrize("name", ["yolox-nano", "yolox-pai-s-asff-tood3"])
def test_one_training_step_has_finite_losses_and_gradients(name: str) -> None:
    torch.manual_seed(0)
    overrides = {"width": 0.125} if name != "yolox-nano" else {}
    model = build_model(name, num_classes=NUM_CLASSES, input_hw=(64, 96), **overrides).train()
    images = torch.rand(2, 3, 64, 96) * 255
    targets = torch.zeros(2, 10, 5)
    targets[0, :2] = torch.tensor([[0, 30, 20, 24, 16], [2, 70, 40, 30, 30]])
    targets[1, :1] = torch.tensor([[1, 48, 32, 40, 50]])
    out = YoloxLoss(model.cfg, iou_loss="siou")(model(images), targets, (64, 96), use_l1=True)
    assert all(torch.isfinite(v).all() for v in out.values())
    assert out["num_fg"].item() >= 3  # every GT got at least one positive
    out["total"].backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(g.abs().sum() for g in grads) > 0
