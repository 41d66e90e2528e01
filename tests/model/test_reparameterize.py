"""Deploy form: fusing RepVGG branches and conv+BN leaves outputs unchanged (1e-4 relative)."""

from __future__ import annotations

import pytest
import torch

from model.config import VARIANTS
from model.fuse import is_reparameterized, reparameterize
from model.repvgg import RepVGGBlock
from model.yolox import build_model
from tests.model.helpers import randomize

CASES = [(name, {}) for name in VARIANTS] + [
    ("yolox-pai-s", dict(neck="gsconv", neck_mode="all", head_conv_type="repconv")),
    ("yolox-pai-s", dict(fusion="asff_sim", head="tood")),
    ("yolox-m", dict(backbone="repvgg", width=0.25)),
]


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


@pytest.mark.parametrize("name,overrides", CASES)
def test_fused_outputs_match(name: str, overrides: dict) -> None:
    model = randomize(build_model(name, num_classes=6, **overrides)).eval()
    x = torch.rand(2, 3, 96, 128) * 255
    with torch.no_grad():  # raw outputs: random weights can push exp(tw) to inf in decoded boxes
        before = model(x, decode=False)
        reparameterize(model)
        after = model(x, decode=False)
    assert is_reparameterized(model)
    assert torch.isfinite(before).all()
    assert relative_error(after[..., :4], before[..., :4]) <= 1e-4
    assert (after[..., 4:] - before[..., 4:]).abs().max().item() <= 1e-4


def test_repvgg_block_fuse_is_exact_and_drops_branches() -> None:
    block = randomize(RepVGGBlock(16, 16)).eval()
    x = torch.randn(2, 16, 20, 24)
    with torch.no_grad():
        before = block(x)
        block.fuse()
        after = block(x)
    assert not hasattr(block, "rbr_dense") and block.rbr_identity is None
    assert set(block.state_dict()) == {"rbr_reparam.weight", "rbr_reparam.bias"}
    assert torch.allclose(before, after, atol=1e-5, rtol=1e-5)


def test_reparameterize_reduces_parameters_for_pai() -> None:
    model = build_model("yolox-pai-s")
    before = sum(p.numel() for p in model.parameters())
    reparameterize(model)
    after = sum(p.numel() for p in model.parameters())
    assert round(before / 1e6, 2) == 17.09 and after < before
