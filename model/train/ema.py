"""Exponential moving average of a model's weights with YOLOX's ramp (``yolox.md`` §4.4).

``decay(u) = 0.9998 * (1 - exp(-u / 2000))`` after ``u`` updates; every floating-point state entry is averaged
(BatchNorm running statistics included), integer buffers are copied. The EMA model is what evaluation, ``best``
checkpoints and export use.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DDP / DataParallel wrapper."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel | nn.DataParallel) else model


class ModelEMA:
    """A frozen float copy of a model that trails the trained weights."""

    def __init__(self, model: nn.Module, decay: float = 0.9998, ramp_updates: float = 2000.0, updates: int = 0):
        self.module = copy.deepcopy(unwrap(model)).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay_max = decay
        self.ramp_updates = ramp_updates
        self.updates = updates

    def decay(self, updates: int) -> float:
        """Decay used at update number ``updates`` (1-based)."""
        return self.decay_max * (1.0 - math.exp(-updates / self.ramp_updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Blend the current weights of ``model`` in (call once after every optimizer step)."""
        self.updates += 1
        d = self.decay(self.updates)
        source = unwrap(model).state_dict()
        for key, ema_value in self.module.state_dict().items():
            value = source[key].detach()
            if ema_value.dtype.is_floating_point:
                ema_value.mul_(d).add_(value.to(ema_value.dtype), alpha=1.0 - d)
            else:
                ema_value.copy_(value)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The averaged weights."""
        return self.module.state_dict()

    def load_state_dict(self, state_dict: dict[str, torch.Tensor], updates: int) -> None:
        """Restore averaged weights and the update counter (resume)."""
        self.module.load_state_dict(state_dict)
        self.updates = int(updates)
