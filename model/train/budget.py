"""Planning a training run to a wall-clock budget (``yoloxpai train --time``): pure arithmetic, stdlib only.

Given measured costs (``model.train.calibrate`` times a few real steps, an evaluation and a checkpoint on the run
itself) ``plan_budget`` chooses the number of epochs and of iterations per epoch that fit the time left, with the
warm-up and no-augmentation epochs scaled as the CLI scales short runs (``short_run_schedule``) and every
evaluation and checkpoint of that schedule counted, including the final evaluation. The cosine schedule is then
laid over exactly these iterations. When the data allow more steps than whole epochs fit, the last partial epoch
is spread over all epochs (each epoch trains on a fresh random subset of ``iters_per_epoch`` batches), so the
budget is used, not rounded down to whole epochs.

The plan aims at ``PLAN_FRACTION`` of the budget; a ``Deadline`` (the budget minus the time the final evaluation
and checkpoints need) stops training if the run falls behind anyway.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from model.train.defaults import short_run_schedule

PLAN_FRACTION = 0.97  # of the budget the plan may fill; the rest absorbs jitter the calibration did not see
MAX_EPOCHS = 1_000_000


@dataclass(frozen=True)
class RunCosts:
    """Seconds per part of a run (``model.train.calibrate.measure_costs``).

    Args:
        step_s: one training step, averaged over the multiscale sizes (``plan_budget`` can be given the exact
            cumulative time of the run's own size sequence instead).
        eval_s: one evaluation of the validation split (0 without one).
        checkpoint_s: writing one checkpoint.
        epoch_start_s: what starting an epoch adds (the first batch is not prefetched).
    """

    step_s: float
    eval_s: float
    checkpoint_s: float
    epoch_start_s: float = 0.0

    @property
    def reserve_s(self) -> float:
        """What the end of a run needs after its last step: the final evaluation, ``last.pt`` and ``best.pt``."""
        return self.eval_s + 2 * self.checkpoint_s


@dataclass(frozen=True)
class BudgetPlan:
    """The schedule that fits: ``epochs`` x ``iters_per_epoch`` steps, warm-up and no-aug epochs, and the seconds
    it is predicted to take from the planning moment to the end of the final evaluation (``planned_s``)."""

    epochs: int
    iters_per_epoch: int
    warmup_epochs: int
    no_aug_epochs: int
    evaluations: int
    checkpoints: int
    planned_s: float

    @property
    def total_iters(self) -> int:
        """Training steps of the plan."""
        return self.epochs * self.iters_per_epoch


def _multiples_or_last(epochs: int, interval: int) -> int:
    """How many of epochs 1..``epochs`` are a multiple of ``interval`` or the last one."""
    return epochs // interval + (1 if epochs % interval else 0)


def evaluation_count(epochs: int, no_aug_epochs: int, eval_interval_epochs: int) -> int:
    """Evaluations the loop runs: after every ``interval``-th epoch, each no-aug epoch and the last epoch."""
    if no_aug_epochs == 0:
        return _multiples_or_last(epochs, eval_interval_epochs)
    return (epochs - no_aug_epochs) // eval_interval_epochs + no_aug_epochs


def checkpoint_writes(epochs: int, evaluations: int, checkpoint_interval_epochs: int) -> int:
    """Checkpoint files written: ``last.pt`` on its cadence and after each evaluation, ``best.pt`` at most once per
    evaluation (an upper bound: only improvements write it)."""
    return min(epochs, _multiples_or_last(epochs, checkpoint_interval_epochs) + evaluations) + evaluations


def piecewise_linear(x: float, points: dict[float, float]) -> float:
    """``points`` ({x: y}) joined by straight lines, held flat beyond the ends, evaluated at ``x``."""
    xs = sorted(points)
    if x <= xs[0]:
        return points[xs[0]]
    for x0, x1 in zip(xs, xs[1:], strict=False):
        if x <= x1:
            return points[x0] + (points[x1] - points[x0]) * (x - x0) / (x1 - x0)
    return points[xs[-1]]


def max_steps_within(seconds: float, train_seconds: Callable[[int], float]) -> int:
    """The most steps ``n`` with ``train_seconds(n) <= seconds`` (``train_seconds`` increasing, 0 at 0)."""
    if train_seconds(1) > seconds:
        return 0
    low, high = 1, 2
    while train_seconds(high) <= seconds:
        low, high = high, 2 * high
    while high - low > 1:  # train_seconds(low) fits, train_seconds(high) does not
        mid = (low + high) // 2
        low, high = (mid, high) if train_seconds(mid) <= seconds else (low, mid)
    return low


def plan_budget(
    available_s: float,
    costs: RunCosts,
    full_iters_per_epoch: int,
    *,
    warmup_epochs: int,
    no_aug_epochs: int,
    eval_interval_epochs: int,
    checkpoint_interval_epochs: int,
    has_val: bool,
    train_seconds: Callable[[int], float] | None = None,
) -> BudgetPlan:
    """The plan with the most training steps that fits ``available_s`` (ties: fewer epochs).

    ``warmup_epochs`` / ``no_aug_epochs`` are the wanted values, scaled down when the planned epochs are too few.
    ``train_seconds(n)``: seconds of the first ``n`` steps (default ``n * costs.step_s``). Raises ``ValueError``
    when not even one step fits.
    """
    if costs.step_s <= 0 or full_iters_per_epoch < 1:
        raise ValueError(f"need a positive step time and iterations per epoch, got {costs.step_s}, "
                         f"{full_iters_per_epoch}")  # fmt: skip
    if train_seconds is None:
        train_seconds = lambda n: n * costs.step_s  # noqa: E731
    best: BudgetPlan | None = None
    for epochs in range(1, MAX_EPOCHS + 1):
        warmup, no_aug = short_run_schedule(epochs, None, None, warmup_epochs, no_aug_epochs)
        evaluations = evaluation_count(epochs, no_aug, eval_interval_epochs) if has_val else 0
        checkpoints = checkpoint_writes(epochs, evaluations, checkpoint_interval_epochs)
        fixed_s = evaluations * costs.eval_s + checkpoints * costs.checkpoint_s + epochs * costs.epoch_start_s
        iters = min(full_iters_per_epoch, max_steps_within(available_s - fixed_s, train_seconds) // epochs)
        if iters < 1:
            break  # more epochs only add fixed costs
        plan = BudgetPlan(epochs, iters, warmup, no_aug, evaluations, checkpoints,
                          fixed_s + train_seconds(epochs * iters))  # fmt: skip
        if best is None or plan.total_iters > best.total_iters:
            best = plan
        if iters < full_iters_per_epoch:
            break  # partial epochs: more of them can only add fixed costs (and gain at most rounding)
    if best is None:
        one_step_s = costs.step_s + costs.eval_s * has_val + 2 * costs.checkpoint_s + costs.epoch_start_s
        raise ValueError(f"time budget too small: {max(available_s, 0.0):.1f} s left after setup and calibration, "
                         f"one step with its evaluation and checkpoint needs {one_step_s:.1f} s")  # fmt: skip
    return best


@dataclass(frozen=True)
class Deadline:
    """No training step starts after ``train_until_s`` (a ``time.perf_counter()`` value), so the final evaluation
    and checkpoints still end within the budget."""

    train_until_s: float

    def passed(self, now_s: float) -> bool:
        """True once ``now_s`` is at or after the deadline."""
        return now_s >= self.train_until_s
