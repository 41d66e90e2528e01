"""``TrainConfig``: every knob of a training run (``yolox.md`` §4, ``yolox_pai.md`` §4).

Fields left ``None`` take the run's recipe (``model.train.recipe``: Megvii's for Megvii presets, EasyCV's for the
PAI presets) when the run is built.

Pure stdlib (the CLI builds it before importing torch). Stored in each checkpoint as ``train_config`` so a
resumed run can check it continues the same schedule.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from model.config import IOU_LOSS_NAMES

# Names of ``model.loss.simota.ASSIGNERS``, repeated so this module stays importable without torch.
ASSIGNER_NAMES = ("simota-0.3.0", "simota-center")
RECIPE_NAMES = ("megvii", "easycv")  # the keys of ``model.train.recipe.RECIPES``

# Fine-tune defaults (``TrainConfig.finetune``; the CLI fills them in for flags left unset): pretrained features
# need smaller steps, and only the re-initialised head needs a warm-up.
FINETUNE_LR_SCALE = 0.25
FINETUNE_WARMUP_EPOCHS = 1

# Fields a resumed run may change (where and how it runs, not what it computes).
RESUMABLE_CHANGES = frozenset({
    "data", "out_dir", "device", "workers", "weights", "calibration_images", "resume", "amp", "sync_bn",
    "eval_interval_epochs", "eval_score_threshold", "eval_nms_iou", "eval_max_detections", "eval_batch_size",
    "print_interval_iters", "checkpoint_interval_epochs", "tensorboard", "progress",
})  # fmt: skip


@dataclass(frozen=True)
class TrainConfig:
    """A training run.

    Args:
        arch: preset name (``model.config.VARIANTS``); ``model_overrides`` are extra ``YoloxConfig`` fields.
        data: dataset directory or COCO json (``model.data.resolve_split``); ``out_dir``: the run directory.
        batch_size: global batch over all ranks (Megvii's ``-b``); each rank takes ``batch_size / world_size``.
        input_hw: training/eval size, default the preset's.
        device: ``auto`` | ``cpu`` | ``cuda`` | ``cuda:N`` (under torchrun ``cuda`` means the local rank's GPU).
        weights: initial weights (official Megvii/EasyCV or ours); tensors of another shape (num_classes) keep
            the model's own initialisation.
        calibration_images: for ``.onnx`` weights, the images whose statistics un-fold the BatchNorms
            (default: the training images).
        finetune: the run fine-tunes ``weights`` (the CLI's default when ``--weights`` is given). Recorded only:
            the CLI gives flags left unset the fine-tune values ``basic_lr_per_img`` 0.25 x 0.01/64 and
            ``warmup_epochs`` 1; built directly, the config uses exactly the values passed.
        resume: checkpoint to continue (same schedule, exact); ``auto`` = ``out_dir/last.pt``.
        basic_lr_per_img: lr = ``basic_lr_per_img * batch_size`` (0.01 / 64).
        recipe: ``megvii`` | ``easycv``; ``None`` = the preset family's (``model.train.recipe``). It supplies the
            defaults of the ``None`` fields below and of the model's ``iou_loss`` / ``prior_prob``.
        weight_decay_all: decay BN weights and biases too (EasyCV) or only conv/linear weights (Megvii).
        multiscale_range: sizes ``32 * (H/32 -/+ range)`` (Megvii 5, EasyCV 6); ``multiscale_sizes_32`` overrides
            with explicit (min, max) in units of 32 (nano/tiny at 416 use (10, 20)); range 0 disables multiscale.
        multiscale_letterbox: a drawn size letterboxes the images (EasyCV) instead of resizing the batch (Megvii).
        assigner: ``simota-0.3.0`` (released weights) or ``simota-center`` (YOLOX main, radius 1.5).
        iou_loss: a ``model.loss.iou.IOU_LOSSES`` name; default the model's (Megvii ``iou``, PAI ``giou-easycv``).
        augment: an augmentation preset name; default the recipe's (``pai`` for EasyCV).
        eval_interval_epochs: also every epoch of the no-aug phase and the last epoch (Megvii).
        checkpoint_interval_epochs: ``last.pt`` cadence (always after the final epoch and after each evaluation).
        max_iters_per_epoch: cap iterations per epoch (smoke tests, benchmarks); ``None`` = whole loader.
        time_budget_min: wall-clock budget of a new run (``yoloxpai train --time``): epochs, warm-up, no-aug phase
            and iterations per epoch are planned to fit it (``model.train.budget``), overwriting the values here,
            and training stops at the deadline. Recorded in the run; a resumed run keeps its plan, no deadline.
    """

    arch: str = "yolox-s"
    data: str = ""
    out_dir: str = "runs/train"
    model_overrides: tuple[tuple[str, object], ...] = ()
    epochs: int = 300
    batch_size: int = 64
    input_hw: tuple[int, int] | None = None
    device: str = "auto"
    workers: int = 4
    weights: str | None = None
    calibration_images: str | None = None
    finetune: bool = False
    resume: str | None = None
    amp: bool = False
    sync_bn: bool = False
    seed: int = 0
    warmup_epochs: int = 5
    no_aug_epochs: int = 15
    basic_lr_per_img: float = 0.01 / 64
    min_lr_ratio: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    recipe: str | None = None
    weight_decay_all: bool | None = None
    ema: bool = True
    ema_decay: float = 0.9998
    multiscale_interval_iters: int = 10
    multiscale_range: int | None = None
    multiscale_sizes_32: tuple[int, int] | None = None
    multiscale_letterbox: bool | None = None
    assigner: str = "simota-0.3.0"
    iou_loss: str | None = None
    augment: str | None = None
    eval_interval_epochs: int = 10
    checkpoint_interval_epochs: int = 1
    eval_score_threshold: float = 0.001
    eval_nms_iou: float = 0.65
    eval_max_detections: int = 100
    eval_batch_size: int | None = None
    print_interval_iters: int = 10
    max_iters_per_epoch: int | None = None
    tensorboard: bool = True
    progress: bool = True
    time_budget_min: float | None = None

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(f"epochs and batch_size must be >= 1, got {self.epochs}, {self.batch_size}")
        if not 0 <= self.no_aug_epochs <= self.epochs:
            raise ValueError(
                f"no_aug_epochs must be in [0, epochs={self.epochs}], got {self.no_aug_epochs} "
                "(set --no-aug-epochs for short runs)"
            )
        if self.warmup_epochs < 0 or self.warmup_epochs + self.no_aug_epochs > self.epochs:
            raise ValueError(
                f"warmup_epochs ({self.warmup_epochs}) + no_aug_epochs ({self.no_aug_epochs}) must not "
                f"exceed epochs ({self.epochs}); set --warmup-epochs / --no-aug-epochs"
            )
        if self.assigner not in ASSIGNER_NAMES:
            raise ValueError(f"assigner must be one of {ASSIGNER_NAMES}, got {self.assigner!r}")
        if self.iou_loss not in (None, *IOU_LOSS_NAMES):
            raise ValueError(f"iou_loss must be one of {IOU_LOSS_NAMES}, got {self.iou_loss!r}")
        if self.recipe not in (None, *RECIPE_NAMES):
            raise ValueError(f"recipe must be one of {RECIPE_NAMES}, got {self.recipe!r}")
        if self.time_budget_min is not None and self.time_budget_min <= 0:
            raise ValueError(f"time_budget_min must be > 0, got {self.time_budget_min}")
        if self.input_hw is not None and (self.input_hw[0] % 32 or self.input_hw[1] % 32):
            raise ValueError(f"input_hw must be multiples of 32, got {self.input_hw}")
        if min(self.eval_interval_epochs, self.checkpoint_interval_epochs, self.multiscale_interval_iters) < 1:
            raise ValueError("eval/checkpoint intervals and multiscale_interval_iters must be >= 1")

    def to_dict(self) -> dict:
        """JSON-friendly form (lists for tuples), stored in checkpoints and ``train_config.json``."""
        data = dataclasses.asdict(self)
        data["model_overrides"] = {k: v for k, v in self.model_overrides}
        return data

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        """Inverse of :meth:`to_dict` (unknown keys are ignored so older runs stay readable)."""
        known = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in known}
        kwargs["model_overrides"] = tuple(sorted(dict(kwargs.get("model_overrides") or {}).items()))
        for key in ("input_hw", "multiscale_sizes_32"):
            if kwargs.get(key) is not None:
                kwargs[key] = tuple(int(v) for v in kwargs[key])
        return cls(**kwargs)

    def schedule_differences(self, other: TrainConfig) -> list[str]:
        """Fields outside ``RESUMABLE_CHANGES`` that differ (a resume must not change them)."""
        names = [f.name for f in dataclasses.fields(self) if f.name not in RESUMABLE_CHANGES]
        return [f"{k}: {getattr(other, k)!r} -> {getattr(self, k)!r}" for k in names
                if getattr(self, k) != getattr(other, k)]  # fmt: skip
