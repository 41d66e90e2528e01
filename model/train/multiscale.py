"""Multiscale training (``yolox.md`` §4.4, ``yolox_pai.md`` §4): the loader yields ``input_hw`` batches; every
``interval`` iterations rank 0 draws a new size, broadcasts it, and each batch is brought to it on the device with
its targets scaled: Megvii resizes the batch (``resize_batch``); EasyCV's pipeline re-letterboxes each image
(``MMResize(keep_ratio)`` + ``MMPad``), which ``letterbox_batch`` reproduces. Every image leaves the loader at the
same ``input_hw``, so one keep-ratio scale serves the whole batch; it differs from the resize only when the drawn
size has another aspect ratio. Doing it here rather than in the loader keeps the size change at exactly the drawn
iteration on every rank (EasyCV's hook reaches its dataset workers only at the next epoch, ``yolox_pai.md`` §11 #15).
EasyCV resamples the augmented image once; this resamples the ``input_hw`` image (a second bilinear pass).

Sizes are ``32 * randint(lo, hi)`` for the height (inclusive) and keep the aspect ratio for the width. The first
block of ``interval`` iterations runs at ``input_hw`` (Megvii changes the size only after iteration 10). Rank 0
draws block ``b``'s size from a generator seeded with (seed, b), so a resumed run draws the same sizes.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from model.letterbox import letterbox_scale, resized_hw

# Megvii's nano/tiny exps fix ``random_size = (10, 20)`` (320..640) instead of input/32 +- range.
PRESET_SIZES_32 = {"yolox-nano": (10, 20), "yolox-tiny": (10, 20)}


@dataclass(frozen=True)
class MultiscalePolicy:
    """Base size, change interval and the (min, max) height in units of 32; ``sizes_32=None`` disables it."""

    input_hw: tuple[int, int]
    interval_iters: int = 10
    sizes_32: tuple[int, int] | None = None
    seed: int = 0
    letterbox: bool = False

    @property
    def enabled(self) -> bool:
        """True when the size can change."""
        return self.sizes_32 is not None and self.sizes_32[0] != self.sizes_32[1]

    def draw(self, iteration: int) -> tuple[int, int]:
        """The size rank 0 picks for the block holding ``iteration``."""
        block = iteration // self.interval_iters
        if not self.enabled or block == 0:
            return self.input_hw
        rng = random.Random(self.seed * 1_000_003 + block)
        return self.size_hw(rng.randint(*self.sizes_32))

    def size_hw(self, size_32: int) -> tuple[int, int]:
        """(H, W) for height ``32 * size_32``, the width keeping ``input_hw``'s aspect ratio."""
        aspect = self.input_hw[1] / self.input_hw[0]
        return 32 * size_32, 32 * int(size_32 * aspect)

    def drawn_sizes(self) -> list[tuple[int, int]]:
        """Every size ``draw`` may pick after the first block, each equally likely (``[input_hw]`` without)."""
        if not self.enabled:
            return [self.input_hw]
        return [self.size_hw(s) for s in range(self.sizes_32[0], self.sizes_32[1] + 1)]


def multiscale_sizes_32(
    arch: str, input_hw: tuple[int, int], multiscale_range: int, explicit: tuple[int, int] | None
) -> tuple[int, int] | None:
    """The (min, max) height / 32: explicit > preset table > ``H/32 -/+ range``; ``None`` when disabled.

    The preset table holds only at the preset's own 416 input (Megvii's exps): another size uses the range rule.
    """
    if explicit is not None:
        return explicit
    if multiscale_range <= 0:
        return None
    if arch in PRESET_SIZES_32 and tuple(input_hw) == (416, 416):
        return PRESET_SIZES_32[arch]
    base = input_hw[0] // 32
    return max(base - multiscale_range, 1), base + multiscale_range


def resize_batch(images: Tensor, targets: Tensor, size_hw: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """Bilinear-resize ``[B, 3, H, W]`` images to ``size_hw``; scale (class, cx, cy, w, h) targets to match."""
    h, w = images.shape[2], images.shape[3]
    if (h, w) == tuple(size_hw):
        return images, targets
    images = F.interpolate(images, size=size_hw, mode="bilinear", align_corners=False)
    scale = torch.tensor([1.0, size_hw[1] / w, size_hw[0] / h, size_hw[1] / w, size_hw[0] / h], device=targets.device)
    return images, targets * scale.to(targets.dtype)


def letterbox_batch(
    images: Tensor, targets: Tensor, size_hw: tuple[int, int], pad_value: float
) -> tuple[Tensor, Tensor]:
    """Letterbox ``[B, 3, H, W]`` images into ``size_hw`` (keep ratio ``r``, bilinear, top-left, ``pad_value``
    bottom/right) and scale (class, cx, cy, w, h) targets by ``r`` (``model.letterbox`` geometry)."""
    h, w = images.shape[2], images.shape[3]
    if (h, w) == tuple(size_hw):
        return images, targets
    r = letterbox_scale((h, w), size_hw)
    new_hw = resized_hw((h, w), r)
    resized = F.interpolate(images, size=new_hw, mode="bilinear", align_corners=False)
    canvas = resized.new_full((images.shape[0], images.shape[1], *size_hw), pad_value)
    canvas[:, :, : new_hw[0], : new_hw[1]] = resized
    scale = torch.tensor([1.0, r, r, r, r], device=targets.device, dtype=targets.dtype)
    return canvas, targets * scale


def rescale_batch(
    images: Tensor, targets: Tensor, size_hw: tuple[int, int], policy: MultiscalePolicy, pad_value: float
) -> tuple[Tensor, Tensor]:
    """Bring a batch of pixel-valued images (before normalisation) to ``size_hw`` the way ``policy`` says."""
    if policy.letterbox:
        return letterbox_batch(images, targets, size_hw, pad_value)
    return resize_batch(images, targets, size_hw)
