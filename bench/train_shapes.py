"""Train on the synthetic shapes dataset within a time budget and print mAP and throughput.

    python bench/train_shapes.py --time-budget-min 10                      # yolox-nano at 256 px
    python bench/train_shapes.py --presets yolox-nano,yolox-tiny --img-size 320 --time-budget-min 20
    python bench/train_shapes.py --inits scratch,default --time-budget-min 20 --curve   # fine-tune vs scratch

Each run (preset x initialisation) gets an equal share of the budget. ``--inits``: ``scratch``, ``default`` (the
embedded COCO YOLOX-Nano) or a weights file; a run from weights fine-tunes with the CLI's fine-tune defaults (lr
0.25 x Megvii's 0.01/64, one warm-up epoch; the class layers are re-initialised for the 6 shapes). A short
calibration (a few real training steps) measures the step time; the number of epochs is then chosen so training
plus the evaluation(s) fit the share, and the schedule (warm-up, cosine, no-aug phase) is laid out over exactly
those epochs. The printed wall time is the measured one.
Recipe: the preset's augmentation and SimOTA/losses; lr per image ``--lr-per-img`` (default 16x Megvii's 0.01/64,
because a few hundred steps from scratch need it); EMA as the reference; evaluation of the EMA model on the
val split with faster-coco-eval.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from bench.machine import describe  # noqa: E402
from model.data.shapes import make_shapes_dataset  # noqa: E402
from model.distributed import init_distributed  # noqa: E402
from model.train.config import FINETUNE_LR_SCALE, FINETUNE_WARMUP_EPOCHS, TrainConfig  # noqa: E402
from model.train.loop import train, train_one_epoch  # noqa: E402
from model.train.monitor import Monitor  # noqa: E402
from model.train.run import build_run  # noqa: E402

CALIBRATION_STEPS = 8
SAFETY = 0.85  # share of the budget planned for training; the rest absorbs eval, checkpoints and jitter


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line flags."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--presets", default="yolox-nano", help="comma-separated preset names")
    p.add_argument("--inits", default="scratch", help="comma-separated: scratch | default | a weights file")
    p.add_argument("--finetune-lr-per-img", type=float, default=FINETUNE_LR_SCALE * 0.01 / 64)
    p.add_argument("--curve", action="store_true", help="evaluate after every epoch (counted in the budget)")
    p.add_argument("--img-size", type=int, default=256, help="square training/eval size (multiple of 32)")
    p.add_argument("--train-images", type=int, default=1000)
    p.add_argument("--val-images", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr-per-img", type=float, default=0.16 / 64)
    p.add_argument("--time-budget-min", type=float, default=10.0, help="total for all runs")
    p.add_argument("--multiscale-range", type=int, default=2, help="sizes 32 * (S/32 -/+ R); 0 disables")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1 + one loader worker = 2 cores)")
    p.add_argument("--device", default="auto")
    p.add_argument("--data-dir", help="shapes dataset folder (generated if missing; default: a temp folder)")
    p.add_argument("--out-dir", help="run folders (default: a temp folder)")
    return p.parse_args(argv)


def init_weights(init: str) -> str | None:
    """``scratch`` -> None, ``default`` -> the embedded COCO weights, else a path."""
    if init == "scratch":
        return None
    if init == "default":
        from model.artifacts import default_weights_path

        return str(default_weights_path())
    return init


def base_config(preset: str, init: str, data: Path, out: Path, args: argparse.Namespace) -> TrainConfig:
    """The recipe before the epoch count is known."""
    weights = init_weights(init)
    return TrainConfig(
        arch=preset, data=str(data), out_dir=str(out), epochs=1, batch_size=args.batch_size,
        input_hw=(args.img_size, args.img_size), device=args.device, workers=args.workers, weights=weights,
        finetune=weights is not None,
        basic_lr_per_img=args.finetune_lr_per_img if weights else args.lr_per_img,
        multiscale_range=args.multiscale_range, warmup_epochs=0, no_aug_epochs=0, tensorboard=False, progress=False,
    )  # fmt: skip


class StepTimer(Monitor):
    """Records each step's wall time instead of logging it."""

    def __init__(self) -> None:
        super().__init__(".", active=False, total_iters=0)
        self.times: list[float] = []

    def train_step(self, **kwargs) -> None:
        """Keep ``step_s``."""
        self.times.append(kwargs["step_s"])


def seconds_per_step(cfg: TrainConfig) -> tuple[float, int]:
    """(median seconds per training step over a few real steps, iterations per epoch)."""
    run = build_run(dataclasses.replace(cfg, out_dir=cfg.out_dir + "-calibration"), init_distributed(cfg.device))
    iters_per_epoch = run.iters_per_epoch
    run.iters_per_epoch = CALIBRATION_STEPS + 2
    timer = StepTimer()
    run.train_loader.set_epoch(0)
    train_one_epoch(run, 0, use_l1=False, monitor=timer)
    # The first two steps warm up the allocator, oneDNN kernels and workers; the median ignores a stray slow step.
    return statistics.median(timer.times[2:]), iters_per_epoch


def plan_epochs(
    step_s: float, iters_per_epoch: int, val_images: int, batch: int, budget_s: float, every_epoch: bool
) -> int:
    """Epochs that fit ``budget_s`` with one final evaluation, or one per epoch (inference ~ 1/3 of a training
    step per image)."""
    eval_s = val_images * step_s / batch / 3 + 5.0
    if every_epoch:
        return max(1, math.floor(budget_s * SAFETY / (step_s * iters_per_epoch + eval_s)))
    return max(1, math.floor((budget_s * SAFETY - eval_s) / (step_s * iters_per_epoch)))


def eval_curve(out: Path) -> list[tuple[int, float]]:
    """(epoch, mAP50:95) of every evaluation the run logged."""
    import json

    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [(r["epoch"], r["AP50:95"]) for r in records if r.get("kind") == "eval"]


def bench_run(preset: str, init: str, data: Path, out: Path, args: argparse.Namespace, budget_s: float) -> dict:
    """Calibrate, train and evaluate one preset from one initialisation; return its table row."""
    cfg = base_config(preset, init, data, out, args)
    step_s, iters_per_epoch = seconds_per_step(cfg)
    epochs = plan_epochs(step_s, iters_per_epoch, args.val_images, args.batch_size, budget_s, args.curve)
    warmup = FINETUNE_WARMUP_EPOCHS if cfg.weights else min(5, max(1, epochs // 10))
    cfg = dataclasses.replace(cfg, epochs=epochs, warmup_epochs=min(warmup, epochs - 1),
                              no_aug_epochs=1 if epochs > 2 else 0,
                              eval_interval_epochs=1 if args.curve else epochs)  # fmt: skip
    print(f"{preset} from {init}: {step_s:.3f} s/step x {iters_per_epoch} steps/epoch -> {epochs} epochs", flush=True)
    summary = train(cfg)
    result = summary.last_eval
    return {"preset": preset, "init": init, "img": args.img_size, "epochs": epochs, "wall_s": summary.wall_s,
            "img_s": summary.images_per_s, "map": result.ap50_95, "map50": result.ap50,
            "curve": eval_curve(out)}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the table."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)  # two spinning OpenMP threads plus a loader worker thrash 2 cores
    presets = [p.strip() for p in args.presets.split(",") if p.strip()]
    workdir = Path(tempfile.mkdtemp(prefix="yoloxpai-bench-"))
    data = Path(args.data_dir) if args.data_dir else workdir / "shapes"
    if not (data / "annotations" / "instances_train.json").is_file():
        start = time.perf_counter()
        make_shapes_dataset(data, train=args.train_images, val=args.val_images, img_size=args.img_size, seed=0)
        print(f"generated {args.train_images}+{args.val_images} shapes images in {time.perf_counter() - start:.0f} s")
    out = Path(args.out_dir) if args.out_dir else workdir / "runs"
    inits = [i.strip() for i in args.inits.split(",") if i.strip()]
    budget_s = args.time_budget_min * 60 / (len(presets) * len(inits))
    print(describe())
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, budget {budget_s / 60:.1f} min/run")
    rows = [bench_run(p, i, data, out / f"{p}-{Path(i).stem}", args, budget_s) for p in presets for i in inits]
    header = (f"{'preset':<14} {'init':<10} {'img':>4} {'epochs':>6} {'wall s':>7} {'img/s':>7} {'mAP50:95':>9} "
              f"{'mAP50':>7}")  # fmt: skip
    print("\n" + header + "\n" + "-" * len(header))
    for r in rows:
        print(f"{r['preset']:<14} {Path(r['init']).stem:<10} {r['img']:>4} {r['epochs']:>6} {r['wall_s']:>7.0f} "
              f"{r['img_s']:>7.1f} {r['map']:>9.4f} {r['map50']:>7.4f}")  # fmt: skip
    if args.curve:
        print("\nmAP50:95 after each epoch")
        for r in rows:
            points = "  ".join(f"{epoch}: {ap:.4f}" for epoch, ap in r["curve"])
            print(f"{r['preset']} from {Path(r['init']).stem}: {points}")
    over = [f"{r['preset']} from {r['init']}" for r in rows if r["wall_s"] > budget_s]
    if over:
        print(f"over budget: {', '.join(over)} (the calibration underestimated the step time)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
