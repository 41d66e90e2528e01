"""AP after a fixed wall-clock budget: ``yoloxpai train --time`` on the synthetic shapes set, per budget and init.

    python bench/train_shapes.py --img-size 320 --train-images 2000 --val-images 200 --budgets 10,20,40 \\
        --inits scratch,default --json budgets.json          # docs/benchmarks.md, "Time budgets"
    python bench/train_shapes.py --inits scratch,default --time-budget-min 20 --curve   # 10 min each, AP per epoch

Each run is the real command, ``yoloxpai train --time MINUTES`` in a fresh process (it calibrates its step time,
plans epochs, warm-up, no-aug phase and cosine schedule to the budget, and stops at the deadline if it falls
behind), with the recipe's defaults: only the flags given here (``--batch-size``, ``--lr-per-img``,
``--multiscale-range``) change them. ``--inits``: ``scratch``, ``default`` (fine-tune the embedded COCO
YOLOX-Nano, with the CLI's fine-tune defaults) or a weights file. ``--budgets`` are minutes per run;
``--time-budget-min`` instead splits one total equally over all runs. The shapes set is generated on the fly
unless ``--data-dir`` holds one. Prints one row per run (wall time measured around the process) and writes them
as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.machine import describe  # noqa: E402
from model.data.shapes import make_shapes_dataset  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line flags."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--presets", default="yolox-nano", help="comma-separated preset names")
    p.add_argument("--inits", default="scratch", help="comma-separated: scratch | default | a weights file")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--budgets", help="comma-separated minutes per run, e.g. 10,20,40 (default 10)")
    budget.add_argument("--time-budget-min", type=float, help="total minutes, split equally over all runs")
    p.add_argument("--curve", action="store_true", help="evaluate after every epoch (counted in the budget)")
    p.add_argument("--img-size", type=int, default=256, help="square training/eval size (multiple of 32)")
    p.add_argument("--train-images", type=int, default=1000)
    p.add_argument("--val-images", type=int, default=100)
    p.add_argument("--batch-size", type=int, help="default: yoloxpai train's (64)")
    p.add_argument("--lr-per-img", type=float, help="default: yoloxpai train's (0.01/64; x0.25 fine-tuning)")
    p.add_argument("--multiscale-range", type=int, help="default: the recipe's")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--threads", type=int, default=1, help="OMP threads per run (1 + one loader worker = 2 cores)")
    p.add_argument("--device", default="auto")
    p.add_argument("--data-dir", help="shapes dataset folder (generated if missing; default: a temp folder)")
    p.add_argument("--out-dir", help="run folders (default: a temp folder)")
    p.add_argument("--json", help="write the rows here (default: OUT_DIR/train_shapes.json)")
    return p.parse_args(argv)


def budgets_min(args: argparse.Namespace, runs_per_budget: int) -> list[float]:
    """Minutes per run."""
    if args.time_budget_min is not None:
        return [args.time_budget_min / runs_per_budget]
    return [float(b) for b in (args.budgets or "10").split(",") if b.strip()]


def train_command(preset: str, init: str, minutes: float, data: Path, out: Path, args: argparse.Namespace) -> list:
    """The ``yoloxpai train --time`` command line of one run."""
    cmd = [sys.executable, "-m", "yoloxpai.cli", "train", "--arch", preset, "--data", str(data), "--out", str(out),
           "--time", f"{minutes:g}", "--img-size", str(args.img_size), "--workers", str(args.workers),
           "--device", args.device, "--no-tensorboard", "--no-progress"]  # fmt: skip
    if init != "scratch":
        cmd += ["--weights", init]
    for flag, value in (
        ("--batch-size", args.batch_size),
        ("--lr-per-img", args.lr_per_img),
        ("--multiscale-range", args.multiscale_range),
        ("--eval-interval", 1 if args.curve else None),
    ):
        if value is not None:
            cmd += [flag, str(value)]
    return cmd


def read_run(out: Path) -> dict:
    """Planned schedule and evaluations of a finished run folder."""
    cfg = json.loads((out / "train_config.json").read_text())
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    evals = [r for r in records if r.get("kind") == "eval"]
    steps = [r["iteration"] for r in records if r.get("kind") == "train"]
    final = evals[-1] if evals else {}
    return {"epochs_planned": cfg["epochs"], "epochs": final.get("epoch", 0), "iterations": max(steps, default=0),
            "map": final.get("AP50:95", float("nan")), "map50": final.get("AP50", float("nan")),
            "curve": [(r["epoch"], r["AP50:95"]) for r in evals]}  # fmt: skip


def bench_run(preset: str, init: str, minutes: float, data: Path, out: Path, args: argparse.Namespace) -> dict:
    """Run one ``yoloxpai train --time`` process; return its row."""
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    print(f"{preset} from {init}, {minutes:g} min ...", flush=True)
    tick = time.perf_counter()
    done = subprocess.run(train_command(preset, init, minutes, data, out, args), cwd=REPO, env=env,
                          capture_output=True, text=True, check=False)  # fmt: skip
    wall_s = time.perf_counter() - tick
    if done.returncode != 0:
        raise RuntimeError(f"yoloxpai train failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    plan = [line for line in done.stderr.splitlines() if line.startswith("time budget")]
    row = {"preset": preset, "init": Path(init).stem, "budget_min": minutes, "wall_s": round(wall_s, 1),
           "stopped_early": "stopped at the time budget" in done.stdout, "plan": plan[0] if plan else "",
           **read_run(out)}  # fmt: skip
    print(f"  {row['plan']}\n  {done.stdout.strip().splitlines()[-1]}", flush=True)
    return row


def print_table(rows: list[dict], curve: bool) -> None:
    """The AP table (and the per-epoch curves)."""
    header = (f"{'preset':<14} {'init':<10} {'budget':>6} {'wall s':>7} {'epochs':>6} {'iters':>6} {'AP50:95':>8} "
              f"{'AP50':>7}")  # fmt: skip
    print("\n" + header + "\n" + "-" * len(header))
    for r in rows:
        epochs = f"{r['epochs']}{'*' if r['stopped_early'] else ''}"
        print(f"{r['preset']:<14} {r['init']:<10} {r['budget_min']:>6g} {r['wall_s']:>7.0f} {epochs:>6} "
              f"{r['iterations']:>6} {r['map']:>8.4f} {r['map50']:>7.4f}")  # fmt: skip
    if any(r["stopped_early"] for r in rows):
        print("* stopped at the deadline before the planned last epoch")
    if curve:
        print("\nAP50:95 after each epoch")
        for r in rows:
            print(f"{r['preset']} from {r['init']}, {r['budget_min']:g} min: "
                  + "  ".join(f"{e}: {ap:.4f}" for e, ap in r["curve"]))  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Generate the data if needed, run every (preset, init, budget), print and save the table."""
    args = parse_args(argv)
    presets = [p.strip() for p in args.presets.split(",") if p.strip()]
    inits = [i.strip() for i in args.inits.split(",") if i.strip()]
    workdir = Path(tempfile.mkdtemp(prefix="yoloxpai-bench-"))
    data = Path(args.data_dir) if args.data_dir else workdir / "shapes"
    if not (data / "annotations" / "instances_train.json").is_file():
        start = time.perf_counter()
        make_shapes_dataset(data, train=args.train_images, val=args.val_images, img_size=args.img_size, seed=0)
        print(f"generated {args.train_images}+{args.val_images} shapes images in {time.perf_counter() - start:.0f} s")
    out = Path(args.out_dir) if args.out_dir else workdir / "runs"
    print(describe())
    rows = [bench_run(p, i, m, data, out / f"{p}-{Path(i).stem}-{m:g}min", args)
            for m in budgets_min(args, len(presets) * len(inits)) for p in presets for i in inits]  # fmt: skip
    print_table(rows, args.curve)
    json_path = Path(args.json) if args.json else out / "train_shapes.json"
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps({"machine": describe(), "args": vars(args), "rows": rows}, indent=2))
    print(f"\nrows written to {json_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
