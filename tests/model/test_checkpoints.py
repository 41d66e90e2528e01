"""Checkpoint compatibility: official key layout, EasyCV layout, our own files, fine-tuning, safety."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from model.checkpoint import CheckpointError, load_model, load_weights, read_checkpoint, save_weights
from model.fuse import reparameterize
from model.yolox import build_model
from tests.model.helpers import random_state_dict

REFERENCE_KEYS = Path(__file__).resolve().parents[2].parent / "shared" / "reference" / "state_dict_keys"
OFFICIAL = ["nano", "tiny", "s", "m", "l", "x"]


def reference_keys(size: str) -> list[tuple[str, list[int], str]]:
    rows = []
    for line in (REFERENCE_KEYS / f"yolox-{size}.txt").read_text().splitlines():
        key, shape, dtype = line.split("\t")
        rows.append((key, [int(v) for v in shape.strip("[]").split(",") if v.strip()], dtype))
    return rows


@pytest.mark.skipif(not REFERENCE_KEYS.exists(), reason="../shared/reference is not present")
@pytest.mark.parametrize("size", OFFICIAL)
def test_state_dict_keys_equal_the_official_list(size: str) -> None:
    model = build_model(f"yolox-{size}")
    ours = [(k, list(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in model.state_dict().items()]
    assert ours == reference_keys(size)


@pytest.mark.parametrize("size", OFFICIAL)
def test_official_checkpoint_loads_strictly(size: str, tmp_path: Path) -> None:
    model = build_model(f"yolox-{size}")
    state = random_state_dict(model, seed=1)
    path = tmp_path / f"yolox_{size}.pth"
    torch.save({"start_epoch": 300, "model": state, "optimizer": {}}, path)  # the released file's layout
    loaded, info = load_model(path, arch=f"yolox-{size}")
    assert info.source == "model" and info.report.loaded == len(state)
    assert not info.report.missing and not info.report.unexpected and not info.report.skipped_shape
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, state[key]), key
    assert len(info.class_names) == 80 and info.class_names[0] == "person"


def test_official_checkpoint_with_wrong_arch_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "s.pth"
    torch.save({"model": build_model("yolox-s").state_dict()}, path)
    with pytest.raises(CheckpointError, match="yolox-m"):
        load_model(path, arch="yolox-m")
    with pytest.raises(CheckpointError, match="pass arch"):
        load_model(path)


def test_fine_tuning_with_another_num_classes_reports_skipped(tmp_path: Path) -> None:
    source = build_model("yolox-nano", num_classes=80)
    target = build_model("yolox-nano", num_classes=3)
    report = load_weights(target, source.state_dict(), strict=False)
    skipped = {key for key, _, _ in report.skipped_shape}
    assert skipped == {f"head.cls_preds.{i}.{p}" for i in range(3) for p in ("weight", "bias")}
    assert report.loaded == len(source.state_dict()) - 6
    assert torch.equal(target.state_dict()["head.stems.0.conv.weight"], source.state_dict()["head.stems.0.conv.weight"])
    with pytest.raises(CheckpointError, match="skipped 6"):
        load_weights(build_model("yolox-nano", num_classes=3), source.state_dict(), strict=True)


def test_arbitrary_pickles_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.pth"
    torch.save({"model": {}, "payload": Path("/etc/passwd")}, path)  # any non-allow-listed object
    with pytest.raises(CheckpointError, match="refusing to unpickle"):
        read_checkpoint(path)


def test_safetensors_round_trip_keeps_config_and_names(tmp_path: Path) -> None:
    model = build_model("yolox-nano", num_classes=2, input_hw=(320, 320))
    path = tmp_path / "w.safetensors"
    save_weights(path, model.state_dict(), model.cfg, ("cat", "dog"))
    loaded, info = load_model(path)
    assert info.config == model.cfg and info.class_names == ("cat", "dog")
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value)


@pytest.mark.parametrize("name", ["yolox-pai-s", "yolox-pai-s-asff", "yolox-pai-s-asff-tood3"])
def test_easycv_layout_loads_then_fuses(name: str, tmp_path: Path) -> None:
    """EasyCV checkpoints: un-fused RepVGG keys under "state_dict"; load first, fuse after."""
    source = build_model(name)
    state = random_state_dict(source, seed=2)
    keys = set(state)
    for expected in (
        "backbone.backbone.stage0.rbr_dense.conv.weight",
        "backbone.backbone.stage1.1.rbr_identity.running_var",
        "backbone.backbone.stage4.3.cv1.conv.weight",
        "backbone.lateral_conv0.conv.weight",
        "head.stems.0.conv.weight",
    ):
        assert expected in keys, expected
    if "asff" in name:
        assert "backbone.asff_1.stride_level_1.conv.weight" in keys
        assert "backbone.asff_3.compress_level_1.bn.weight" in keys
        assert "backbone.asff_2.weight_levels.conv.weight" in keys
    if "tood" in name:
        assert "head.inter_convs.2.gn.weight" in keys
        assert "head.cls_decomps.0.layer_attention.2.bias" in keys
        assert "head.reg_decomps.2.reduction_conv.conv.weight" in keys
    path = tmp_path / "epoch_300.pth"
    torch.save({"meta": {"epoch": 300, "CLASSES": [f"c{i}" for i in range(80)]}, "state_dict": state}, path)
    model, info = load_model(path, arch=name)
    assert info.source == "state_dict" and info.class_names[3] == "c3"
    x = torch.rand(1, 3, 128, 128) * 255
    with torch.no_grad():
        before = model(x)
        after = reparameterize(model)(x)
    assert torch.allclose(before, after, rtol=1e-4, atol=1e-3)


def test_fused_easycv_weights_load_into_a_fresh_model() -> None:
    source = reparameterize(build_model("yolox-pai-s", num_classes=5))
    fused_state = source.state_dict()
    assert any(".rbr_reparam." in k for k in fused_state)
    target = build_model("yolox-pai-s", num_classes=5)
    report = load_weights(target, {k: v for k, v in fused_state.items()}, strict=False)
    assert not report.skipped_shape
    # BaseConv BNs were folded in `source` but not in `target`: only those keys differ.
    assert all(".bn." in k for k in report.missing)


def test_gsconv_neck_keeps_the_easycv_bias_quirk() -> None:
    keys = build_model("yolox-pai-s", neck="gsconv").state_dict()
    assert "backbone.gsconv1.cv1.conv.bias" in keys and "backbone.gsconv3.cv2.conv.bias" in keys
    assert "backbone.vovGSCSP1.m.0.conv_lighting.1.cv2.conv.weight" in keys
    assert "backbone.vovGSCSP1.cv1.conv.bias" not in keys
