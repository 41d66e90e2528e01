"""The device-side half of preprocessing for training and evaluation batches (used by ``model.train`` and
``model.evaluate``, so it lives below both).

Loaders deliver letterboxed uint8 BGR ``[B, 3, H, W]``; the preset's ``InputConvention`` (channel order, mean/std)
is applied here, on the device, so the same loader serves Megvii (BGR, 0..255) and EasyCV (RGB, ImageNet) presets.
"""

from __future__ import annotations

import torch
from torch import Tensor

from model.config import InputConvention


def to_network_batch(
    images_uint8_bgr: Tensor, convention: InputConvention, dtype: torch.dtype = torch.float32
) -> Tensor:
    """uint8 BGR ``[B, 3, H, W]`` -> float network input in the convention's channel order and scale."""
    if images_uint8_bgr.dim() != 4 or images_uint8_bgr.shape[1] != 3:
        raise ValueError(f"expected images [B, 3, H, W], got {tuple(images_uint8_bgr.shape)}")
    x = images_uint8_bgr.to(dtype)
    if convention.channel_order == "rgb":
        x = x.flip(1)
    if convention.mean != (0.0, 0.0, 0.0) or convention.std != (1.0, 1.0, 1.0):
        mean = torch.tensor(convention.mean, dtype=dtype, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(convention.std, dtype=dtype, device=x.device).view(1, 3, 1, 1)
        x = (x - mean) / std
    return x


def to_device(tensor: Tensor, device: torch.device) -> Tensor:
    """Copy to ``device`` without blocking when the source is pinned (CUDA)."""
    return tensor.to(device, non_blocking=device.type == "cuda")
