"""Two-process DDP (gloo, CPU): the run completes, ranks agree on weights and on the gathered evaluation."""

from __future__ import annotations

import dataclasses
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from model.distributed import init_distributed, shutdown_distributed
from model.train.config import TrainConfig
from model.train.ema import unwrap
from model.train.loop import fit
from model.train.run import build_run
from tests.train.test_train_loop import tiny_config


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world_size: int, port: int, cfg_dict: dict, out_dir: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))  # fmt: skip
    torch.set_num_threads(1)  # two processes on two cores
    ctx = init_distributed("cpu")
    try:
        assert ctx.backend == "gloo" and ctx.world_size == world_size
        run = build_run(TrainConfig.from_dict(cfg_dict), ctx)
        summary = fit(run)
        torch.save(
            {"model": unwrap(run.model).state_dict(), "ema": run.ema.state_dict(), "iteration": run.iteration,
             "iters_per_epoch": run.iters_per_epoch, "stats": summary.last_eval.stats},
            Path(out_dir) / f"rank{rank}.pt",
        )  # fmt: skip
    finally:
        shutdown_distributed()


@pytest.mark.timeout(300)
def test_two_process_gloo_run_agrees(tiny_shapes: Path, tmp_path: Path) -> None:
    cfg = dataclasses.replace(tiny_config(tiny_shapes, tmp_path / "run"), epochs=2, no_aug_epochs=1)
    mp.spawn(_worker, args=(2, _free_port(), cfg.to_dict(), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    # 8 images, global batch 4 -> 2 per rank, 4 images per rank per epoch -> 2 steps per epoch.
    assert r0["iters_per_epoch"] == r1["iters_per_epoch"] == 2
    assert r0["iteration"] == r1["iteration"] == 4
    # Parameters agree through DDP, BN statistics through the epoch-end all-reduce (model and EMA).
    for name in ("model", "ema"):
        for key, value in r0[name].items():
            torch.testing.assert_close(r1[name][key], value, rtol=0, atol=1e-6, msg=f"{name} {key}")
    assert r0["stats"] == r1["stats"]  # rank 0 scored the gathered detections and broadcast the result
    ckpt = torch.load(tmp_path / "run" / "last.pt", weights_only=True)  # written by rank 0 only
    torch.testing.assert_close(ckpt["model"]["head.cls_preds.0.weight"], r0["model"]["head.cls_preds.0.weight"])
    assert ckpt["train_config"]["batch_size"] == 4
