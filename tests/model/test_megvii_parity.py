"""Numerical parity with Megvii's own YOLOX 0.3.0 (fetched from PyPI by ``tests/reference/megvii.py``)."""

from __future__ import annotations

import pytest
import torch

from model.yolox import build_model
from tests.model.helpers import random_state_dict
from tests.reference.megvii import ReferenceUnavailable, build_megvii_model

SIZES = {"yolox-nano": (0.33, 0.25, True), "yolox-tiny": (0.33, 0.375, False), "yolox-s": (0.33, 0.50, False)}


@pytest.fixture(scope="module")
def megvii_available() -> None:
    try:
        build_megvii_model(0.33, 0.25, True, num_classes=2)
    except ReferenceUnavailable as exc:
        pytest.skip(f"Megvii reference unavailable: {exc}")


@pytest.mark.parametrize("name", list(SIZES))
def test_same_weights_same_outputs(name: str, megvii_available: None) -> None:
    depth, width, depthwise = SIZES[name]
    ours = build_model(name, num_classes=80).eval()
    ref = build_megvii_model(depth, width, depthwise, num_classes=80).eval()
    state = random_state_dict(ours, seed=3)
    ours.load_state_dict(state, strict=True)
    ref.load_state_dict(state, strict=True)  # same key layout: loads strictly into Megvii's module too
    x = torch.rand(2, 3, 224, 288) * 255  # non-square, batch 2
    with torch.no_grad():
        decoded, decoded_ref = ours(x), ref(x)
        ref.head.decode_in_inference = False
        raw, raw_ref = ours(x, decode=False), ref(x)
    assert decoded.shape == decoded_ref.shape
    assert (decoded - decoded_ref).abs().max().item() <= 1e-4
    assert (raw - raw_ref).abs().max().item() <= 1e-4


def test_fresh_init_matches_megvii_conventions(megvii_available: None) -> None:
    ours = build_model("yolox-s")
    ref = build_megvii_model(0.33, 0.50, False)
    for (name, a), (_, b) in zip(ours.named_modules(), ref.named_modules(), strict=False):
        if isinstance(a, torch.nn.BatchNorm2d):
            assert (a.eps, a.momentum) == (b.eps, b.momentum) == (1e-3, 0.03), name
    ours_sd, ref_sd = ours.state_dict(), ref.state_dict()
    for key in ("head.cls_preds.0.bias", "head.obj_preds.2.bias"):
        assert torch.allclose(ours_sd[key], ref_sd[key])
        assert torch.allclose(ours_sd[key], torch.tensor(-4.59512), atol=1e-4)
