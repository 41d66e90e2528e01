"""Un-folding BatchNorm: give a conv that carries a folded BN back a real, trainable BN.

A deployed graph holds ``conv_f(x) = W_f * x + b_f`` where training had ``BN(W * x)``. The split is not unique;
the conv gets ``W = W_f / s`` (``s`` per output channel, chosen by the caller; 1 keeps the folded weight) and the BN
is chosen so that both modes behave:
- running statistics ``mu, var`` of ``y = W * x`` are measured on real images (what the conv output really is);
- ``gamma = s * sqrt(var + eps)``, ``beta = b_f + s * mu``, so eval mode gives
  ``(y - mu) / sqrt(var + eps) * gamma + beta = s * y + b_f = W_f * x + b_f``: the folded conv, up to rounding;
- in training mode the batch statistics replace ``mu, var``; on images like the calibration set they are close,
  so the output stays close to the folded conv instead of being re-centred and re-scaled from scratch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import Tensor, nn

from model.config import InputConvention
from model.letterbox import preprocess_image

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
DEFAULT_CALIBRATION_DIR = Path(__file__).resolve().parent / "assets" / "photos"
DEFAULT_MAX_IMAGES = 32


@dataclass(frozen=True)
class Calibration:
    """Where the statistics came from."""

    source: str
    images: int
    layers: int


def find_images(root: str | Path, limit: int = DEFAULT_MAX_IMAGES) -> list[Path]:
    """Up to ``limit`` image files under ``root`` (recursive, sorted, so a COCO root works as it is)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"calibration images: {root} is not a directory")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise FileNotFoundError(f"calibration images: no {'/'.join(IMAGE_SUFFIXES)} files under {root}")
    return files[:limit]


def letterboxed_images(files: list[Path], input_hw: tuple[int, int], convention: InputConvention) -> list[np.ndarray]:
    """Network inputs ``float32 [3, H, W]``, letterboxed as the serving path does, for the ``files`` that decode:
    an unreadable file is skipped (one bad file in a user's folder should not end a calibration), none is an error.
    The calibrations of both the BatchNorm statistics and INT8 read their images here."""
    inputs = []
    for path in files:
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is not None:
            inputs.append(preprocess_image(image, input_hw, convention)[0])
    if not inputs:
        raise FileNotFoundError(f"calibration images: none of {len(files)} files could be decoded")
    return inputs


def calibration_batches(
    files: list[Path], input_hw: tuple[int, int], convention: InputConvention, batch_size: int = 8
) -> list[Tensor]:
    """Letterboxed network inputs for ``files`` (unreadable files are skipped), in batches."""
    inputs = [torch.from_numpy(x) for x in letterboxed_images(files, input_hw, convention)]
    return [torch.stack(inputs[i : i + batch_size]) for i in range(0, len(inputs), batch_size)]


@torch.no_grad()
def set_passthrough(bn: nn.BatchNorm2d, folded_bias: Tensor, scale: Tensor | float = 1.0) -> None:
    """Eval-mode ``bn(y) = scale * y + folded_bias`` before any statistics are known."""
    bn.running_mean.zero_()
    bn.running_var.fill_(1.0 - bn.eps)
    bn.weight.copy_(torch.as_tensor(scale, dtype=bn.weight.dtype).expand_as(bn.weight))
    bn.bias.copy_(folded_bias)


@torch.no_grad()
def measure_statistics(model: nn.Module, bns: list[nn.BatchNorm2d], batches: list[Tensor]) -> list[tuple]:
    """Per-channel mean and unbiased variance of each BN's input over ``batches`` (eval mode, float64 sums)."""
    sums: dict[nn.Module, list] = {bn: [0.0, 0.0, 0] for bn in bns}

    def record(module: nn.Module, args: tuple) -> None:
        y = args[0].double()
        acc = sums[module]
        acc[0] = acc[0] + y.sum(dim=(0, 2, 3))
        acc[1] = acc[1] + (y * y).sum(dim=(0, 2, 3))
        acc[2] += y.numel() // y.shape[1]

    hooks = [bn.register_forward_pre_hook(record) for bn in bns]
    was_training = model.training
    model.eval()
    try:
        for batch in batches:
            model(batch)
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    stats = []
    for bn in bns:
        total, total_sq, n = sums[bn]
        mean = total / n
        var = (total_sq - n * mean * mean) / max(n - 1, 1)
        stats.append((mean, var.clamp(min=0.0)))
    return stats


@torch.no_grad()
def unfold_batchnorms(
    model: nn.Module,
    folded_bias: dict[nn.BatchNorm2d, Tensor],
    batches: list[Tensor],
    source: str,
    weight_scale: dict[nn.BatchNorm2d, Tensor] | None = None,
) -> Calibration:
    """Give every BN in ``folded_bias`` measured statistics and the affine that keeps eval output unchanged.

    The model's convs must already hold the folded weights divided by ``weight_scale`` (per output channel,
    default 1); ``folded_bias`` maps each BN to its conv's folded bias.
    """
    bns = list(folded_bias)
    scales = {bn: (weight_scale or {}).get(bn, torch.ones_like(bn.weight)).double() for bn in bns}
    for bn in bns:
        set_passthrough(bn, folded_bias[bn], scales[bn])
    stats = measure_statistics(model, bns, batches)
    for bn, (mean, var) in zip(bns, stats, strict=True):
        s = scales[bn]
        bn.running_mean.copy_(mean)
        bn.running_var.copy_(var)
        bn.weight.copy_(s * (var + bn.eps).sqrt())
        bn.bias.copy_(folded_bias[bn].double() + s * mean)
        bn.num_batches_tracked.zero_()
    return Calibration(source=source, images=sum(len(b) for b in batches), layers=len(bns))


def default_calibration_source() -> Path:
    """The photos shipped with the package (CC0 / public domain, see their NOTICE)."""
    return DEFAULT_CALIBRATION_DIR
