"""The training loop, written out as a plain loop: ``train(cfg) -> TrainSummary``.

Per step: lr from the schedule -> batch to device -> multiscale resize or letterbox (pixel values) -> input
convention -> forward (autocast on CUDA with ``--amp``) -> ``YoloxLoss`` -> backward through the GradScaler -> step
-> EMA. Per epoch: the last ``no_aug_epochs`` close mosaic and turn on the L1 loss; afterwards BN statistics are
averaged over ranks, the EMA model is evaluated when due, and rank 0 writes ``last.pt`` (and ``best.pt`` on a new
best mAP50:95). With a time budget (``run.deadline``), no step starts after the deadline: the run then ends as if
that epoch were the last (evaluation, ``last.pt``/``best.pt``) and the summary says it stopped early.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from model.checkpoint import CHECKPOINT_FORMAT
from model.distributed import init_distributed, shutdown_distributed
from model.evaluate import EvalResult, evaluate, format_result
from model.inputs import to_device, to_network_batch
from model.train.checkpoint import FORMAT_VERSION, atomic_save, cpu_state, rng_state
from model.train.config import TrainConfig
from model.train.distributed import all_reduce_norm_stats, barrier, broadcast_ints
from model.train.ema import unwrap
from model.train.monitor import Monitor
from model.train.multiscale import rescale_batch
from model.train.optim import set_lr
from model.train.run import TrainRun, build_run


@dataclass(frozen=True)
class TrainSummary:
    """What a finished run reports."""

    out_dir: Path
    epochs: int
    iterations: int
    best_map: float
    last_eval: EvalResult | None
    is_main: bool  # rank 0 (the process that logs and writes checkpoints)
    wall_s: float  # everything: training, evaluation, checkpoints
    images_per_s: float  # training steps only (data loading included), all ranks together
    stopped_early: bool = False  # the time budget's deadline ended training before the planned last step


def train(cfg: TrainConfig, started_at_s: float | None = None) -> TrainSummary:
    """Run (or resume) a training run, single-process or under torchrun.

    A new run with ``cfg.time_budget_min`` is first planned to fit the budget counted from ``started_at_s`` (a
    ``time.perf_counter()`` value; default now), see ``model.train.calibrate``.
    """
    started_at_s = time.perf_counter() if started_at_s is None else started_at_s
    ctx = init_distributed(cfg.device)
    try:
        run = build_run(cfg, ctx)
        if cfg.time_budget_min is not None and cfg.resume is None:
            from model.train.calibrate import plan_run  # here: calibrate imports this module

            plan_run(run, cfg.time_budget_min * 60.0, started_at_s)
        return fit(run)
    finally:
        shutdown_distributed()


def out_of_time(run: TrainRun) -> bool:
    """The deadline has passed (rank 0's clock decides, so every rank stops at the same step)."""
    if run.deadline is None:
        return False
    passed = run.deadline.passed(time.perf_counter())
    return bool(broadcast_ints([int(passed)], run.ctx)[0])


def fit(run: TrainRun, until_epoch: int | None = None) -> TrainSummary:
    """Train ``run`` from its current epoch to ``cfg.epochs`` (or stop after epoch ``until_epoch``, 1-based)."""
    cfg, ctx = run.cfg, run.ctx
    out_dir = Path(cfg.out_dir)
    if ctx.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "train_config.json").write_text(json.dumps(cfg.to_dict(), indent=2), encoding="utf-8")
    monitor = Monitor(out_dir, active=ctx.is_main, total_iters=run.schedule.total_iters,
                      print_interval=cfg.print_interval_iters, tensorboard=cfg.tensorboard,
                      progress=cfg.progress)  # fmt: skip
    for note in run.notes:
        monitor.log(note)
    monitor.log(f"{run.model_cfg.name}: {len(run.class_names)} classes, {run.iters_per_epoch} it/epoch, world "
                f"{ctx.world_size}, device {ctx.device}, lr {run.schedule.base_lr:g}")  # fmt: skip
    start, train_s, images_seen, last_eval = time.perf_counter(), 0.0, 0, None
    try:
        for epoch in range(run.epoch, min(cfg.epochs, until_epoch or cfg.epochs)):
            no_aug = epoch >= cfg.epochs - cfg.no_aug_epochs
            if no_aug:
                run.train_loader.close_mosaic()
            run.train_loader.set_epoch(epoch)
            epoch_start = time.perf_counter()
            images_seen += train_one_epoch(run, epoch, use_l1=no_aug, monitor=monitor)
            train_s += time.perf_counter() - epoch_start
            run.epoch = epoch + 1
            stop = run.stopped_early or (epoch + 1 < cfg.epochs and out_of_time(run))
            if stop:
                run.stopped_early = True
                monitor.log(
                    f"time budget: stopping after epoch {epoch + 1}/{cfg.epochs} at iteration "
                    f"{run.iteration}/{run.schedule.total_iters} (behind the plan); final evaluation"
                )
            # Average BN statistics over ranks (Megvii's all_reduce_norm), for the EMA too, so every rank
            # evaluates and could checkpoint the same model.
            all_reduce_norm_stats(run.model, ctx)
            if run.ema is not None:
                all_reduce_norm_stats(run.ema.module, ctx)
            last = epoch + 1 == cfg.epochs or epoch + 1 == until_epoch or stop
            due = (epoch + 1) % cfg.eval_interval_epochs == 0 or no_aug or last
            result = evaluate_run(run) if due and run.val is not None else None
            if result is not None:
                last_eval = result
                monitor.log(f"epoch {epoch + 1} eval (EMA)\n{format_result(result)}")
                monitor.eval_result(epoch, result.metrics(), run.iteration)
            if result is not None or last or (epoch + 1) % cfg.checkpoint_interval_epochs == 0:
                save_checkpoints(run, epoch, result)
            monitor.epoch_end(epoch, {"best_map": run.best_map, "wall_s": time.perf_counter() - start}, run.iteration)
            if stop:
                break
    finally:
        monitor.close()
    wall_s = time.perf_counter() - start
    return TrainSummary(out_dir, run.epoch, run.iteration, run.best_map, last_eval, ctx.is_main, wall_s,
                        images_seen * ctx.world_size / max(train_s, 1e-9), run.stopped_early)  # fmt: skip


def train_one_epoch(run: TrainRun, epoch: int, *, use_l1: bool, monitor: Monitor) -> int:
    """One pass over the loader (at most ``iters_per_epoch`` steps, none after the deadline: then it sets
    ``run.stopped_early``); returns this rank's images trained."""
    cfg, ctx, model = run.cfg, run.ctx, run.model
    model.train()
    convention = run.model_cfg.convention
    size_hw = run.multiscale.input_hw
    images_seen = 0
    tick = time.perf_counter()
    for step, (images, targets, _ids) in enumerate(run.train_loader):
        if step >= run.iters_per_epoch:
            break
        if out_of_time(run):
            run.stopped_early = True
            break
        it = run.iteration
        if it % run.multiscale.interval_iters == 0 or step == 0:
            # Rank 0 draws, everyone follows: the size must agree across ranks for DDP's buckets to line up.
            size_hw = tuple(broadcast_ints(list(run.multiscale.draw(it)), ctx))
        lr = run.schedule.lr_at(it)
        set_lr(run.optimizer, lr)
        x = to_device(images, ctx.device).float()
        x, y = rescale_batch(x, to_device(targets, ctx.device), size_hw, run.multiscale, convention.pad_value)
        x = to_network_batch(x, convention)
        with torch.autocast(ctx.device.type, dtype=torch.float16, enabled=run.amp):
            outputs = model(x)
        losses = run.loss_fn(outputs, y, size_hw, use_l1=use_l1)
        values = {k: v.detach().item() for k, v in losses.items()}
        if not math.isfinite(values["total"]):
            raise FloatingPointError(f"non-finite loss at epoch {epoch + 1} iteration {it}: {values}")
        run.optimizer.zero_grad(set_to_none=True)
        run.scaler.scale(losses["total"]).backward()
        run.scaler.step(run.optimizer)
        run.scaler.update()
        if run.ema is not None:
            run.ema.update(model)
        run.iteration += 1
        images_seen += len(images)
        now = time.perf_counter()
        monitor.train_step(epoch=epoch, epochs=cfg.epochs, iteration=run.iteration, epoch_iter=step + 1,
                           epoch_iters=run.iters_per_epoch, losses=values,
                           lr=lr, images=len(images) * ctx.world_size, step_s=now - tick,
                           input_hw=size_hw)  # fmt: skip
        tick = now
    return images_seen


def eval_model(run: TrainRun) -> torch.nn.Module:
    """The model evaluation and export use: the EMA when enabled."""
    return run.ema.module if run.ema is not None else unwrap(run.model)


def evaluate_run(run: TrainRun) -> EvalResult:
    """COCO evaluation of the EMA model on the validation split (all ranks take part)."""
    cfg, val = run.cfg, run.val
    return evaluate(eval_model(run), val.loader, val.ann_file, run.model_cfg.convention, val.cat_ids,
                    val.class_names, ctx=run.ctx, score_threshold=cfg.eval_score_threshold,
                    nms_iou=cfg.eval_nms_iou, max_detections=cfg.eval_max_detections, amp=run.amp)  # fmt: skip


def checkpoint_dict(run: TrainRun, epoch: int, result: EvalResult | None) -> dict:
    """The training checkpoint of ``run`` after ``epoch`` (layout in ``model.train.checkpoint``)."""
    return {
        "format": CHECKPOINT_FORMAT,
        "format_version": FORMAT_VERSION,
        "config": run.model_cfg.to_dict(),
        "class_names": list(run.class_names),
        "model": cpu_state(unwrap(run.model).state_dict()),
        "ema": cpu_state(run.ema.state_dict()) if run.ema is not None else None,
        "ema_updates": run.ema.updates if run.ema is not None else 0,
        "optimizer": run.optimizer.state_dict(),
        "scaler": run.scaler.state_dict() if run.scaler.is_enabled() else {},
        "epoch": epoch,
        "iteration": run.iteration,
        "best_map": run.best_map,
        "map": result.ap50_95 if result is not None else None,
        "train_config": run.cfg.to_dict(),
        "rng": rng_state(),
    }


def save_checkpoints(run: TrainRun, epoch: int, result: EvalResult | None) -> None:
    """Rank 0 writes ``last.pt`` and, on a new best mAP50:95, ``best.pt``; the other ranks wait."""
    improved = result is not None and result.ap50_95 > run.best_map
    if improved:
        run.best_map = result.ap50_95
    if run.ctx.is_main:
        ckpt = checkpoint_dict(run, epoch, result)
        out_dir = Path(run.cfg.out_dir)
        atomic_save(ckpt, out_dir / "last.pt")
        if improved:
            atomic_save(ckpt, out_dir / "best.pt")
    barrier(run.ctx)
