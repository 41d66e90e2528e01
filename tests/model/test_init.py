"""Initialisation per family, on the statistics of freshly built layers: Megvii's prior bias, EasyCV's PyTorch
defaults for the PAI heads, mmcv ``ConvModule`` init in TOOD; TOOD's norm options; VoVGSCSP always SiLU."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from model.config import VARIANTS
from model.gsconv import VoVGSCSP
from model.yolox import build_model

PRIOR_BIAS = -math.log((1 - 0.01) / 0.01)  # -4.59512
WIDTH = 0.25  # hidden 64 channels: small, and still divisible by 32 GroupNorm groups


def pred_biases(model: nn.Module) -> list[torch.Tensor]:
    head = model.head
    return [conv.bias.detach() for conv in (*head.cls_preds, *head.obj_preds)]


def assert_pytorch_default_conv(conv: nn.Conv2d) -> None:
    """``nn.Conv2d``'s own init: weight and bias uniform in +-1/sqrt(fan_in) (kaiming_uniform with a=sqrt(5))."""
    fan_in = conv.in_channels // conv.groups * conv.kernel_size[0] * conv.kernel_size[1]
    bound = 1 / math.sqrt(fan_in)
    assert float(conv.weight.abs().max()) <= bound
    assert float(conv.weight.std()) == pytest.approx(bound / math.sqrt(3), rel=0.25)  # std of U(-b, b)
    assert float(conv.bias.abs().max()) <= bound and float(conv.bias.std()) > 0


@pytest.mark.parametrize("name", [n for n in VARIANTS if not n.startswith("yolox-pai")])
def test_megvii_presets_start_cls_and_obj_at_the_prior(name: str) -> None:
    cfg = VARIANTS[name]
    assert cfg.prior_prob == 0.01 and cfg.iou_loss == "iou"
    model = build_model(name, num_classes=3, width=WIDTH)
    for bias in pred_biases(model):
        torch.testing.assert_close(bias, torch.full_like(bias, PRIOR_BIAS))


@pytest.mark.parametrize("name", [n for n in VARIANTS if n.startswith("yolox-pai")])
def test_pai_presets_keep_pytorch_default_biases(name: str) -> None:
    cfg = VARIANTS[name]
    assert cfg.prior_prob is None and cfg.iou_loss == "giou-easycv"
    torch.manual_seed(0)
    model = build_model(name, num_classes=20, width=WIDTH).requires_grad_(False)
    for conv in (*model.head.cls_preds, *model.head.obj_preds, *model.head.reg_preds):
        fan_in = conv.in_channels
        assert float(conv.bias.abs().max()) <= 1 / math.sqrt(fan_in)
    cls_biases = torch.cat([b for b in pred_biases(model)[:3]])
    assert float(cls_biases.std()) > 0.01 and abs(float(cls_biases.mean())) < 0.1  # not a constant prior


def tood_model(**overrides) -> nn.Module:
    torch.manual_seed(0)
    return build_model("yolox-pai-s-asff-tood3", num_classes=3, width=WIDTH, **overrides).requires_grad_(False)


def test_tood_convmodules_are_kaiming_normal_fan_out_relu() -> None:
    head = tood_model().head
    hidden = int(256 * WIDTH)
    convs = [m.conv for m in head.inter_convs] + [d.reduction_conv.conv for d in (*head.cls_decomps,
                                                                                 *head.reg_decomps)]  # fmt: skip
    for conv in convs:
        fan_out = conv.out_channels * conv.kernel_size[0] * conv.kernel_size[1]
        expected_std = math.sqrt(2.0 / fan_out)  # gain sqrt(2) for ReLU
        assert conv.out_channels == hidden and conv.bias is None  # with a norm, ConvModule has no conv bias
        assert float(conv.weight.std()) == pytest.approx(expected_std, rel=0.05)
        assert abs(float(conv.weight.mean())) < 0.05 * expected_std
        # normal, not uniform: about 4.5 % of a normal's samples lie beyond 2 std (none of a bounded uniform's)
        tail = float((conv.weight.abs() > 2 * expected_std).float().mean())
        assert 0.03 < tail < 0.06
    for module in (*head.inter_convs, head.cls_decomps[0].reduction_conv):
        assert isinstance(module.gn, nn.GroupNorm) and module.gn.num_groups == 32
        assert torch.equal(module.gn.weight, torch.ones(hidden)) and torch.equal(module.gn.bias, torch.zeros(hidden))


def test_tood_layer_attention_keeps_pytorch_defaults() -> None:
    head = tood_model(tood_la_down_rate=4).head  # hidden width 64*3 / 12 = 16: enough samples for a std
    for decomp in (*head.cls_decomps, *head.reg_decomps):
        first, second = decomp.layer_attention[0], decomp.layer_attention[2]
        assert_pytorch_default_conv(first)
        fan_in = second.in_channels
        assert float(second.weight.abs().max()) <= 1 / math.sqrt(fan_in)
        assert float(second.weight.std()) > 0.01  # far above TOOD's own normal(0.001), which EasyCV never runs


@pytest.mark.parametrize(("norm", "key", "layer"), [("bn", "bn", nn.BatchNorm2d), ("none", None, None)])
def test_tood_norm_options(norm: str, key: str | None, layer: type | None) -> None:
    model = tood_model(tood_norm=norm).eval()
    inter = model.head.inter_convs[0]
    keys = [k for k in model.state_dict() if k.startswith("head.inter_convs.0.")]
    if key is None:
        assert keys == ["head.inter_convs.0.conv.weight", "head.inter_convs.0.conv.bias"]
        assert torch.equal(inter.conv.bias, torch.zeros_like(inter.conv.bias))  # mmcv: bias 0
    else:
        assert isinstance(getattr(inter, key), layer) and getattr(inter, key).eps == 1e-3  # init_yolo's BN eps
        assert f"head.inter_convs.0.{key}.weight" in keys and "head.inter_convs.0.conv.bias" not in keys
    x = torch.rand(1, 3, 64, 64) * 255
    with torch.no_grad():
        before = model(x)
        if key is None:  # EasyCV's dynamic conv uses only the reduction conv's weight, never its bias
            model.head.cls_decomps[0].reduction_conv.conv.bias.fill_(5.0)
            torch.testing.assert_close(model(x), before)
    assert torch.isfinite(before).all()


def test_tood_group_count_must_divide_the_channels() -> None:
    with pytest.raises(ValueError, match="tood_gn_groups=24"):
        tood_model(tood_gn_groups=24)


def test_vovgscsp_is_silu_whatever_the_model_activation() -> None:
    model = build_model("yolox-pai-s", num_classes=3, width=WIDTH, neck="gsconv", neck_mode="all", act="relu")
    vov = [m for m in model.modules() if isinstance(m, VoVGSCSP)]
    assert len(vov) == 4
    for block in vov:
        acts = [m for m in block.modules() if isinstance(m, nn.SiLU | nn.ReLU)]
        assert acts and all(isinstance(a, nn.SiLU) for a in acts)
    assert isinstance(model.head.stems[0].act, nn.ReLU)  # the model's act still holds outside the GS blocks
