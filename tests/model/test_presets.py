"""Every preset builds, runs forward at small and full size, and honours the forward contract."""

from __future__ import annotations

import pytest
import torch

from model.config import EASYCV, MEGVII, VARIANTS, get_config
from model.yolox import build_model

PRESETS = list(VARIANTS)


def n_anchors(h: int, w: int) -> int:
    return sum((h // s) * (w // s) for s in (8, 16, 32))


@pytest.mark.parametrize("name", PRESETS)
def test_forward_small_and_full_size(name: str) -> None:
    model = build_model(name, num_classes=7).eval()
    with torch.no_grad():
        small = model(torch.rand(3, 3, 64, 96) * 255)
        full_hw = model.cfg.input_hw
        full = model(torch.rand(1, 3, *full_hw) * 255)
    assert small.shape == (3, n_anchors(64, 96), 12)
    assert full.shape == (1, n_anchors(*full_hw), 12)
    assert torch.isfinite(full).all()
    assert ((full[..., 4:] >= 0) & (full[..., 4:] <= 1)).all()  # scores are probabilities


def test_anchor_counts_match_reference() -> None:
    assert n_anchors(640, 640) == 8400 and n_anchors(416, 416) == 3549


def test_forward_modes() -> None:
    model = build_model("yolox-nano", num_classes=3)
    x = torch.rand(2, 3, 96, 128) * 255
    model.train()
    logits = model(x)
    model.eval()
    with torch.no_grad():
        raw = model(x, decode=False)
        decoded = model(x)
    assert logits.shape == raw.shape == decoded.shape == (2, n_anchors(96, 128), 8)
    # raw = sigmoid of the logits' scores; decoded boxes = (t + grid) * stride, exp(t) * stride.
    stride8 = raw[:, 0]  # first anchor: grid (0, 0), stride 8
    assert torch.allclose(decoded[:, 0, :2], stride8[:, :2] * 8, atol=1e-5)
    assert torch.allclose(decoded[:, 0, 2:4], stride8[:, 2:4].exp() * 8, atol=1e-4)
    # Anchor k = y * W + x within level 0 (W = 128 / 8 = 16): anchor 17 is cell (x=1, y=1).
    assert torch.allclose(decoded[:, 17, :2], (raw[:, 17, :2] + 1) * 8, atol=1e-4)
    assert torch.equal(decoded[..., 4:], raw[..., 4:])


def test_presets_carry_input_conventions() -> None:
    for name, cfg in VARIANTS.items():
        expected = EASYCV if name.startswith("yolox-pai") else MEGVII
        assert cfg.convention == expected, name
    assert VARIANTS["yolox-nano"].input_hw == (416, 416) and VARIANTS["yolox-s"].input_hw == (640, 640)
    assert MEGVII.channel_order == "bgr" and MEGVII.mean == (0.0, 0.0, 0.0)
    assert EASYCV.channel_order == "rgb" and EASYCV.std == (58.395, 57.12, 57.375)


@pytest.mark.parametrize(
    "overrides",
    [
        dict(neck="gsconv", neck_mode="all"),
        dict(neck="gsconv", neck_mode="part"),
        dict(fusion="asff_sim"),
        dict(head="tood", tood_stacked_convs=2),
        dict(head_conv_type="repconv"),
        dict(head_conv_type="dwconv", act="relu"),
        dict(act="lrelu"),
    ],
)
def test_pai_option_overrides_run(overrides: dict) -> None:
    model = build_model("yolox-pai-s", num_classes=4, width=0.25, **overrides).eval()
    with torch.no_grad():
        out = model(torch.rand(1, 3, 64, 64) * 255)
    assert out.shape == (1, n_anchors(64, 64), 9) and torch.isfinite(out).all()


@pytest.mark.parametrize("base", ["yolox-m", "yolox-l"])
def test_repvgg_for_m_and_l_uses_reference_widths(base: str) -> None:
    from model.repvgg import repvgg_layout

    cfg = get_config(base, backbone="repvgg")
    channels, repeats = repvgg_layout(cfg.depth, cfg.width)
    assert channels == {"yolox-m": [48, 96, 192, 384, 768], "yolox-l": [64, 128, 256, 512, 1024]}[base]
    assert repeats[1:] == {"yolox-m": [4, 8, 12, 4], "yolox-l": [6, 12, 18, 6]}[base]
    model = build_model(base, num_classes=2, backbone="repvgg").eval()
    assert model.backbone.backbone.out_channels == tuple(int(c * cfg.width) for c in (256, 512, 1024))


def test_invalid_configs_are_rejected() -> None:
    with pytest.raises(ValueError, match="multiples of 32"):
        get_config("yolox-s", input_hw=(100, 100))
    with pytest.raises(ValueError, match="neck"):
        get_config("yolox-s", neck="bifpn")
    with pytest.raises(KeyError, match="unknown preset"):
        get_config("yolox-q")
