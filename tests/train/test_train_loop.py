"""The training loop end to end on tiny data: resume equivalence, checkpoint format, the CLI commands."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from model.checkpoint import load_model
from model.distributed import init_distributed
from model.train.config import TrainConfig
from model.train.loop import fit, train
from model.train.run import build_run
from yoloxpai.cli import main


def tiny_config(data: Path, out_dir: Path, **changes) -> TrainConfig:
    """3 epochs x 2 steps of a nano at 64 px: warm-up, cosine, no-aug + L1, multiscale every step."""
    cfg = TrainConfig(
        arch="yolox-nano", data=str(data), out_dir=str(out_dir), epochs=3, batch_size=4, input_hw=(64, 64),
        device="cpu", workers=0, warmup_epochs=1, no_aug_epochs=1, eval_interval_epochs=1,
        multiscale_sizes_32=(2, 3), multiscale_interval_iters=1, print_interval_iters=1, tensorboard=False,
        progress=False, augment="nano",
    )  # fmt: skip
    return dataclasses.replace(cfg, **changes)


def train_records(out_dir: Path) -> dict[int, dict]:
    lines = (out_dir / "metrics.jsonl").read_text().splitlines()
    return {r["iteration"]: r for r in map(json.loads, lines) if r["kind"] == "train"}


@pytest.fixture(scope="module")
def runs(tiny_shapes: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """An uninterrupted run and one stopped after epoch 1 and resumed from its last.pt."""
    full, split = tmp_path_factory.mktemp("full"), tmp_path_factory.mktemp("split")
    train(tiny_config(tiny_shapes, full))
    cfg = tiny_config(tiny_shapes, split)
    fit(build_run(cfg, init_distributed("cpu")), until_epoch=1)
    assert torch.load(split / "last.pt", weights_only=True)["epoch"] == 0
    train(dataclasses.replace(cfg, resume=str(split / "last.pt")))
    return full, split


def test_resume_reproduces_the_uninterrupted_run(runs) -> None:
    full, split = runs
    a, b = train_records(full), train_records(split)
    assert sorted(a) == sorted(b) == list(range(1, 7))
    for it in range(3, 7):  # the steps after the resume point
        for key in ("total", "iou", "obj", "cls", "l1", "num_fg", "lr"):
            assert b[it][key] == pytest.approx(a[it][key], rel=1e-5, abs=1e-7), (it, key)
        assert b[it]["input_hw"] == a[it]["input_hw"]
    assert {tuple(r["input_hw"]) for r in a.values()} <= {(64, 64), (96, 96)}
    assert a[6]["l1"] > 0 and a[2]["l1"] == 0  # L1 only in the no-aug epoch
    ca, cb = (torch.load(d / "last.pt", weights_only=True) for d in runs)
    assert ca["iteration"] == cb["iteration"] == 6 and ca["ema_updates"] == cb["ema_updates"] == 6
    for key, value in ca["ema"].items():
        torch.testing.assert_close(cb["ema"][key], value, rtol=1e-4, atol=1e-6)


def test_checkpoint_format(runs) -> None:
    full, _ = runs
    ckpt = torch.load(full / "last.pt", weights_only=True)  # no arbitrary unpickling needed
    assert ckpt["format"] == "yoloxpai.checkpoint" and ckpt["format_version"] == 1
    assert ckpt["class_names"] == ["circle", "square", "triangle", "star", "hexagon", "cross"]
    assert ckpt["epoch"] == 2 and tuple(ckpt["config"]["input_hw"]) == (64, 64)
    assert {"model", "ema", "optimizer", "scaler", "best_map", "train_config", "rng"} <= set(ckpt)
    assert ckpt["train_config"]["epochs"] == 3
    assert (full / "best.pt").is_file() and not list(full.glob("*.tmp")) and not list(full.glob(".*tmp"))
    model, info = load_model(full / "last.pt")
    assert info.source == "ema" and info.class_names[0] == "circle"
    torch.testing.assert_close(model.state_dict()["head.cls_preds.0.bias"], ckpt["ema"]["head.cls_preds.0.bias"])
    records = [json.loads(line) for line in (full / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in records if r["kind"] == "eval"]
    assert len(evals) == 3 and "AP50:95" in evals[-1] and "AR_large" in evals[-1]


def test_cli_train_resume_guard_and_eval(runs, tiny_shapes: Path, tmp_path: Path, capsys) -> None:
    full, _ = runs
    out = tmp_path / "cli"
    code = main(["train", "--arch", "yolox-nano", "--data", str(tiny_shapes), "--out", str(out), "--epochs", "1",
                 "-b", "4", "--img-size", "64", "--device", "cpu", "--workers", "0", "--warmup-epochs", "0",
                 "--no-aug-epochs", "0", "--multiscale-range", "0", "--no-tensorboard", "--no-progress"])  # fmt: skip
    assert code == 0
    assert "checkpoints in" in capsys.readouterr().out and (out / "last.pt").is_file()
    # Resuming with another schedule is refused with a message, not a traceback.
    assert main(["train", "--out", str(out), "--resume", "--epochs", "5"]) == 2
    assert "same schedule" in capsys.readouterr().err
    assert main(["eval", "--weights", str(full / "best.pt"), "--data", str(tiny_shapes), "--device", "cpu",
                 "--workers", "0", "--json", str(tmp_path / "m.json")]) == 0  # fmt: skip
    text = capsys.readouterr().out
    assert "AP50:95" in text and "AR_large" in text and "hexagon" in text
    assert set(json.loads((tmp_path / "m.json").read_text())["metrics"]) >= {"AP50:95", "AP50"}


def test_train_errors_are_reported(tmp_path: Path, capsys) -> None:
    assert main(["train", "--arch", "yolox-nano", "--data", str(tmp_path / "missing"), "--out", str(tmp_path)]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["train", "--data", str(tmp_path)]) == 2
    assert "--arch" in capsys.readouterr().err


def test_train_config_round_trip_and_resume_guard() -> None:
    cfg = TrainConfig(arch="yolox-s", data="d", model_overrides=(("width", 0.25),), input_hw=(320, 416))
    again = TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg
    moved = dataclasses.replace(cfg, data="elsewhere", device="cuda", workers=8, amp=True)
    assert moved.schedule_differences(cfg) == []  # where/how it runs may change on resume
    changed = dataclasses.replace(cfg, epochs=30, iou_loss="siou")
    assert {d.split(":")[0] for d in changed.schedule_differences(cfg)} == {"epochs", "iou_loss"}
    with pytest.raises(ValueError, match="no_aug_epochs"):
        TrainConfig(epochs=5, no_aug_epochs=6)
    with pytest.raises(ValueError, match="assigner"):
        TrainConfig(assigner="atss")


def test_refuses_to_overwrite_a_run(runs, tiny_shapes: Path) -> None:
    full, _ = runs
    with pytest.raises(ValueError, match="already holds a run"):
        build_run(tiny_config(tiny_shapes, full), init_distributed("cpu"))
