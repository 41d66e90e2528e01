"""Fit a new run to a time budget: measure its costs on the run itself, plan (``model.train.budget``), apply.

``plan_run(run, budget_s, started_at_s)``, called by ``model.train.loop.train`` between ``build_run`` and ``fit``:

1. times real training steps: ``WARMUP_STEPS`` then ``STEPS_PER_SIZE`` at ``input_hw`` (the first absorb the
   allocator, kernels and loader workers) and, with multiscale, ``1 + STEPS_PER_SIZE`` at the smallest and at the
   largest size (the first warms that shape up); a size's step time is read off the lines through these points
   (in input area). Three points, not two: a small size can be bound by data loading, a large one by compute, and
   one straight line from the smallest to the largest would overstate the sizes in between. The sizes themselves
   are known in advance (rank 0 draws block ``b``'s size from a generator seeded with (seed, b)), so the plan
   sums the run's own size sequence (``DrawnSizeClock``) rather than an average a short run would not meet.
   Also times a prediction pass over ``EVAL_BATCHES`` validation batches (extrapolated to the split, plus scoring
   those detections) and checkpoint writes;
2. restores everything those steps changed (weights, BatchNorm statistics, optimizer, EMA, GradScaler, counters,
   generators), so training starts exactly as it would have without the calibration;
3. plans the rest of the budget (setup and calibration already spent count) and writes the plan into
   ``run.cfg`` (epochs, warm-up, no-aug, ``max_iters_per_epoch``) and ``run.schedule``; sets ``run.deadline``.

Under torchrun every rank measures (the steps are collective), rank 0's plan is broadcast.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import time
from pathlib import Path

from model.evaluate import predict_coco, score_detections
from model.train.budget import PLAN_FRACTION, BudgetPlan, Deadline, RunCosts, piecewise_linear, plan_budget
from model.train.checkpoint import atomic_save, restore_rng_state, rng_state
from model.train.distributed import broadcast_ints
from model.train.ema import unwrap
from model.train.loop import checkpoint_dict, eval_model, train_one_epoch
from model.train.monitor import Monitor
from model.train.multiscale import MultiscalePolicy
from model.train.run import TrainRun, make_schedule

WARMUP_STEPS = 5
STEPS_PER_SIZE = 4
EVAL_BATCHES = 3
CHECKPOINT_PROBES = 2  # the first torch.save of a process is slower than the ones the run will make


class StepTimer(Monitor):
    """A silent monitor that keeps each training step's wall time."""

    def __init__(self) -> None:
        super().__init__(".", active=False, total_iters=0)
        self.times: list[float] = []

    def train_step(self, **kwargs) -> None:
        """Keep ``step_s``."""
        self.times.append(kwargs["step_s"])


def time_training_steps(run: TrainRun, size_hw: tuple[int, int], steps: int) -> list[float]:
    """Seconds of ``steps`` real training steps at ``size_hw`` (over several epochs of a small loader)."""
    timer = StepTimer()
    epoch, iters_per_epoch, multiscale = run.epoch, run.iters_per_epoch, run.multiscale
    run.multiscale = dataclasses.replace(multiscale, input_hw=size_hw, sizes_32=None)  # draw() = size_hw
    try:
        while len(timer.times) < steps:
            run.train_loader.set_epoch(epoch)
            run.iters_per_epoch = min(iters_per_epoch, steps - len(timer.times))
            train_one_epoch(run, epoch, use_l1=False, monitor=timer)
            epoch += 1
    finally:
        run.iters_per_epoch, run.multiscale = iters_per_epoch, multiscale
    return timer.times


def time_evaluation(run: TrainRun) -> float:
    """Seconds one evaluation is expected to take: the first ``EVAL_BATCHES`` batches predicted (the first one
    with the loader's worker start-up, counted once), extrapolated to the split, plus scoring their detections."""
    if run.val is None:
        return 0.0
    cfg, val, times = run.cfg, run.val, []
    detections: list[dict] = []
    tick = time.perf_counter()
    batches = iter(val.loader)
    for batch in itertools.islice(batches, EVAL_BATCHES):
        detections += predict_coco(eval_model(run), [batch], run.model_cfg.convention, run.ctx.device,
                                   val.cat_ids, score_threshold=cfg.eval_score_threshold, nms_iou=cfg.eval_nms_iou,
                                   max_detections=cfg.eval_max_detections, amp=run.amp)  # fmt: skip
        now = time.perf_counter()
        times.append(now - tick)
        tick = now
    del batches  # stops the loader's workers
    rest = times[1:] or times
    predict_s = times[0] + (len(val.loader) - 1) * sum(rest) / len(rest)
    tick = time.perf_counter()
    score_detections(val.ann_file, detections, val.cat_ids, val.class_names)
    return predict_s + time.perf_counter() - tick


def time_checkpoint(run: TrainRun) -> float:
    """Seconds to write one checkpoint of this run (the fastest of a few probe files in the run folder)."""
    probe = Path(run.cfg.out_dir) / ".budget-probe.pt"
    times = []
    for _ in range(CHECKPOINT_PROBES):
        tick = time.perf_counter()
        atomic_save(checkpoint_dict(run, 0, None), probe)
        times.append(time.perf_counter() - tick)
    probe.unlink(missing_ok=True)
    return min(times)


def _snapshot(run: TrainRun) -> dict:
    return {
        "model": copy.deepcopy(unwrap(run.model).state_dict()),
        "optimizer": copy.deepcopy(run.optimizer.state_dict()),
        "scaler": copy.deepcopy(run.scaler.state_dict()),
        "ema": (copy.deepcopy(run.ema.state_dict()), run.ema.updates) if run.ema is not None else None,
        "iteration": run.iteration,
        "rng": rng_state(),
    }


def _restore(run: TrainRun, snap: dict) -> None:
    unwrap(run.model).load_state_dict(snap["model"])
    run.optimizer.load_state_dict(snap["optimizer"])
    if run.scaler.is_enabled():
        run.scaler.load_state_dict(snap["scaler"])
    if run.ema is not None:
        run.ema.load_state_dict(*snap["ema"])
    run.iteration = snap["iteration"]
    restore_rng_state(snap["rng"])


class DrawnSizeClock:
    """``clock(n)``: seconds of a run's first ``n`` steps from ``first_iteration`` on, each step at the size its
    multiscale block draws, timed by the calibration line (``seconds_by_area``: input area -> s/step)."""

    def __init__(self, policy: MultiscalePolicy, seconds_by_area: dict[float, float], first_iteration: int = 0):
        self.policy, self.seconds_by_area, self.first = policy, seconds_by_area, first_iteration
        self._cumulative = [0.0]  # seconds of the first i steps, extended on demand

    def step_seconds(self, iteration: int) -> float:
        """Seconds of global step ``iteration``."""
        h, w = self.policy.draw(iteration)
        return piecewise_linear(h * w, self.seconds_by_area)

    def mean_step_seconds(self) -> float:
        """The average over the sizes ``draw`` picks (what a long run converges to)."""
        sizes = self.policy.drawn_sizes()
        return sum(piecewise_linear(h * w, self.seconds_by_area) for h, w in sizes) / len(sizes)

    def __call__(self, steps: int) -> float:
        while len(self._cumulative) <= steps:
            iteration = self.first + len(self._cumulative) - 1
            self._cumulative.append(self._cumulative[-1] + self.step_seconds(iteration))
        return self._cumulative[steps]


def measure_step_clock(run: TrainRun) -> DrawnSizeClock:
    """Time training steps at the input size and the multiscale extremes (see the module docstring); the clock
    starts at the run's current iteration."""
    policy, first_iteration = run.multiscale, run.iteration
    times = time_training_steps(run, policy.input_hw, WARMUP_STEPS + STEPS_PER_SIZE)[WARMUP_STEPS:]
    seconds = {policy.input_hw[0] * policy.input_hw[1]: sum(times) / len(times)}  # input area -> s/step
    for size_32 in policy.sizes_32 if policy.enabled else ():
        size_hw = policy.size_hw(size_32)
        times = time_training_steps(run, size_hw, 1 + STEPS_PER_SIZE)[1:]
        seconds[size_hw[0] * size_hw[1]] = sum(times) / len(times)
    return DrawnSizeClock(policy, seconds, first_iteration)


def measure_costs(run: TrainRun) -> tuple[RunCosts, DrawnSizeClock]:
    """Time steps, an evaluation and a checkpoint of ``run``, then put the run back as it was."""
    snap = _snapshot(run)
    try:
        clock = measure_step_clock(run)
    finally:
        _restore(run, snap)
    checkpoint_s = time_checkpoint(run) if run.ctx.is_main else 0.0  # only rank 0 writes; its plan is used
    costs = RunCosts(clock.mean_step_seconds(), time_evaluation(run), checkpoint_s, time_epoch_start(run))
    return costs, clock


def time_epoch_start(run: TrainRun) -> float:
    """Seconds an epoch's start adds: loader workers prefetch within an epoch, not across the boundary, so the
    first batch of each epoch waits for one batch to be made (0 without workers: every step already loads)."""
    if run.cfg.workers == 0:
        return 0.0
    tick = time.perf_counter()
    batches = iter(run.train_loader)
    next(batches)
    elapsed = time.perf_counter() - tick
    del batches
    return elapsed


def describe_plan(budget_s: float, costs: RunCosts, plan: BudgetPlan, full_iters: int, end_s: float) -> str:
    """The log line of a plan (``end_s``: its predicted end, seconds from the start of the budget)."""
    iters = f"{plan.iters_per_epoch} of {full_iters}" if plan.iters_per_epoch < full_iters else f"{full_iters}"
    return (f"time budget {budget_s / 60:g} min: {costs.step_s:.3f} s/step (mean over sizes), evaluation "
            f"{costs.eval_s:.1f} s, checkpoint {costs.checkpoint_s:.2f} s -> {plan.epochs} epochs x {iters} "
            f"iterations, warm-up {plan.warmup_epochs}, no-aug {plan.no_aug_epochs}, {plan.evaluations} "
            f"evaluations; planned end {end_s:.0f} s of {budget_s:.0f} s")  # fmt: skip


def plan_run(run: TrainRun, budget_s: float, started_at_s: float) -> BudgetPlan:
    """Calibrate, plan the time left of ``budget_s`` (counted from ``started_at_s``) and apply it to ``run``."""
    cfg = run.cfg
    costs, clock = measure_costs(run)
    available_s = budget_s * PLAN_FRACTION - (time.perf_counter() - started_at_s)
    plan = plan_budget(available_s, costs, run.iters_per_epoch, warmup_epochs=cfg.warmup_epochs,
                       no_aug_epochs=cfg.no_aug_epochs, eval_interval_epochs=cfg.eval_interval_epochs,
                       checkpoint_interval_epochs=cfg.checkpoint_interval_epochs,
                       has_val=run.val is not None, train_seconds=clock)  # fmt: skip
    epochs, iters, warmup, no_aug = broadcast_ints(
        [plan.epochs, plan.iters_per_epoch, plan.warmup_epochs, plan.no_aug_epochs], run.ctx
    )
    plan = dataclasses.replace(plan, epochs=epochs, iters_per_epoch=iters, warmup_epochs=warmup, no_aug_epochs=no_aug)
    full_iters = run.iters_per_epoch
    run.cfg = dataclasses.replace(
        cfg,
        epochs=epochs,
        warmup_epochs=warmup,
        no_aug_epochs=no_aug,
        max_iters_per_epoch=iters if iters < full_iters else cfg.max_iters_per_epoch,
    )
    run.iters_per_epoch = iters
    run.schedule = make_schedule(run.cfg, iters)
    # The final evaluation and both checkpoint files must still fit once training stops; +20 % for their jitter.
    run.deadline = Deadline(started_at_s + budget_s - 1.2 * costs.reserve_s)
    end_s = budget_s * PLAN_FRACTION - available_s + plan.planned_s
    run.notes = (*run.notes, describe_plan(budget_s, costs, plan, full_iters, end_s))
    return plan
