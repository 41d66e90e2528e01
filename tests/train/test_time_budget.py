"""``yoloxpai train --time``: the planner's arithmetic, a short budgeted run end to end, the deadline stop, the
CLI's refusals and the budget benchmark's one command."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from model.distributed import init_distributed
from model.train.budget import (
    Deadline,
    RunCosts,
    checkpoint_writes,
    evaluation_count,
    max_steps_within,
    piecewise_linear,
    plan_budget,
)
from model.train.calibrate import DrawnSizeClock
from model.train.loop import fit
from model.train.multiscale import MultiscalePolicy
from model.train.run import build_run
from tests.train.test_train_loop import tiny_config
from yoloxpai.cli import main

REPO = Path(__file__).resolve().parents[2]
PLAN_KW = dict(warmup_epochs=5, no_aug_epochs=15, eval_interval_epochs=10, checkpoint_interval_epochs=1, has_val=True)


@pytest.mark.parametrize("interval", [1, 3, 10])
@pytest.mark.parametrize("no_aug", [0, 1, 4])
def test_evaluation_count_matches_the_loop_rule(interval: int, no_aug: int) -> None:
    for epochs in range(max(1, no_aug), 40):
        expected = sum(1 for e in range(epochs)
                       if (e + 1) % interval == 0 or e >= epochs - no_aug or e + 1 == epochs)  # fmt: skip
        assert evaluation_count(epochs, no_aug, interval) == expected, (epochs, no_aug, interval)


def test_plan_counts_evaluations_and_checkpoints() -> None:
    costs = RunCosts(step_s=1.0, eval_s=10.0, checkpoint_s=1.0)
    plan = plan_budget(1000.0, costs, 50, **PLAN_KW)
    # 18 whole epochs: warm-up 1, no-aug 18 // 5 = 3, evaluations after epoch 10 and the 3 no-aug ones (4),
    # 18 last.pt + 4 best.pt -> 900 + 40 + 22 = 962 s. 19 epochs need 950 + 40 + 23 > 1000, but 19 x 49 steps fit
    # (931 + 63 = 994 s) and train more than 18 x 50.
    assert (plan.epochs, plan.iters_per_epoch, plan.warmup_epochs, plan.no_aug_epochs) == (19, 49, 1, 3)
    assert (plan.evaluations, plan.checkpoints, plan.planned_s) == (4, 23, 994.0)
    # every 5 epochs + the last (4), after each evaluation (4), best.pt (4): an upper bound (overlaps counted twice)
    assert checkpoint_writes(18, 4, 1) == 22 and checkpoint_writes(18, 4, 5) == 4 + 4 + 4


def test_plan_spreads_a_partial_epoch_over_all_epochs() -> None:
    costs = RunCosts(step_s=1.0, eval_s=0.0, checkpoint_s=0.0)
    plan = plan_budget(450.0, costs, 125, **PLAN_KW)  # 3.6 epochs' worth of steps
    assert plan.epochs == 4 and plan.iters_per_epoch == 112 and plan.total_iters == 448
    assert (plan.warmup_epochs, plan.no_aug_epochs) == (1, 0)


def test_plan_keeps_wanted_schedules_that_fit_and_refuses_tiny_budgets() -> None:
    costs = RunCosts(step_s=0.01, eval_s=0.0, checkpoint_s=0.0)
    plan = plan_budget(300.0, costs, 100, **{**PLAN_KW, "warmup_epochs": 1})
    assert plan.epochs == 300 and (plan.warmup_epochs, plan.no_aug_epochs) == (1, 15)
    with pytest.raises(ValueError, match="time budget too small"):
        plan_budget(5.0, RunCosts(step_s=2.0, eval_s=10.0, checkpoint_s=1.0), 10, **PLAN_KW)


def test_step_time_helpers() -> None:
    points = {100.0: 1.0, 200.0: 3.0, 400.0: 4.0}
    assert [piecewise_linear(x, points) for x in (50, 150, 300, 500)] == [1.0, 2.0, 3.5, 4.0]
    assert max_steps_within(10.0, lambda n: 3.0 * n) == 3 and max_steps_within(2.0, lambda n: 3.0 * n) == 0
    assert max_steps_within(1e6, lambda n: 0.5 * n) == 2_000_000


def test_clock_follows_the_runs_own_size_sequence() -> None:
    policy = MultiscalePolicy((320, 320), 10, (5, 15), seed=0)
    clock = DrawnSizeClock(policy, {160 * 160: 0.4, 320 * 320: 1.0, 480 * 480: 2.5})
    expected = sum(piecewise_linear(h * w, clock.seconds_by_area) for h, w in map(policy.draw, range(45)))
    assert clock(45) == pytest.approx(expected) and clock(10) == pytest.approx(10.0)  # block 0: input_hw
    resumed = DrawnSizeClock(policy, clock.seconds_by_area, first_iteration=10)
    assert resumed(10) == pytest.approx(clock(20) - clock(10))
    # a long run meets every size equally often: its mean step is the clock's average over the sizes
    assert clock(20_000) / 20_000 == pytest.approx(clock.mean_step_seconds(), rel=0.02)


def test_time_budget_run_ends_within_the_budget(tiny_shapes: Path, tmp_path: Path, capsys, one_thread) -> None:
    out, budget_min = tmp_path / "timed", 0.3
    tick = time.perf_counter()
    code = main(["train", "--arch", "yolox-nano", "--data", str(tiny_shapes), "--out", str(out), "--time",
                 str(budget_min), "-b", "4", "--img-size", "64", "--multiscale-sizes", "2", "3", "--device", "cpu",
                 "--workers", "0", "--no-tensorboard", "--no-progress"])  # fmt: skip
    wall_s = time.perf_counter() - tick
    assert code == 0
    captured = capsys.readouterr()
    assert "time budget 0.3 min:" in captured.err and "mAP50:95" in captured.out
    # The plan aims at 97 % of the budget; the deadline caps it (plus the final evaluation the reserve covers).
    assert 0.6 * budget_min * 60 <= wall_s <= 1.1 * budget_min * 60, wall_s
    assert (out / "last.pt").is_file() and (out / "best.pt").is_file()
    ckpt = torch.load(out / "last.pt", weights_only=True)
    planned = ckpt["train_config"]
    assert planned["time_budget_min"] == budget_min and planned["epochs"] > 1
    assert planned["warmup_epochs"] + planned["no_aug_epochs"] <= planned["epochs"]
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in records if r["kind"] == "eval"]
    assert evals and evals[-1]["epoch"] == ckpt["epoch"] + 1 and "AP50:95" in evals[-1]


class SlowLoss:
    """The run's loss, made slow: a machine that got busier after the calibration."""

    def __init__(self, loss_fn, delay_s: float) -> None:
        self.loss_fn, self.delay_s = loss_fn, delay_s

    def __call__(self, *args, **kwargs):
        time.sleep(self.delay_s)
        return self.loss_fn(*args, **kwargs)


def test_overrun_stops_cleanly_with_checkpoint_and_final_evaluation(tiny_shapes: Path, tmp_path: Path) -> None:
    cfg = tiny_config(tiny_shapes, tmp_path / "slow", epochs=20, eval_interval_epochs=50, no_aug_epochs=2)
    run = build_run(cfg, init_distributed("cpu"))
    run.loss_fn = SlowLoss(run.loss_fn, 0.2)  # 20 epochs x 2 steps >= 8 s of training
    tick = time.perf_counter()
    run.deadline = Deadline(tick + 2.0)
    summary = fit(run)
    wall_s = time.perf_counter() - tick
    assert summary.stopped_early and 1 <= summary.epochs < 20
    assert wall_s < 6.0  # the deadline plus one step, the final evaluation and the checkpoints
    ckpt = torch.load(tmp_path / "slow" / "last.pt", weights_only=True)
    assert ckpt["epoch"] == summary.epochs - 1 and ckpt["iteration"] == summary.iterations < 40
    assert (tmp_path / "slow" / "best.pt").is_file() and summary.last_eval is not None
    records = [json.loads(line) for line in (tmp_path / "slow" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records if r["kind"] == "eval"] == [summary.epochs]  # only the final evaluation


def test_time_refuses_epochs_and_resume(tmp_path: Path, capsys) -> None:
    base = ["train", "--arch", "yolox-nano", "--data", str(tmp_path), "--out", str(tmp_path / "o"), "--time", "1"]
    assert main([*base, "--epochs", "3"]) == 2
    assert "--time plans the epochs" in capsys.readouterr().err
    assert main(["train", "--out", str(tmp_path / "o"), "--resume", "--time", "1"]) == 2
    assert "--time plans the epochs" in capsys.readouterr().err


def test_budget_benchmark_is_one_command(tmp_path: Path) -> None:
    out = tmp_path / "bench"
    done = subprocess.run(
        [sys.executable, "bench/train_shapes.py", "--budgets", "0.15", "--inits", "scratch", "--train-images", "12",
         "--val-images", "4", "--img-size", "64", "--batch-size", "4", "--workers", "0", "--out-dir", str(out),
         "--json", str(out / "rows.json")],
        cwd=REPO, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "AP50:95" in done.stdout and "yolox-nano     scratch" in done.stdout
    rows = json.loads((out / "rows.json").read_text())["rows"]
    assert len(rows) == 1 and rows[0]["budget_min"] == 0.15 and rows[0]["epochs"] >= 1
    assert rows[0]["plan"].startswith("time budget 0.15 min") and 0 <= rows[0]["map"] <= 1


def test_deadline_with_a_fresh_run_does_not_change_unbudgeted_runs(tiny_shapes: Path, tmp_path: Path) -> None:
    cfg = dataclasses.replace(tiny_config(tiny_shapes, tmp_path / "plain"), epochs=1, no_aug_epochs=0)
    run = build_run(cfg, init_distributed("cpu"))
    assert run.deadline is None and not fit(run).stopped_early
