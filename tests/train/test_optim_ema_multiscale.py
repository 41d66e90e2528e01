"""LR schedule and EMA against Megvii 0.3.0; parameter groups; multiscale sizes and batch resize."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from model.train.ema import ModelEMA
from model.train.multiscale import MultiscalePolicy, multiscale_sizes_32, resize_batch
from model.train.optim import WarmCosSchedule, build_optimizer, parameter_groups
from model.yolox import build_model


@pytest.mark.parametrize(("epochs", "warmup", "no_aug"), [(300, 5, 15), (12, 2, 3), (5, 1, 0)])
def test_schedule_matches_megvii_yoloxwarmcos(epochs: int, warmup: int, no_aug: int, megvii) -> None:
    from yolox.utils.lr_scheduler import LRScheduler

    iters, base_lr = 7, 0.01 * 16 / 64
    ref = LRScheduler("yoloxwarmcos", base_lr, iters, epochs, warmup_epochs=warmup, warmup_lr_start=0,
                      no_aug_epochs=no_aug, min_lr_ratio=0.05)  # fmt: skip
    ours = WarmCosSchedule(base_lr, iters, epochs, warmup, no_aug, 0.05)
    for it in range(iters * epochs + 1):
        assert ours.lr_at(it) == pytest.approx(ref.update_lr(it), rel=1e-12, abs=1e-15), it


def test_schedule_shape() -> None:
    s = WarmCosSchedule(0.01, 10, 20, warmup_epochs=2, no_aug_epochs=4)
    assert s.lr_at(0) == 0.0
    assert s.lr_at(10) == pytest.approx(0.01 * 0.25)  # quadratic warm-up: half way -> a quarter
    assert s.lr_at(20) == pytest.approx(0.01)
    assert s.lr_at(160) == s.lr_at(199) == pytest.approx(0.0005)  # flat 0.05 x lr in the no-aug phase
    # No warm-up (Megvii divides by zero here): start at the base lr.
    assert WarmCosSchedule(0.01, 10, 20, warmup_epochs=0, no_aug_epochs=0).lr_at(0) == pytest.approx(0.01)


def test_parameter_groups_decay_only_conv_weights() -> None:
    model = build_model("yolox-pai-s-asff-tood3", num_classes=3, width=0.125)
    norm_w, weights, biases = parameter_groups(model)
    ids = [id(p) for p in norm_w + weights + biases]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))
    convs = [m.weight for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert {id(p) for p in weights} == {id(p) for p in convs}
    norms = (nn.BatchNorm2d, nn.GroupNorm)
    assert {id(p) for p in norm_w} == {id(m.weight) for m in model.modules() if isinstance(m, norms)}
    opt = build_optimizer(model, weight_decay=5e-4)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.0, 5e-4, 0.0]
    assert all(g["nesterov"] and g["momentum"] == 0.9 for g in opt.param_groups)
    assert [g["weight_decay"] for g in build_optimizer(model, weight_decay_all=True).param_groups] == [5e-4] * 3


def test_ema_matches_megvii_model_ema(megvii) -> None:
    from yolox.utils.ema import ModelEMA as MegviiEMA

    torch.manual_seed(0)
    model = build_model("yolox-nano", num_classes=2, input_hw=(64, 64)).train()
    ours, ref = ModelEMA(model, 0.9998), MegviiEMA(copy.deepcopy(model), 0.9998)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(3):
        model(torch.rand(2, 3, 64, 64) * 255).square().mean().backward()  # moves weights and BN stats
        opt.step()
        opt.zero_grad()
        ours.update(model)
        ref.update(model)
    assert ours.updates == ref.updates == 3
    ref_state = ref.ema.state_dict()
    for key, value in ours.state_dict().items():
        if value.is_floating_point():
            torch.testing.assert_close(value, ref_state[key], rtol=1e-6, atol=1e-7)
    assert ours.decay(2000) == pytest.approx(0.9998 * (1 - torch.e**-1))
    assert not any(p.requires_grad for p in ours.module.parameters())


def test_multiscale_sizes() -> None:
    assert multiscale_sizes_32("yolox-s", (640, 640), 5, None) == (15, 25)
    assert multiscale_sizes_32("yolox-nano", (416, 416), 5, None) == (10, 20)  # Megvii's nano/tiny exps
    assert multiscale_sizes_32("yolox-nano", (256, 256), 2, None) == (6, 10)  # other sizes: the range rule
    assert multiscale_sizes_32("yolox-s", (640, 640), 0, None) is None
    assert multiscale_sizes_32("yolox-s", (640, 640), 5, (3, 4)) == (3, 4)
    policy = MultiscalePolicy((640, 480), 10, (15, 25), seed=1)
    assert all(policy.draw(i) == (640, 480) for i in range(10))  # first block keeps the base size
    drawn = {policy.draw(i) for i in range(10, 2000, 10)}
    assert all(h % 32 == 0 and 480 <= h <= 800 and w == 32 * int(h / 32 * 0.75) for h, w in drawn)
    assert len(drawn) > 5
    assert policy.draw(25) == policy.draw(29) == MultiscalePolicy((640, 480), 10, (15, 25), seed=1).draw(20)
    assert MultiscalePolicy((640, 640), 10, None).draw(100) == (640, 640)


def test_resize_batch_scales_targets() -> None:
    images = torch.zeros(1, 3, 64, 96)
    images[:, :, 16:48, 24:72] = 255.0  # a box centred at (48, 32), 48 x 32
    targets = torch.tensor([[[2.0, 48.0, 32.0, 48.0, 32.0], [0.0, 0.0, 0.0, 0.0, 0.0]]])
    out, t = resize_batch(images, targets, (128, 96))
    assert out.shape == (1, 3, 128, 96)
    assert t[0, 0].tolist() == [2.0, 48.0, 64.0, 48.0, 64.0]
    assert t[0, 1].abs().sum() == 0  # padding stays padding
    ys, xs = (out[0, 0] > 128).nonzero(as_tuple=True)
    assert (ys.float().mean().item(), xs.float().mean().item()) == pytest.approx((63.5, 47.5), abs=0.6)
