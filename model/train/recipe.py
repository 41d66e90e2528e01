"""Training recipes: Megvii YOLOX's and EasyCV YOLOX-PAI's defaults, chosen per preset family (``--recipe``).

A recipe fills the ``TrainConfig`` fields left unset (``None``) and the model's training-time fields (``iou_loss``,
``prior_prob``) unless ``--override`` set them; anything set explicitly wins. The table in ``docs/training.md``
states the whole difference; the values come from ``yolox.md`` §1.5, §4 and ``yolox_pai.md`` §3, §4, §9.
Everything else (SimOTA, loss weights, lr per image, warm-up and cosine, EMA, the no-aug phase) is the same in
both references. The input convention belongs to the preset (it is a property of the weights), not the recipe.
Pure stdlib.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from model.data.augment_config import augment_config_for
from model.train.config import TrainConfig


@dataclass(frozen=True)
class Recipe:
    """The defaults that differ between the two references.

    Args:
        iou_loss: the box loss (model field ``iou_loss``).
        prior_prob: cls/obj bias prior at init (model field; ``None`` = PyTorch's default bias).
        weight_decay_all: decay BN weights and all biases too.
        multiscale_range: multiscale heights ``32 * (H/32 -/+ range)``.
        multiscale_letterbox: the drawn size letterboxes each image (keep aspect, pad 114 bottom/right) instead of
            resizing the batch to it.
        easycv_augment: EasyCV's pipeline (``pai``) instead of Megvii's preset-specific one.
    """

    name: str
    iou_loss: str
    prior_prob: float | None
    weight_decay_all: bool
    multiscale_range: int
    multiscale_letterbox: bool
    easycv_augment: bool

    def augment_for(self, arch: str) -> str:
        """The augmentation preset name: ``pai`` for EasyCV; Megvii's nano / tiny / default otherwise."""
        if self.easycv_augment:
            return "pai"
        name = augment_config_for(arch).name
        return "default" if name == "pai" else name


RECIPES: dict[str, Recipe] = {
    # Megvii: yolox_base.py (1 - IoU^2, prior 0.01, decay on conv weights, 480-800 at 640, batch resize).
    "megvii": Recipe("megvii", "iou", 0.01, False, 5, False, False),
    # EasyCV: the released pai_yoloxs* configs (GIoU as EasyCV computes it, no prior bias, SGD without paramwise
    # options, SyncRandomSizeHook (14, 26) = 448-832 at 640, MMResize(keep_ratio) + MMPad per image).
    "easycv": Recipe("easycv", "giou-easycv", None, True, 6, True, True),
}


def family_recipe(arch: str) -> str:
    """The recipe of a preset's family: ``easycv`` for ``yolox-pai-*``, ``megvii`` otherwise."""
    return "easycv" if arch.startswith("yolox-pai") else "megvii"


def apply_recipe(cfg: TrainConfig) -> TrainConfig:
    """``cfg`` with every recipe-dependent field concrete (idempotent; explicit values are kept)."""
    name = cfg.recipe or family_recipe(cfg.arch)
    if name not in RECIPES:
        raise ValueError(f"recipe must be one of {sorted(RECIPES)}, got {name!r}")
    recipe = RECIPES[name]
    overrides = dict(cfg.model_overrides)
    overrides.setdefault("iou_loss", recipe.iou_loss)
    overrides.setdefault("prior_prob", recipe.prior_prob)

    def pick(value: object, default: object) -> object:
        return default if value is None else value

    return dataclasses.replace(
        cfg,
        recipe=name,
        model_overrides=tuple(sorted(overrides.items())),
        weight_decay_all=pick(cfg.weight_decay_all, recipe.weight_decay_all),
        multiscale_range=pick(cfg.multiscale_range, recipe.multiscale_range),
        multiscale_letterbox=pick(cfg.multiscale_letterbox, recipe.multiscale_letterbox),
        augment=pick(cfg.augment, recipe.augment_for(cfg.arch)),
    )


def describe_recipe(cfg: TrainConfig, iou_loss: str, prior_prob: float | None, sizes_32: tuple | None) -> str:
    """One log line: the recipe values of an applied ``cfg``, its model's loss and bias prior, and the multiscale
    heights / 32 the run draws (``None``: off)."""
    bias = f"prior {prior_prob:g}" if prior_prob is not None else "PyTorch default"
    decay = "all parameters" if cfg.weight_decay_all else "conv/linear weights"
    resize = "letterbox" if cfg.multiscale_letterbox else "resize"
    scales = f"{32 * sizes_32[0]}-{32 * sizes_32[1]} px by {resize}" if sizes_32 else "off"
    return (
        f"recipe {cfg.recipe}: box loss {cfg.iou_loss or iou_loss}, cls/obj bias {bias}, weight decay on "
        f"{decay}, multiscale {scales}, augment {cfg.augment}"
    )
