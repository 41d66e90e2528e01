"""The CLI's run-dependent defaults (short runs, fine-tuning) and the report of re-initialised head tensors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from model.artifacts import default_weights_path
from model.checkpoint import LoadReport, save_weights
from model.cli.train import build_config
from model.config import get_config
from model.distributed import init_distributed
from model.train.config import TrainConfig
from model.train.defaults import short_run_schedule
from model.train.ema import unwrap
from model.train.run import build_run, reinit_notes, seed_everything
from model.yolox import build_from_config
from tests.train.test_train_loop import tiny_config
from yoloxpai.cli import build_parser, main

DEFAULT_LR = 0.01 / 64
CLS_KEYS = [f"head.cls_preds.{i}.{p}" for i in range(3) for p in ("weight", "bias")]


def config_for(*flags: str) -> TrainConfig:
    """``build_config`` for a new nano run with these extra flags (reads no files)."""
    args = build_parser("train").parse_args(["train", "--arch", "yolox-nano", "--data", "d", "--out", "o", *flags])
    return build_config(args)


@pytest.mark.parametrize(
    ("epochs", "warmup", "no_aug", "default_warmup", "expected"),
    [
        (300, None, None, 5, (5, 15)),
        (20, None, None, 5, (5, 15)),  # exactly fits: defaults kept
        (19, None, None, 5, (1, 3)),
        (10, None, None, 5, (1, 2)),
        (2, None, None, 5, (1, 0)),
        (1, None, None, 5, (0, 0)),
        (16, None, None, 1, (1, 15)),  # fine-tune warm-up: fits
        (10, None, None, 1, (1, 2)),
        (10, 3, None, 5, (3, 2)),  # explicit warm-up kept, no-aug scaled
        (10, 9, None, 5, (9, 1)),  # ... and shrunk until both fit
        (10, None, 4, 5, (5, 4)),  # explicit no-aug fits with the default warm-up
        (10, None, 7, 5, (1, 7)),  # explicit no-aug kept, warm-up scaled
        (10, None, 10, 5, (0, 10)),
        (10, 6, 6, 5, (6, 6)),  # both explicit: untouched (TrainConfig refuses)
    ],
)
def test_short_run_schedule(epochs, warmup, no_aug, default_warmup, expected) -> None:
    assert short_run_schedule(epochs, warmup, no_aug, default_warmup) == expected


def test_short_run_with_default_flags_scales_down_and_warns(capsys) -> None:
    cfg = config_for("--epochs", "2")
    assert (cfg.warmup_epochs, cfg.no_aug_epochs, cfg.finetune) == (1, 0, False)
    err = capsys.readouterr().err
    assert "warning: short run of 2 epochs" in err
    assert "--warmup-epochs 1 (default 5)" in err and "--no-aug-epochs 0 (default 15)" in err
    cfg = config_for()  # the full recipe fits: silent
    assert (cfg.warmup_epochs, cfg.no_aug_epochs, cfg.basic_lr_per_img) == (5, 15, DEFAULT_LR)
    assert capsys.readouterr().err == ""


def test_one_explicit_flag_is_kept_and_the_other_scaled(capsys) -> None:
    cfg = config_for("--epochs", "10", "--warmup-epochs", "3")
    assert (cfg.warmup_epochs, cfg.no_aug_epochs) == (3, 2)
    err = capsys.readouterr().err
    assert "--no-aug-epochs 2 (default 15)" in err and "--warmup-epochs" not in err.split("pass")[0]
    cfg = config_for("--epochs", "10", "--no-aug-epochs", "7")
    assert (cfg.warmup_epochs, cfg.no_aug_epochs) == (1, 7)
    assert "--warmup-epochs 1 (default 5)" in capsys.readouterr().err
    with pytest.raises(ValueError, match="no_aug_epochs must be in"):  # the explicit one alone does not fit
        config_for("--epochs", "10", "--no-aug-epochs", "12")


def test_explicit_flags_that_do_not_fit_stay_an_error(tmp_path: Path, capsys) -> None:
    with pytest.raises(ValueError, match="must not exceed"):
        config_for("--epochs", "2", "--warmup-epochs", "5", "--no-aug-epochs", "1")
    code = main(["train", "--arch", "yolox-nano", "--data", str(tmp_path), "--out", str(tmp_path / "o"),
                 "--epochs", "2", "--warmup-epochs", "5", "--no-aug-epochs", "15"])  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err
    assert "error: no_aug_epochs must be in [0, epochs=2]" in err and "warning" not in err


def test_finetune_defaults_follow_weights_and_yield_to_explicit_flags(capsys) -> None:
    cfg = config_for("--weights", "w.pt")
    assert cfg.finetune and cfg.basic_lr_per_img == DEFAULT_LR * 0.25
    assert (cfg.warmup_epochs, cfg.no_aug_epochs) == (1, 15)
    err = capsys.readouterr().err
    assert "fine-tune defaults" in err and "--lr-per-img 3.90625e-05, --warmup-epochs 1" in err
    assert err.count("\n") == 1  # one line, no short-run warning

    cfg = config_for("--weights", "w.pt", "--lr-per-img", "0.001")
    assert (cfg.finetune, cfg.basic_lr_per_img, cfg.warmup_epochs) == (True, 0.001, 1)
    err = capsys.readouterr().err
    assert "--warmup-epochs 1" in err and "--lr-per-img" not in err.split("override)")[1]
    cfg = config_for("--weights", "w.pt", "--lr-per-img", "0.001", "--warmup-epochs", "3")
    assert (cfg.basic_lr_per_img, cfg.warmup_epochs) == (0.001, 3) and capsys.readouterr().err == ""

    cfg = config_for("--weights", "w.pt", "--no-finetune")
    assert (cfg.finetune, cfg.basic_lr_per_img, cfg.warmup_epochs) == (False, DEFAULT_LR, 5)
    with pytest.raises(ValueError, match="--finetune needs --weights"):
        config_for("--finetune")


def test_finetune_short_run_and_default_weights(capsys) -> None:
    cfg = config_for("--weights", "default", "--epochs", "10")
    assert cfg.weights == str(default_weights_path()) and Path(cfg.weights).is_file()
    assert (cfg.finetune, cfg.warmup_epochs, cfg.no_aug_epochs) == (True, 1, 2)
    err = capsys.readouterr().err
    assert "fine-tune defaults" in err and "short run of 10 epochs: using --no-aug-epochs 2 (default 15)" in err
    assert TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg  # finetune round-trips
    assert cfg.to_dict()["finetune"] is True


@pytest.fixture(scope="module")
def three_class_weights(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, torch.Tensor]]:
    """A nano with 3 classes (the data has 6) and every float tensor random, saved as .safetensors."""
    torch.manual_seed(123)
    model_cfg = get_config("yolox-nano", num_classes=3)
    state = build_from_config(model_cfg).state_dict()
    state = {k: torch.randn_like(v) if v.is_floating_point() else v for k, v in state.items()}
    path = tmp_path_factory.mktemp("weights") / "three.safetensors"
    save_weights(path, state, model_cfg, ("a", "b", "c"))
    return path, state


def test_head_of_another_num_classes_is_reinitialised_and_reported(three_class_weights, tiny_shapes, tmp_path) -> None:
    path, ckpt = three_class_weights
    cfg = tiny_config(tiny_shapes, tmp_path / "ft", weights=str(path), finetune=True)
    run = build_run(cfg, init_distributed("cpu"))
    expected = f"re-initialised 6 tensors for 6 classes (checkpoint has 3): {', '.join(CLS_KEYS)}"
    assert expected in run.notes, run.notes
    seed_everything(cfg.seed)  # build_run seeds the same way before building the model
    fresh = build_from_config(run.model_cfg).state_dict()
    for key, value in unwrap(run.model).state_dict().items():
        source = fresh if key in CLS_KEYS else ckpt
        torch.testing.assert_close(value, source[key], rtol=0, atol=0, msg=key)
    conv = next(k for k, v in fresh.items() if v.ndim == 4)
    assert not torch.equal(fresh[conv], ckpt[conv])  # the checkpoint really differs from a fresh model


def test_cli_short_finetune_run_end_to_end(three_class_weights, tiny_shapes, tmp_path, capsys, one_thread) -> None:
    path, _ = three_class_weights
    common = ["--arch", "yolox-nano", "--data", str(tiny_shapes), "-b", "4", "--img-size", "64", "--device", "cpu",
              "--workers", "0", "--max-iters-per-epoch", "1", "--multiscale-range", "0", "--no-tensorboard",
              "--no-progress"]  # fmt: skip
    out = tmp_path / "plain"
    assert main(["train", *common, "--out", str(out), "--epochs", "2"]) == 0
    assert "warning: short run of 2 epochs" in capsys.readouterr().err
    stored = json.loads((out / "train_config.json").read_text())
    assert (stored["warmup_epochs"], stored["no_aug_epochs"], stored["finetune"]) == (1, 0, False)
    assert main(["train", "--out", str(out), "--resume"]) == 0  # stored config wins: nothing re-derived
    assert "short run" not in capsys.readouterr().err

    out = tmp_path / "ft"
    assert main(["train", *common, "--out", str(out), "--epochs", "2", "--weights", str(path)]) == 0
    err = capsys.readouterr().err
    assert "fine-tune defaults" in err and "--no-aug-epochs 0 (default 15)" in err
    assert "re-initialised 6 tensors for 6 classes (checkpoint has 3): head.cls_preds.0.weight, " in err
    stored = json.loads((out / "train_config.json").read_text())
    assert stored["finetune"] is True and stored["basic_lr_per_img"] == DEFAULT_LR * 0.25


def test_reinit_notes_name_other_shapes_and_missing_tensors_in_model_order() -> None:
    report = LoadReport(
        loaded=1,
        missing=["neck.c.weight"],
        skipped_shape=[("head.b.weight", (3, 8), (6, 8)), ("backbone.a.weight", (4,), (8,))],
    )
    model_keys = ["backbone.a.weight", "neck.c.weight", "head.b.weight"]
    assert reinit_notes(report, 6, model_keys) == [
        "re-initialised 2 tensors whose shapes differ from the checkpoint's: backbone.a.weight, head.b.weight",
        "1 tensors not in the checkpoint keep their initialisation: neck.c.weight",
    ]
    assert reinit_notes(report, 6, model_keys, max_names=1)[0].endswith(": backbone.a.weight, ... (1 more)")
    assert reinit_notes(LoadReport(loaded=3), 6, model_keys) == []
