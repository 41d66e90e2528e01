"""Shared helpers for model tests: randomised weights that make fusion and parity checks non-trivial."""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BN/GN non-trivial statistics and affine params so folding them is really exercised."""
    gen = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            n = module.num_features
            module.running_mean.copy_(torch.randn(n, generator=gen) * 0.1)
            module.running_var.copy_(torch.rand(n, generator=gen) * 0.5 + 0.5)
            module.weight.copy_(torch.rand(n, generator=gen) * 0.5 + 0.75)
            module.bias.copy_(torch.randn(n, generator=gen) * 0.1)
        elif isinstance(module, nn.GroupNorm):
            module.weight.copy_(torch.rand(module.num_channels, generator=gen) * 0.5 + 0.75)
            module.bias.copy_(torch.randn(module.num_channels, generator=gen) * 0.1)
    return model


def random_state_dict(model: nn.Module, seed: int = 0) -> dict[str, torch.Tensor]:
    """A full random state dict in ``model``'s key layout (BN variances positive)."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for key, value in model.state_dict().items():
        if not value.is_floating_point():
            out[key] = value.clone()
        elif key.endswith("running_var"):
            out[key] = torch.rand(value.shape, generator=gen) * 0.5 + 0.5
        else:
            out[key] = torch.randn(value.shape, generator=gen) * 0.05
    return out
