"""``build_run(cfg, ctx) -> TrainRun``: everything a training loop needs, built once and restored on resume.

Order matters and mirrors Megvii's trainer: recipe -> seed -> model (+ initial weights) -> SyncBN -> optimizer ->
resume state -> DDP -> EMA; the EMA is created from the unwrapped model and its update counter restored from the
checkpoint so the decay ramp continues where it stopped. ``run.cfg`` is the config with the recipe applied
(``model.train.recipe``): concrete values, as stored in checkpoints.
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from model.checkpoint import LoadReport, load_weights, read_initial_weights
from model.config import YoloxConfig, get_config
from model.data.augment_config import AUGMENT_PRESETS, AugmentConfig, augment_config_for
from model.data.coco import CocoDetection
from model.data.errors import DatasetError
from model.data.layout import resolve_split
from model.data.loader import TrainLoader, build_eval_loader, build_train_loader
from model.data.train_dataset import TrainDataset
from model.distributed import DistContext
from model.loss import YoloxLoss
from model.train.budget import Deadline
from model.train.checkpoint import read_training_checkpoint, restore_rng_state
from model.train.config import TrainConfig
from model.train.distributed import wrap_model
from model.train.ema import ModelEMA
from model.train.multiscale import MultiscalePolicy, multiscale_sizes_32
from model.train.optim import WarmCosSchedule, build_optimizer
from model.train.recipe import apply_recipe, describe_recipe
from model.yolox import build_from_config


@dataclass
class ValData:
    """The validation split: annotation file, ids and names, and this rank's loader."""

    ann_file: Path
    cat_ids: tuple[int, ...]
    class_names: tuple[str, ...]
    loader: torch.utils.data.DataLoader


@dataclass
class TrainRun:
    """Objects and counters of one run; ``epoch`` is the next epoch to train, ``iteration`` the steps done."""

    cfg: TrainConfig
    ctx: DistContext
    model_cfg: YoloxConfig
    class_names: tuple[str, ...]
    model: nn.Module  # DDP-wrapped when distributed
    ema: ModelEMA | None
    optimizer: torch.optim.SGD
    scaler: torch.amp.GradScaler
    schedule: WarmCosSchedule
    loss_fn: YoloxLoss
    train_loader: TrainLoader
    val: ValData | None
    multiscale: MultiscalePolicy
    iters_per_epoch: int
    epoch: int = 0
    iteration: int = 0
    best_map: float = -1.0  # -1: not evaluated yet, so the first evaluation writes best.pt
    notes: tuple[str, ...] = ()
    deadline: Deadline | None = None  # time budget: no step starts after it (``model.train.calibrate``)
    stopped_early: bool = False  # the deadline ended training before the schedule did

    @property
    def amp(self) -> bool:
        """Mixed precision is active (CUDA only)."""
        return self.scaler.is_enabled()


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (model init must be identical on every rank)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def make_schedule(cfg: TrainConfig, iters_per_epoch: int) -> WarmCosSchedule:
    """The lr schedule of ``cfg`` over ``iters_per_epoch`` steps per epoch."""
    return WarmCosSchedule(cfg.basic_lr_per_img * cfg.batch_size, iters_per_epoch, cfg.epochs, cfg.warmup_epochs,
                           cfg.no_aug_epochs, cfg.min_lr_ratio)  # fmt: skip


def augment_for(name: str | None, arch: str) -> AugmentConfig:
    """The named augmentation preset, ``none`` (letterbox only: debugging, overfitting), or the arch's recipe."""
    if name is None:
        return augment_config_for(arch)
    if name == "none":
        return dataclasses.replace(AUGMENT_PRESETS["default"], name="none", mosaic_prob=0.0, mixup_prob=0.0,
                                   photometric_prob=0.0, flip_prob=0.0)  # fmt: skip
    if name not in AUGMENT_PRESETS:
        raise ValueError(f"augment must be one of {sorted(AUGMENT_PRESETS) + ['none']}, got {name!r}")
    return AUGMENT_PRESETS[name]


def reinit_notes(report: LoadReport, num_classes: int, model_keys: list[str], max_names: int = 12) -> list[str]:
    """Lines naming the tensors that kept the fresh model's initialisation (``load_weights`` left them alone),
    in the model's order (``model_keys``), not the checkpoint's (safetensors sorts its keys)."""

    def names(keys: list[str]) -> str:
        more = f", ... ({len(keys) - max_names} more)" if len(keys) > max_names else ""
        return ", ".join(keys[:max_names]) + more

    notes = []
    if report.skipped_shape:
        position = {key: i for i, key in enumerate(model_keys)}
        keys = sorted((key for key, _, _ in report.skipped_shape), key=position.__getitem__)
        ckpt_classes = {shape[0] for key, shape, _ in report.skipped_shape if ".cls_preds." in key}
        if len(ckpt_classes) == 1 and all(".cls_preds." in key for key in keys):  # another num_classes only
            why = f"for {num_classes} classes (checkpoint has {ckpt_classes.pop()})"
        else:
            why = "whose shapes differ from the checkpoint's"
        notes.append(f"re-initialised {len(keys)} tensors {why}: {names(keys)}")
    if report.missing:
        notes.append(f"{len(report.missing)} tensors not in the checkpoint keep their initialisation: "
                     f"{names(report.missing)}")  # fmt: skip
    return notes


def _val_data(cfg: TrainConfig, ctx: DistContext, input_hw: tuple[int, int]) -> ValData | None:
    try:
        ann_file, image_dir = resolve_split(cfg.data, "val")
    except DatasetError:
        return None  # no validation split: train without evaluation (no best.pt)
    coco = CocoDetection(ann_file, image_dir)
    batch = cfg.eval_batch_size or max(1, cfg.batch_size // ctx.world_size)
    loader = build_eval_loader(coco, input_hw, batch, cfg.workers, distributed=ctx.distributed, rank=ctx.rank,
                               world_size=ctx.world_size, pin_memory=ctx.device.type == "cuda")  # fmt: skip
    return ValData(ann_file, coco.cat_ids, coco.class_names, loader)


def build_run(cfg: TrainConfig, ctx: DistContext) -> TrainRun:
    """Build model, data, optimizer, schedule and loss for ``cfg``; restore state when ``cfg.resume`` is set."""
    if cfg.batch_size % ctx.world_size:
        raise ValueError(f"batch_size {cfg.batch_size} is not divisible by world size {ctx.world_size}")
    cfg = apply_recipe(cfg)
    ckpt = read_training_checkpoint(cfg.resume) if cfg.resume else None
    if ckpt is None and (Path(cfg.out_dir) / "last.pt").exists():
        raise ValueError(f"{cfg.out_dir} already holds a run (last.pt): pass --resume or choose another --out")
    if ckpt is not None:
        diffs = cfg.schedule_differences(apply_recipe(TrainConfig.from_dict(ckpt["train_config"])))
        if diffs:
            raise ValueError(f"--resume must continue the same schedule; changed: {', '.join(diffs)}")
    ann_file, image_dir = resolve_split(cfg.data, "train")
    coco = CocoDetection(ann_file, image_dir)
    class_names = coco.class_names
    notes: list[str] = []

    seed_everything(cfg.seed)
    if ckpt is not None:
        model_cfg = YoloxConfig.from_dict(ckpt["config"])
        if tuple(ckpt.get("class_names", ())) != class_names:
            raise ValueError(f"{cfg.resume} was trained on classes {ckpt.get('class_names')}, data has {class_names}")
    else:
        overrides = dict(cfg.model_overrides)
        if cfg.input_hw is not None:
            overrides["input_hw"] = cfg.input_hw
        try:
            model_cfg = get_config(cfg.arch, num_classes=len(class_names), **overrides)
        except (TypeError, KeyError) as exc:  # an unknown preset or override field
            raise ValueError(f"bad model preset or override: {exc}") from exc
    model = build_from_config(model_cfg)
    if cfg.weights and ckpt is None:
        # Released ONNX weights get their BatchNorm statistics from the training images unless told otherwise.
        state_dict, source, import_notes = read_initial_weights(cfg.weights, model_cfg.name,
                                                                cfg.calibration_images or image_dir)  # fmt: skip
        report = load_weights(model, state_dict)
        notes.append(f"initial weights {cfg.weights} ({source}): {report.summary()}")
        notes.extend(import_notes)
        notes.extend(reinit_notes(report, model_cfg.num_classes, list(model.state_dict())))
    model.to(ctx.device)
    if ctx.device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes per multiscale size: autotune each once
    if cfg.sync_bn and ctx.distributed and ctx.device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    elif cfg.sync_bn:
        notes.append("--sync-bn ignored: it needs several CUDA processes (torch's SyncBatchNorm is GPU-only)")
    optimizer = build_optimizer(model, cfg.momentum, cfg.weight_decay, cfg.weight_decay_all)
    scaler = torch.amp.GradScaler("cuda", enabled=cfg.amp and ctx.device.type == "cuda")
    if cfg.amp and ctx.device.type != "cuda":
        notes.append("--amp ignored: mixed precision runs on CUDA only")
    ema = ModelEMA(model, cfg.ema_decay) if cfg.ema else None
    epoch = iteration = 0
    best_map = -1.0
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        if ckpt.get("scaler") and scaler.is_enabled():
            scaler.load_state_dict(ckpt["scaler"])
        if ema is not None and ckpt.get("ema") is not None:
            ema.load_state_dict(ckpt["ema"], ckpt.get("ema_updates", 0))
        epoch, iteration = int(ckpt["epoch"]) + 1, int(ckpt["iteration"])
        best_map = float(ckpt.get("best_map", -1.0))
        restore_rng_state(ckpt.get("rng", {}))
        notes.append(f"resumed {cfg.resume}: next epoch {epoch + 1}, {iteration} iterations done")
    model = wrap_model(model, ctx)

    input_hw = tuple(model_cfg.input_hw)
    augment = augment_for(cfg.augment, model_cfg.name)
    dataset = TrainDataset(coco, input_hw, augment, seed=cfg.seed)
    per_rank_batch = cfg.batch_size // ctx.world_size
    loader = build_train_loader(dataset, per_rank_batch, cfg.workers, cfg.seed, ctx.distributed, ctx.rank,
                                ctx.world_size, pin_memory=ctx.device.type == "cuda")  # fmt: skip
    iters = len(loader) if cfg.max_iters_per_epoch is None else min(len(loader), cfg.max_iters_per_epoch)
    if iters < 1:
        raise ValueError(f"{len(dataset)} training images give no full batch of {per_rank_batch} per rank")
    schedule = make_schedule(cfg, iters)
    sizes = multiscale_sizes_32(model_cfg.name, input_hw, cfg.multiscale_range, cfg.multiscale_sizes_32)
    notes.insert(0, describe_recipe(cfg, model_cfg.iou_loss, model_cfg.prior_prob, sizes))
    return TrainRun(
        cfg=cfg, ctx=ctx, model_cfg=model_cfg, class_names=class_names, model=model, ema=ema,
        optimizer=optimizer, scaler=scaler, schedule=schedule,
        loss_fn=YoloxLoss(model_cfg, iou_loss=cfg.iou_loss, assigner=cfg.assigner),
        train_loader=loader, val=_val_data(cfg, ctx, input_hw),
        multiscale=MultiscalePolicy(input_hw, cfg.multiscale_interval_iters, sizes, cfg.seed,
                                    letterbox=cfg.multiscale_letterbox),
        iters_per_epoch=iters, epoch=epoch, iteration=iteration, best_map=best_map, notes=tuple(notes),
    )  # fmt: skip
