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


def calibration_batches(input_hw: tuple[int, int], seed: int) -> list[torch.Tensor]:
    """Three batches mixing uniform noise with smooth images of shapes (what the tests feed later)."""
    from model.config import MEGVII
    from model.export.parity import parity_images
    from model.letterbox import preprocess_image

    gen = torch.Generator().manual_seed(seed)
    scenes = [
        torch.from_numpy(preprocess_image(image, input_hw, MEGVII)[0])
        for offset in range(3)
        for image in parity_images(seed=seed + 100 + offset)
    ]
    batches = []
    for i in range(3):
        noise = torch.rand(1, 3, *input_hw, generator=gen) * 255
        batches.append(torch.cat([noise, torch.stack(scenes[3 * i : 3 * i + 3])]))
    return batches


@torch.no_grad()
def calibrated(model: nn.Module, input_hw: tuple[int, int] = (192, 256), seed: int = 0) -> nn.Module:
    """A random-weight model whose outputs vary like a trained one's: BN statistics recalibrated on random
    images, prediction convs rescaled so score logits have std ~2 and box logits std ~0.5 (no saturated, tied
    scores; no exploding boxes), score biases zeroed. Deterministic for a seed. Returns eval mode."""
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None  # cumulative average over the calibration batches
    model.train()
    images = calibration_batches(input_hw, seed)
    for batch in images:
        model(batch)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.momentum = 0.03
    model.eval()
    head = model.head
    targets = [(conv, 2.0) for conv in list(head.obj_preds) + list(head.cls_preds)]
    targets += [(conv, 0.5) for conv in head.reg_preds]
    for conv, _ in targets[: len(head.obj_preds) + len(head.cls_preds)]:
        conv.bias.zero_()
    stds: dict[nn.Module, float] = {}
    hooks = [
        conv.register_forward_hook(lambda mod, _i, out: stds.__setitem__(mod, float(out.std()))) for conv, _ in targets
    ]
    model(images[0])
    for hook in hooks:
        hook.remove()
    for conv, target in targets:
        conv.weight.mul_(target / max(stds[conv], 1e-6))
        if conv in head.reg_preds:
            conv.bias.zero_()
    return model
