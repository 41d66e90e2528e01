"""``yoloxpai train``: train a preset on COCO-format data (single process or under ``torchrun``).

Examples::

    yoloxpai train --arch yolox-s --data data/coco --out runs/s --batch-size 64 --amp
    yoloxpai train --arch yolox-nano --data shapes/ --out runs/nano --weights yolox_nano.pth --epochs 50
    yoloxpai train --arch yolox-nano --data shapes/ --out runs/ft --weights default --epochs 10   # fine-tune
    yoloxpai train --arch yolox-nano --data shapes/ --out runs/t --time 10 --weights default   # 10 min in all
    yoloxpai train --out runs/s --resume                 # continue runs/s/last.pt exactly
    torchrun --nproc-per-node 8 -m yoloxpai.cli train --arch yolox-s --data data/coco --out runs/s -b 64

With ``--resume`` the run's stored settings are used; flags given explicitly override the non-schedule ones
(device, workers, logging); changing the schedule (epochs, batch size, ...) is refused.

For a new run, flags left unset take run-dependent defaults (``model.train.defaults``, with a printed line):
``--weights`` means fine-tuning (lr per image 0.25 x 0.01/64, 1 warm-up epoch; ``--no-finetune`` keeps the
from-scratch recipe), and runs too short for 5 warm-up + 15 no-aug epochs get both scaled down.

``--recipe`` (default: the preset family's, ``megvii`` or ``easycv``) picks the reference defaults the flags left
unset take (table in ``docs/training.md``). ``--time MINUTES`` plans the run to that wall-clock budget, everything
included (``model.train.budget``): it chooses the epochs itself, so ``--epochs`` with ``--time`` is an error, and
``--warmup-epochs`` / ``--no-aug-epochs`` become the wanted values, scaled down like unset ones when the planned
epochs are too few.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

# stdlib only: --help stays fast
from model.cli.weights_flags import add_calibration_flag
from model.config import IOU_LOSS_NAMES
from model.train.config import FINETUNE_LR_SCALE, FINETUNE_WARMUP_EPOCHS, RECIPE_NAMES, TrainConfig
from model.train.defaults import fill_run_defaults

# flag dest -> TrainConfig field, for flags that map one to one
_FIELDS = {
    "arch": "arch", "data": "data", "out": "out_dir", "epochs": "epochs", "batch_size": "batch_size",
    "device": "device", "workers": "workers", "weights": "weights", "finetune": "finetune", "amp": "amp",
    "sync_bn": "sync_bn", "seed": "seed", "eval_interval": "eval_interval_epochs", "no_aug_epochs": "no_aug_epochs",
    "warmup_epochs": "warmup_epochs", "lr_per_img": "basic_lr_per_img", "weight_decay": "weight_decay",
    "weight_decay_all": "weight_decay_all",
    "multiscale_range": "multiscale_range", "assigner": "assigner", "iou_loss": "iou_loss", "augment": "augment",
    "max_iters_per_epoch": "max_iters_per_epoch", "checkpoint_interval": "checkpoint_interval_epochs",
    "print_interval": "print_interval_iters", "ema": "ema", "tensorboard": "tensorboard", "progress": "progress",
    "eval_batch_size": "eval_batch_size", "calibration_images": "calibration_images", "recipe": "recipe",
    "multiscale_letterbox": "multiscale_letterbox", "time": "time_budget_min",
}  # fmt: skip

FINETUNE_HELP = (
    f"on: flags left unset take fine-tune values, --lr-per-img {FINETUNE_LR_SCALE:g} x 0.01/64 and --warmup-epochs "
    f"{FINETUNE_WARMUP_EPOCHS}; head layers of another num_classes are re-initialised (default: on with --weights)"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the command's flags (defaults: ``TrainConfig``, the Megvii recipe)."""
    add = parser.add_argument
    add("--arch", help="preset name, e.g. yolox-s, yolox-nano, yolox-pai-s (see `yoloxpai info`)")
    add("--data", help="dataset directory (annotations/instances_{train,val}.json) or a COCO json")
    add("--out", help="run directory (checkpoints, metrics.jsonl, tensorboard/)")
    add("--epochs", type=int, help="default 300; short runs shrink unset warm-up/no-aug epochs to fit (with a warning)")
    add("--time", type=float, metavar="MINUTES",
        help="wall-clock budget, setup and final evaluation included: plans epochs, warm-up, no-aug and the lr "
             "schedule to fit and stops at the deadline (not with --epochs or --resume)")  # fmt: skip
    add(
        "--recipe",
        choices=RECIPE_NAMES,
        help="reference defaults for unset flags (default: the preset's family: "
        "easycv for yolox-pai-*, megvii otherwise; see docs/training.md)",
    )
    add("-b", "--batch-size", type=int, help="global batch over all processes (default 64; lr scales with it)")
    add("--img-size", type=int, nargs="+", metavar="PX", help="training size: S or H W (default: the preset's)")
    add("--device", help="auto | cpu | cuda | cuda:N (default auto)")
    add("--workers", type=int, help="data loader workers per process (default 4)")
    add("--weights", help="initial weights: Megvii/EasyCV, ours, or 'default' (the embedded nano); see --finetune")
    add("--finetune", action=argparse.BooleanOptionalAction, default=None, help=FINETUNE_HELP)
    add_calibration_flag(parser, "the training images")
    add("--resume", nargs="?", const="auto", metavar="CKPT", help="continue a run (default OUT/last.pt)")
    add("--amp", action="store_true", default=None, help="mixed precision (CUDA only)")
    add("--sync-bn", action="store_true", default=None, help="SyncBatchNorm under DDP")
    add("--seed", type=int)
    add("--eval-interval", type=int, metavar="EPOCHS", help="default 10 (every epoch of the no-aug phase)")
    add("--eval-batch-size", type=int)
    add("--no-aug-epochs", type=int, help="last N epochs without mosaic/mixup, with L1 (default 15, see --epochs)")
    add("--warmup-epochs", type=int, help=f"default 5 ({FINETUNE_WARMUP_EPOCHS} fine-tuning; see --epochs)")
    add("--lr-per-img", type=float, help=f"base lr per image (default 0.01/64; x{FINETUNE_LR_SCALE:g} fine-tuning)")
    add("--weight-decay", type=float)
    add(
        "--weight-decay-all",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="decay BN weights and biases too (default: the recipe's, on for easycv)",
    )
    add("--multiscale-range", type=int, help="sizes 32*(S/32 -/+ R) (default: the recipe's, 5 or 6; 0 disables)")
    add("--multiscale-sizes", type=int, nargs=2, metavar=("MIN", "MAX"), help="sizes in units of 32")
    add(
        "--multiscale-letterbox",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="letterbox images to the drawn size instead of resizing the batch (default: the recipe's, easycv)",
    )
    add("--assigner", choices=("simota-0.3.0", "simota-center"))
    add(
        "--iou-loss",
        choices=IOU_LOSS_NAMES,
        help="default: the recipe's (megvii iou = 1-IoU^2; easycv giou-easycv = EasyCV's GIoU)",
    )
    add("--augment", choices=("default", "nano", "tiny", "pai", "none"), help="default: the recipe's")
    add("--max-iters-per-epoch", type=int, help="cap steps per epoch (smoke runs)")
    add("--checkpoint-interval", type=int, metavar="EPOCHS", help="last.pt cadence (default 1)")
    add("--print-interval", type=int, metavar="ITERS")
    add("--override", action="append", metavar="KEY=VALUE", help="model config field, e.g. width=0.125 (repeatable)")
    add("--no-ema", dest="ema", action="store_false", default=None)
    add("--no-tensorboard", dest="tensorboard", action="store_false", default=None)
    add("--no-progress", dest="progress", action="store_false", default=None)


def _explicit(args: argparse.Namespace) -> dict:
    """TrainConfig fields the user set on the command line."""
    values = {field: getattr(args, dest) for dest, field in _FIELDS.items() if getattr(args, dest) is not None}
    if args.img_size is not None:
        sizes = args.img_size
        if len(sizes) not in (1, 2):
            raise ValueError("--img-size takes one (S) or two (H W) values")
        values["input_hw"] = (sizes[0], sizes[-1])
    if args.multiscale_sizes is not None:
        values["multiscale_sizes_32"] = tuple(args.multiscale_sizes)
    if args.override:
        values["model_overrides"] = tuple(sorted(_parse_override(o) for o in args.override))
    return values


def _parse_override(text: str) -> tuple[str, object]:
    """``width=0.125`` -> ("width", 0.125); values are JSON where they parse, else strings."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise ValueError(f"--override expects KEY=VALUE, got {text!r}")
    try:
        return key.strip(), json.loads(raw)
    except json.JSONDecodeError:
        return key.strip(), raw


def build_config(args: argparse.Namespace) -> TrainConfig:
    """The ``TrainConfig`` for these arguments (from the checkpoint's stored config when resuming).

    A new run's unset flags get ``fill_run_defaults`` (fine-tune, short run), printed to stderr.
    """
    values = _explicit(args)
    if args.time is not None and (args.resume is not None or args.epochs is not None):
        raise ValueError("--time plans the epochs of a new run: drop --epochs (or --time), and --resume continues "
                         "a planned run's stored schedule without --time")  # fmt: skip
    if args.resume is None:
        missing = [flag for flag, key in (("--arch", "arch"), ("--data", "data"), ("--out", "out_dir"))
                   if key not in values]  # fmt: skip
        if missing:
            raise ValueError(f"{', '.join(missing)} required (or --resume)")
        if values.get("weights") == "default":
            from model.artifacts import default_weights_path

            values["weights"] = str(default_weights_path())
        values, lines = fill_run_defaults(values)
        if os.environ.get("RANK", "0") == "0":  # once under torchrun, not once per process
            for line in lines:
                print(f"yoloxpai train: {line}", file=sys.stderr)
        return TrainConfig(**values)
    from model.train.checkpoint import read_training_checkpoint

    if args.resume == "auto":
        if "out_dir" not in values:
            raise ValueError("--resume without a path needs --out (resumes OUT/last.pt)")
        path = Path(values["out_dir"]) / "last.pt"
    else:
        path = Path(args.resume)
    stored = TrainConfig.from_dict(read_training_checkpoint(path)["train_config"]).to_dict()
    if "model_overrides" in values:
        values["model_overrides"] = dict(values["model_overrides"])
    stored.update(values)
    stored["resume"] = str(path)
    stored["weights"] = None  # the checkpoint's own weights win
    return TrainConfig.from_dict(stored)


def run(args: argparse.Namespace) -> int:
    """Train; print where the checkpoints went and the best mAP."""
    from model.checkpoint import CheckpointError
    from model.data.errors import DatasetError
    from model.train.loop import train

    started_at_s = time.perf_counter()  # a --time budget counts from here
    try:
        cfg = build_config(args)
        summary = train(cfg, started_at_s)
    except (ValueError, DatasetError, CheckpointError, FileNotFoundError) as exc:
        print(f"yoloxpai train: error: {exc}", file=sys.stderr)
        return 2
    if not summary.is_main:
        return 0
    files = [name for name in ("last.pt", "best.pt") if (summary.out_dir / name).is_file()]
    best = f"best mAP50:95 {summary.best_map:.4f}" if summary.best_map >= 0 else "not evaluated (no val split)"
    stopped = " (stopped at the time budget's deadline)" if summary.stopped_early else ""
    print(f"done: {summary.epochs} epochs{stopped}, {summary.iterations} iterations in {summary.wall_s:.0f} s "
          f"({summary.images_per_s:.1f} img/s); {best}; checkpoints in {summary.out_dir}: {', '.join(files)} "
          "(EMA weights under 'ema')")  # fmt: skip
    return 0
