"""SGD with YOLOX's three parameter groups and the ``yoloxwarmcos`` learning-rate schedule (``yolox.md`` §4.4).

Groups: norm-layer weights (no decay), conv/linear weights (decay), all biases (no decay). The schedule is a pure
function of the global iteration; the loop sets the lr before each step, so step ``i`` runs at ``lr_at(i)``
(Megvii starts at ``warmup_lr`` and sets ``lr_at(i + 1)`` after step ``i``: the same sequence).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

_NORMS = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm, nn.modules.instancenorm._InstanceNorm)


def parameter_groups(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter], list[nn.Parameter]]:
    """(norm weights, conv/linear weights, biases), each parameter exactly once."""
    norm_weights, weights, biases = [], [], []
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if name == "bias":
                biases.append(param)
            elif isinstance(module, _NORMS):
                norm_weights.append(param)
            else:
                weights.append(param)
    return norm_weights, weights, biases


def build_optimizer(
    model: nn.Module, momentum: float = 0.9, weight_decay: float = 5e-4, weight_decay_all: bool = False
) -> torch.optim.SGD:
    """Nesterov SGD; ``weight_decay`` on conv/linear weights only unless ``weight_decay_all`` (EasyCV)."""
    norm_weights, weights, biases = parameter_groups(model)
    other_decay = weight_decay if weight_decay_all else 0.0
    groups = [
        {"params": norm_weights, "weight_decay": other_decay, "name": "norm_weights"},
        {"params": weights, "weight_decay": weight_decay, "name": "weights"},
        {"params": biases, "weight_decay": other_decay, "name": "biases"},
    ]
    # lr is set by the schedule before every step; 0.0 here is Megvii's warmup_lr.
    return torch.optim.SGD(groups, lr=0.0, momentum=momentum, nesterov=True)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Write ``lr`` into every parameter group."""
    for group in optimizer.param_groups:
        group["lr"] = lr


@dataclass(frozen=True)
class WarmCosSchedule:
    """Megvii ``yoloxwarmcos``: quadratic warm-up, cosine to ``min_lr_ratio * base_lr``, flat in the no-aug phase."""

    base_lr: float
    iters_per_epoch: int
    total_epochs: int
    warmup_epochs: float = 5
    no_aug_epochs: int = 15
    min_lr_ratio: float = 0.05
    warmup_lr_start: float = 0.0

    @property
    def total_iters(self) -> int:
        """Iterations of the whole run."""
        return self.iters_per_epoch * self.total_epochs

    def lr_at(self, iteration: int) -> float:
        """Learning rate of global iteration ``iteration`` (0-based)."""
        warmup_iters = self.iters_per_epoch * self.warmup_epochs
        no_aug_iters = self.iters_per_epoch * self.no_aug_epochs
        min_lr = self.base_lr * self.min_lr_ratio
        if iteration <= warmup_iters:
            if warmup_iters == 0:
                return self.base_lr
            return (self.base_lr - self.warmup_lr_start) * (iteration / warmup_iters) ** 2 + self.warmup_lr_start
        if iteration >= self.total_iters - no_aug_iters:
            return min_lr
        progress = (iteration - warmup_iters) / (self.total_iters - warmup_iters - no_aug_iters)
        return min_lr + 0.5 * (self.base_lr - min_lr) * (1.0 + math.cos(math.pi * progress))
