"""``--recipe megvii|easycv``: the defaults each reference's family gets, explicit values winning, EasyCV's
multiscale letterbox, and a whole EasyCV-recipe run (GIoU in EasyCV's form, decay on BN, letterboxed sizes)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from model.cli.train import build_config
from model.distributed import init_distributed
from model.letterbox import letterbox
from model.train.config import TrainConfig
from model.train.loop import fit
from model.train.multiscale import MultiscalePolicy, letterbox_batch, multiscale_sizes_32, rescale_batch, resize_batch
from model.train.recipe import RECIPES, apply_recipe, family_recipe
from model.train.run import build_run
from tests.train.test_train_loop import tiny_config
from yoloxpai.cli import build_parser


def recipe_fields(cfg: TrainConfig) -> tuple:
    return cfg.recipe, cfg.weight_decay_all, cfg.multiscale_range, cfg.multiscale_letterbox


def test_each_family_gets_its_reference_recipe() -> None:
    pai = apply_recipe(TrainConfig(arch="yolox-pai-s-asff"))
    assert recipe_fields(pai) == ("easycv", True, 6, True)
    assert pai.augment == "pai" and dict(pai.model_overrides) == {"iou_loss": "giou-easycv", "prior_prob": None}
    nano = apply_recipe(TrainConfig(arch="yolox-nano"))
    assert recipe_fields(nano) == ("megvii", False, 5, False)
    assert nano.augment == "nano" and dict(nano.model_overrides) == {"iou_loss": "iou", "prior_prob": 0.01}
    assert apply_recipe(pai) == pai and apply_recipe(nano) == nano  # idempotent: resumed configs stay the same
    assert family_recipe("yolox-s") == "megvii" and set(RECIPES) == {"megvii", "easycv"}


def test_explicit_values_win_over_the_recipe() -> None:
    cfg = apply_recipe(TrainConfig(arch="yolox-pai-s", weight_decay_all=False, multiscale_range=0, augment="none",
                                   model_overrides=(("iou_loss", "siou"),)))  # fmt: skip
    assert (cfg.weight_decay_all, cfg.multiscale_range, cfg.augment) == (False, 0, "none")
    assert dict(cfg.model_overrides) == {"iou_loss": "siou", "prior_prob": None}
    # The switch: Megvii's recipe on a PAI preset, EasyCV's on a Megvii one (the input convention stays the preset's).
    megvii = apply_recipe(TrainConfig(arch="yolox-pai-s", recipe="megvii"))
    assert megvii.augment == "default" and dict(megvii.model_overrides)["prior_prob"] == 0.01
    easycv = apply_recipe(TrainConfig(arch="yolox-s", recipe="easycv"))
    assert easycv.augment == "pai" and easycv.weight_decay_all
    assert dict(easycv.model_overrides)["iou_loss"] == "giou-easycv"
    with pytest.raises(ValueError, match="recipe"):
        TrainConfig(recipe="detectron2")


def test_cli_flags_for_the_recipe() -> None:
    args = build_parser("train").parse_args(["train", "--arch", "yolox-pai-s", "--data", "d", "--out", "o",
                                             "--recipe", "megvii", "--no-weight-decay-all", "--multiscale-letterbox",
                                             "--iou-loss", "giou-easycv"])  # fmt: skip
    cfg = build_config(args)
    assert recipe_fields(cfg) == ("megvii", False, None, True) and cfg.iou_loss == "giou-easycv"
    plain = build_config(build_parser("train").parse_args(["train", "--arch", "yolox-s", "--data", "d", "--out", "o"]))
    assert plain.recipe is None and plain.weight_decay_all is None and plain.multiscale_range is None


def test_multiscale_ranges_at_640() -> None:
    assert multiscale_sizes_32("yolox-pai-s", (640, 640), RECIPES["easycv"].multiscale_range, None) == (14, 26)
    assert multiscale_sizes_32("yolox-s", (640, 640), RECIPES["megvii"].multiscale_range, None) == (15, 25)
    policy = MultiscalePolicy((640, 640), sizes_32=(14, 26))
    assert policy.size_hw(14) == (448, 448) and policy.size_hw(26) == (832, 832)
    assert policy.drawn_sizes() == [(32 * s, 32 * s) for s in range(14, 27)]
    assert MultiscalePolicy((64, 96), sizes_32=(2, 3)).drawn_sizes() == [(64, 96), (96, 128)]


def test_letterbox_batch_keeps_the_aspect_ratio_and_pads_bottom_right() -> None:
    images = torch.rand(2, 3, 64, 96) * 255
    targets = torch.tensor([[[1.0, 48.0, 32.0, 20.0, 10.0]], [[0.0, 10.0, 10.0, 4.0, 4.0]]])
    out, scaled = letterbox_batch(images, targets, (32, 64), pad_value=114.0)
    # r = min(32/64, 64/96) = 0.5 -> content 32 x 48 at the top left, 16 columns of padding on the right
    assert out.shape == (2, 3, 32, 64) and torch.all(out[..., 48:] == 114.0)
    torch.testing.assert_close(scaled, targets * torch.tensor([1.0, 0.5, 0.5, 0.5, 0.5]))
    stretched, _ = resize_batch(images, targets, (32, 64))  # Megvii's resize fills the whole canvas
    assert not torch.all(stretched[..., 48:] == 114.0)
    # Square to square the two agree (one scale, no padding), so EasyCV's 640 recipe differs only off-square.
    square = torch.rand(1, 3, 64, 64)
    policy = MultiscalePolicy((64, 64), letterbox=True)
    torch.testing.assert_close(rescale_batch(square, targets[:1], (96, 96), policy, 114.0)[0],
                               resize_batch(square, targets[:1], (96, 96))[0])  # fmt: skip


def test_letterbox_batch_matches_the_numpy_letterbox_geometry() -> None:
    image = (torch.rand(40, 64, 3) * 255).to(torch.uint8).numpy()
    expected, r = letterbox(image, (48, 48))
    batch = torch.from_numpy(image).permute(2, 0, 1)[None].float()
    out, _ = letterbox_batch(batch, torch.zeros(1, 1, 5), (48, 48), pad_value=114.0)
    assert r == 0.75 and out.shape == (1, 3, 48, 48)
    assert torch.all(out[0, :, 30:] == 114.0) and (expected[30:] == 114).all()  # 40 * 0.75 = 30 content rows
    content = torch.from_numpy(expected[:30]).permute(2, 0, 1).float()
    assert float((out[0, :, :30] - content).abs().mean()) < 2.0  # bilinear in float vs OpenCV's fixed point


def test_easycv_recipe_run(tiny_shapes: Path, tmp_path: Path, one_thread) -> None:
    cfg = tiny_config(tiny_shapes, tmp_path / "pai", arch="yolox-pai-s-asff-tood3", augment=None, epochs=2,
                      warmup_epochs=1, no_aug_epochs=1, input_hw=(64, 96), multiscale_sizes_32=(2, 3),
                      model_overrides=(("width", 0.125),))  # fmt: skip
    run = build_run(cfg, init_distributed("cpu"))
    assert run.cfg.recipe == "easycv" and run.multiscale.letterbox and run.loss_fn.iou_loss == "giou-easycv"
    assert {g["name"]: g["weight_decay"] for g in run.optimizer.param_groups} == {
        "norm_weights": 5e-4, "weights": 5e-4, "biases": 5e-4}  # fmt: skip
    assert run.model_cfg.prior_prob is None and any("recipe easycv" in note for note in run.notes)
    summary = fit(run)
    records = [json.loads(line) for line in (tmp_path / "pai" / "metrics.jsonl").read_text().splitlines()]
    sizes = {tuple(r["input_hw"]) for r in records if r["kind"] == "train"}
    assert sizes <= {(64, 96), (96, 128)} and summary.epochs == 2  # (the loop refuses non-finite losses)
    stored = torch.load(tmp_path / "pai" / "last.pt", weights_only=True)["train_config"]
    assert stored["recipe"] == "easycv" and stored["weight_decay_all"] is True
