"""``Preprocess``: the scriptable letterbox + normalisation module (the bundle's ``preprocess`` artifact).

Matches :mod:`model.letterbox` (NumPy/OpenCV) to within one intensity level: same scale, floor sizes,
bilinear with half-pixel centres and no antialiasing (OpenCV ``INTER_LINEAR``), rounding to uint8 values,
top-left placement, pad then normalise.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from model.config import InputConvention


class Preprocess(nn.Module):
    """uint8 HWC images of any size -> letterboxed NCHW float batch plus the per-image scale ``r``.

    ``forward(images, channel_order)`` takes a list of ``[H, W, 3]`` uint8 tensors whose channels are in
    ``channel_order`` ("bgr" as OpenCV decodes, or "rgb"); boxes map back with ``boxes / r``.
    """

    def __init__(self, input_hw: tuple[int, int], convention: InputConvention) -> None:
        super().__init__()
        self.input_h = int(input_hw[0])
        self.input_w = int(input_hw[1])
        self.pad_value = float(convention.pad_value)
        self.network_order = convention.channel_order
        # Non-persistent buffers: they travel with the scripted module, not with state_dicts.
        self.register_buffer("mean", torch.tensor(convention.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(convention.std).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: list[Tensor], channel_order: str = "bgr") -> tuple[Tensor, Tensor]:
        """Return ``(batch [B, 3, H_in, W_in] float32, r [B] float32)``."""
        if channel_order != "bgr" and channel_order != "rgb":
            raise ValueError("channel_order must be 'bgr' or 'rgb'")
        device = self.mean.device
        batch = torch.full((len(images), 3, self.input_h, self.input_w), self.pad_value, device=device)
        scales: list[float] = []
        for i, image in enumerate(images):
            if image.dim() != 3 or image.shape[2] != 3:
                raise ValueError("each image must be a [H, W, 3] tensor")
            h, w = int(image.shape[0]), int(image.shape[1])
            r = min(self.input_h / h, self.input_w / w)
            new_h, new_w = max(int(h * r), 1), max(int(w * r), 1)
            x = image.to(device).permute(2, 0, 1).unsqueeze(0).float()
            if new_h != h or new_w != w:
                x = F.interpolate(x, size=(new_h, new_w), mode="bilinear", align_corners=False)
                x = x.round().clamp(0.0, 255.0)
            batch[i, :, :new_h, :new_w] = x[0]
            scales.append(r)
        if channel_order != self.network_order:
            batch = batch.flip(1)
        batch = (batch - self.mean) / self.std
        return batch, torch.tensor(scales, dtype=torch.float32, device=device)
