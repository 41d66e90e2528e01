"""Run observability on rank 0: a text progress bar, TensorBoard scalars and ``metrics.jsonl``.

The progress line shows epoch/iteration, smoothed losses, lr, images/s, input size and ETA. On a terminal it
redraws in place; otherwise (CI, ``nohup``) it prints one line every ``print_interval`` iterations. Every line of
``metrics.jsonl`` is one JSON object with a ``kind`` (``train`` / ``eval`` / ``epoch``); TensorBoard is optional
(skipped with a note when the package is missing).
"""

from __future__ import annotations

import datetime
import json
import sys
import time
from collections import deque
from pathlib import Path
from typing import TextIO


class RunningMean:
    """Mean of the last ``window`` values (losses shown in the progress line)."""

    def __init__(self, window: int = 20) -> None:
        self.values: deque[float] = deque(maxlen=window)

    def add(self, value: float) -> None:
        """Record one value."""
        self.values.append(value)

    @property
    def mean(self) -> float:
        """Window mean (0 when empty)."""
        return sum(self.values) / len(self.values) if self.values else 0.0


class Monitor:
    """Progress bar + JSONL + TensorBoard for one run; inactive (all methods no-ops) on ranks other than 0."""

    def __init__(
        self,
        out_dir: str | Path,
        *,
        active: bool,
        total_iters: int,
        print_interval: int = 10,
        tensorboard: bool = True,
        progress: bool = True,
        stream: TextIO | None = None,
    ) -> None:
        self.active = active
        self.total_iters = total_iters
        self.print_interval = max(1, print_interval)
        self.progress = progress
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.means: dict[str, RunningMean] = {}
        self.step_times: deque[tuple[float, int]] = deque(maxlen=50)  # (seconds, images)
        self.tb = None
        self.jsonl = None
        if not active:
            return
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        self.jsonl = open(out / "metrics.jsonl", "a", encoding="utf-8")  # noqa: SIM115 (closed in close())
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(out / "tensorboard"))
            except ImportError as exc:
                self.log(f"TensorBoard disabled: {exc}")

    def log(self, message: str) -> None:
        """A plain message line (ends any in-place progress line first)."""
        if self.active:
            print(("\n" if self.tty and self.progress else "") + message, file=self.stream, flush=True)

    def write_record(self, record: dict) -> None:
        """Append one JSON line."""
        if self.jsonl is not None:
            self.jsonl.write(json.dumps(record) + "\n")
            self.jsonl.flush()

    def scalars(self, prefix: str, values: dict[str, float], step: int) -> None:
        """TensorBoard scalars ``prefix/name``."""
        if self.tb is not None:
            for key, value in values.items():
                self.tb.add_scalar(f"{prefix}/{key}", value, step)

    def train_step(
        self, *, epoch: int, epochs: int, iteration: int, epoch_iter: int, epoch_iters: int,
        losses: dict[str, float], lr: float, images: int, step_s: float, input_hw: tuple[int, int],
    ) -> None:  # fmt: skip
        """Record one optimizer step (``iteration`` = global steps done after it)."""
        if not self.active:
            return
        for key, value in losses.items():
            self.means.setdefault(key, RunningMean()).add(value)
        self.step_times.append((step_s, images))
        seconds = sum(t for t, _ in self.step_times)
        imgs_per_s = sum(n for _, n in self.step_times) / max(seconds, 1e-9)
        eta_s = seconds / len(self.step_times) * max(self.total_iters - iteration, 0)
        due = iteration % self.print_interval == 0 or epoch_iter == epoch_iters
        if due:
            record = {"kind": "train", "epoch": epoch + 1, "iteration": iteration, "lr": lr,
                      "images_per_s": imgs_per_s, "input_hw": list(input_hw), **losses}  # fmt: skip
            self.write_record(record)
            self.scalars("train", {**losses, "lr": lr, "images_per_s": imgs_per_s}, iteration)
        if self.progress and (self.tty or due):
            loss_text = " ".join(f"{k} {m.mean:.3f}" for k, m in self.means.items() if k != "num_fg")
            width = 20
            filled = int(width * epoch_iter / max(epoch_iters, 1))
            line = (
                f"epoch {epoch + 1}/{epochs} [{'#' * filled}{'.' * (width - filled)}] {epoch_iter}/{epoch_iters} "
                f"{loss_text} lr {lr:.2e} {imgs_per_s:.1f} img/s {input_hw[0]}x{input_hw[1]} "
                f"ETA {datetime.timedelta(seconds=int(eta_s))}"
            )
            print(("\r" + line) if self.tty else line, end="" if self.tty else "\n", file=self.stream, flush=True)

    def epoch_end(self, epoch: int, values: dict[str, float], step: int) -> None:
        """Record per-epoch values (eval metrics, times)."""
        if not self.active:
            return
        self.write_record({"kind": "epoch", "epoch": epoch + 1, "iteration": step, "time": time.time(), **values})
        self.scalars("epoch", values, step)

    def eval_result(self, epoch: int, metrics: dict[str, float], step: int) -> None:
        """Record COCO metrics of one evaluation."""
        if not self.active:
            return
        self.write_record({"kind": "eval", "epoch": epoch + 1, "iteration": step, **metrics})
        self.scalars("val", metrics, step)

    def close(self) -> None:
        """Flush and close the files."""
        if self.tb is not None:
            self.tb.close()
        if self.jsonl is not None:
            self.jsonl.close()
            self.jsonl = None
