"""Run-dependent defaults for the flags a user left unset: fine-tuning and short runs (the CLI's policy).

``TrainConfig`` stays strict for API users (its ``ValueError`` names bad values); ``yoloxpai train`` passes the
explicit flag values through :func:`fill_run_defaults` first, so ``--epochs 2`` or ``--weights`` alone just work.
Stdlib only, like ``model.train.config``: the CLI builds the config before importing torch.
"""

from __future__ import annotations

from model.train.config import FINETUNE_LR_SCALE, FINETUNE_WARMUP_EPOCHS, TrainConfig

_FLAGS = {"warmup_epochs": "--warmup-epochs", "no_aug_epochs": "--no-aug-epochs", "basic_lr_per_img": "--lr-per-img"}


def _default(name: str) -> object:
    return TrainConfig.__dataclass_fields__[name].default


def short_run_schedule(
    epochs: int,
    warmup_epochs: int | None,
    no_aug_epochs: int | None,
    default_warmup_epochs: int,
    default_no_aug_epochs: int | None = None,
) -> tuple[int, int]:
    """``(warmup_epochs, no_aug_epochs)`` for ``epochs``: given values (not None) are kept, defaults scaled down.

    Defaults (no-aug: ``default_no_aug_epochs``, else 15) stay when warm-up + no-aug fit in ``epochs``; otherwise
    no-aug becomes ``min(default, epochs // 5)`` and warm-up ``min(default, max(1, epochs // 10))`` (0 for a single
    epoch), then the scaled one shrinks until both fit. An explicit value that cannot fit on its own is left for
    ``TrainConfig`` to refuse.
    """
    default_no_aug = int(_default("no_aug_epochs")) if default_no_aug_epochs is None else default_no_aug_epochs
    warmup = default_warmup_epochs if warmup_epochs is None else warmup_epochs
    no_aug = default_no_aug if no_aug_epochs is None else no_aug_epochs
    fits = warmup + no_aug <= epochs
    if fits or epochs < 1 or (warmup_epochs is not None and no_aug_epochs is not None):
        return warmup, no_aug
    if no_aug_epochs is None:
        no_aug = min(default_no_aug, epochs // 5)
    if warmup_epochs is None:
        warmup = min(default_warmup_epochs, max(1, epochs // 10)) if epochs >= 2 else 0
        warmup = max(0, min(warmup, epochs - no_aug))
    else:
        no_aug = max(0, min(no_aug, epochs - warmup))
    return warmup, no_aug


def fill_run_defaults(values: dict) -> tuple[dict, list[str]]:
    """``values`` (the explicit ``TrainConfig`` fields of a new run) completed with fine-tune and short-run
    defaults, and the lines to tell the user about them (``warning: ...`` for scaled-down schedules)."""
    explicit = set(values)
    values = dict(values)
    lines = []
    finetune = values.setdefault("finetune", values.get("weights") is not None)
    if finetune and values.get("weights") is None:
        raise ValueError("--finetune needs --weights (the checkpoint to fine-tune)")
    defaults = {"warmup_epochs": int(_default("warmup_epochs")), "no_aug_epochs": int(_default("no_aug_epochs"))}
    if finetune:
        defaults["warmup_epochs"] = FINETUNE_WARMUP_EPOCHS
        chosen = {"basic_lr_per_img": float(_default("basic_lr_per_img")) * FINETUNE_LR_SCALE,
                  "warmup_epochs": FINETUNE_WARMUP_EPOCHS}  # fmt: skip
        chosen = {k: v for k, v in chosen.items() if k not in explicit}
        values.update(chosen)
        if chosen:
            listed = ", ".join(f"{_FLAGS[k]} {v:g}" for k, v in chosen.items())
            lines.append(f"fine-tune defaults (--weights given; --no-finetune or these flags override): {listed} "
                         f"(lr {FINETUNE_LR_SCALE:g} x the 0.01/64 default)")  # fmt: skip
    epochs = int(values.get("epochs", _default("epochs")))
    given = {k: values[k] for k in defaults if k in explicit}
    warmup, no_aug = short_run_schedule(
        epochs, given.get("warmup_epochs"), given.get("no_aug_epochs"), defaults["warmup_epochs"]
    )
    schedule = {"warmup_epochs": warmup, "no_aug_epochs": no_aug}
    scaled = {k: v for k, v in schedule.items() if k not in given and v != defaults[k]}
    values.update(schedule)
    if scaled:
        listed = ", ".join(f"{_FLAGS[k]} {v} (default {defaults[k]})" for k, v in scaled.items())
        lines.append(f"warning: short run of {epochs} epochs: using {listed} so that warm-up + no-aug epochs fit; "
                     f"pass {' / '.join(_FLAGS[k] for k in scaled)} to choose other values")  # fmt: skip
    return values, lines
