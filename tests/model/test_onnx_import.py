"""Importing released ONNX weights: structural matching, BatchNorm un-folding, refusal of other graphs."""

from __future__ import annotations

import copy
import io
import warnings
from pathlib import Path

import pytest
import torch

from model.bn_unfold import calibration_batches, default_calibration_source, find_images, set_passthrough
from model.checkpoint import CheckpointError, load_model
from model.fuse import reparameterize
from model.onnx_import import OnnxImportError, import_onnx
from model.yolox import YOLOX, build_model
from tests.model.helpers import calibrated, randomize


class _MegviiExport(torch.nn.Module):
    """What Megvii's export_onnx.py writes: BN folded, raw head outputs (``decode_in_inference=False``)."""

    def __init__(self, model: YOLOX, decode: bool = False) -> None:
        super().__init__()
        self.model, self.decode = model, decode

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images, decode=self.decode)


def export_folded(model: YOLOX, path: Path, input_hw: tuple[int, int], decode: bool = False) -> Path:
    """``model`` with every BN folded into its conv, as a static batch-1 opset-11 ONNX file."""
    folded = reparameterize(copy.deepcopy(model).eval())
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(_MegviiExport(folded, decode), (torch.zeros(1, 3, *input_hw),), buffer, opset_version=11,
                          dynamo=False, input_names=["images"], output_names=["output"])  # fmt: skip
    path.write_bytes(buffer.getvalue())
    return path


@pytest.fixture(scope="module")
def original() -> YOLOX:
    torch.manual_seed(1)
    # Random BN affines, then statistics and head scales that make outputs vary like a trained model's.
    return calibrated(randomize(build_model("yolox-nano", num_classes=7, input_hw=(128, 160)), seed=3), (128, 160))


@pytest.fixture(scope="module")
def exported(original: YOLOX, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_folded(original, tmp_path_factory.mktemp("onnx") / "nano.onnx", (128, 160))


def photos(input_hw: tuple[int, int]) -> torch.Tensor:
    """The shipped calibration photos as one letterboxed batch."""
    from model.config import MEGVII

    return calibration_batches(find_images(default_calibration_source()), input_hw, MEGVII, batch_size=64)[0]


def test_imported_model_equals_the_original_in_eval_mode(original: YOLOX, exported: Path) -> None:
    model, info = load_model(exported, arch="yolox-nano")
    assert info.source == "onnx" and info.config.num_classes == 7 and info.config.input_hw == (128, 160)
    assert info.class_names == tuple(f"class_{i}" for i in range(7))
    x = torch.cat([photos((128, 160)), torch.rand(2, 3, 128, 160) * 255])
    with torch.no_grad():
        want, got = original(x, decode=False), model(x, decode=False)
    # Raw outputs (box logits, sigmoid scores) of ~1e2 layers in float32: ONNX Runtime vs torch differs as much.
    torch.testing.assert_close(got, want, rtol=1e-3, atol=2e-3)
    # The import really un-folded: trainable BatchNorms with measured statistics, not identities.
    bn = model.backbone.backbone.stem.conv.bn
    assert isinstance(bn, torch.nn.BatchNorm2d) and bn.running_var.std() > 0 and bn.running_mean.abs().max() > 0


def training_mode_drift(model: YOLOX, batch: torch.Tensor) -> float:
    """Mean |training-mode output - eval-mode output| on ``batch`` (scores sigmoided in both)."""
    model = copy.deepcopy(model)
    with torch.no_grad():
        eval_out = model(batch, decode=False)
        train_out = model.train()(batch)
    train_out = torch.cat([train_out[..., :4], train_out[..., 4:].sigmoid()], dim=-1)
    return float((train_out - eval_out).abs().mean())


def test_unfolded_batchnorms_keep_training_mode_close_to_the_fold(exported: Path) -> None:
    """On the calibration batch, batch statistics equal the running ones (up to the n/(n-1) variance factor),
    so training mode computes nearly the folded network; BNs left as identities would not."""
    model, _ = import_onnx(exported, "yolox-nano")
    batch = photos((128, 160))  # exactly the images the statistics were measured on
    naive = copy.deepcopy(model)
    for module in naive.modules():  # the same eval function from a BN that has no statistics: mean 0, var 1
        if isinstance(module, torch.nn.BatchNorm2d):
            scale = module.weight / (module.running_var + module.eps).sqrt()
            set_passthrough(module, (module.bias - module.running_mean * scale).detach(), scale.detach())
    with torch.no_grad():
        torch.testing.assert_close(naive(batch), model(batch), rtol=1e-3, atol=2e-3)  # same eval function
    ours, identity = training_mode_drift(model, batch), training_mode_drift(naive, batch)
    assert ours < 5e-3 and ours * 20 < identity, (ours, identity)


def test_a_decoded_export_is_accepted_too(original: YOLOX, tmp_path: Path) -> None:
    path = export_folded(original, tmp_path / "decoded.onnx", (128, 160), decode=True)
    _, info = import_onnx(path, "yolox-nano")
    assert info.output_form == "decoded" and info.max_abs_diff is not None and info.max_abs_diff < 1e-2


def test_released_coco_nano_imports_and_matches_onnx_runtime(shared: Path) -> None:
    path = shared / "weights" / "yolox_nano_coco.onnx"
    model, info = import_onnx(path, "yolox-nano")
    assert info.convs == 113 and info.calibration.layers == 104 and info.config.num_classes == 80
    assert info.output_form == "raw" and info.max_abs_diff < 1e-3


def test_another_preset_is_refused_naming_the_first_mismatch(exported: Path) -> None:
    with pytest.raises(CheckpointError, match=r"not yolox-tiny.*backbone\.backbone\.stem\.conv\.conv .*weight \[24"):
        load_model(exported, arch="yolox-tiny")
    with pytest.raises(CheckpointError, match="Megvii presets"):
        load_model(exported, arch="yolox-pai-s")
    with pytest.raises(CheckpointError, match="do not record their architecture"):
        load_model(exported)


def test_a_rewired_graph_is_refused_even_with_the_same_tensors(exported: Path, tmp_path: Path) -> None:
    """Swap the two inputs of the first CSP concat: every weight still has a place, but not the same one."""
    import onnx

    proto = onnx.load(str(exported))
    producers = {out: node for node in proto.graph.node for out in node.output}
    concat = next(
        n for n in proto.graph.node
        if n.op_type == "Concat" and len(n.input) == 2 and all(i in producers for i in n.input)
        and all(producers[i].op_type == "Mul" for i in n.input)
    )  # fmt: skip
    concat.input[0], concat.input[1] = concat.input[1], concat.input[0]
    path = tmp_path / "rewired.onnx"
    onnx.save(proto, str(path))
    wanted = r"no Conv in the ONNX graph matches backbone\.backbone\.dark\d\.\d\.conv3\.conv .*reading cat\("
    with pytest.raises(OnnxImportError, match=wanted):
        import_onnx(path, "yolox-nano")


def test_a_difference_outside_the_convs_is_caught_by_running_the_file(exported: Path, tmp_path: Path) -> None:
    """Bilinear instead of nearest upsampling: the same convs wired the same way; only running it shows it."""
    import onnx
    from onnx import helper

    proto = onnx.load(str(exported))
    resize = next(n for n in proto.graph.node if n.op_type == "Resize")
    kept = [a for a in resize.attribute if a.name != "mode"]
    del resize.attribute[:]
    resize.attribute.extend([*kept, helper.make_attribute("mode", "linear")])
    path = tmp_path / "bilinear.onnx"
    onnx.save(proto, str(path))
    with pytest.raises(OnnxImportError, match=r"do not reproduce the file's output \(max \|diff\|"):
        import_onnx(path, "yolox-nano")


def test_calibration_folder_errors_are_clear(exported: Path, tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not a directory"):
        load_model(exported, arch="yolox-nano", calibration_images=tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no .* files under"):
        load_model(exported, arch="yolox-nano", calibration_images=tmp_path / "empty")
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(CheckpointError, match="not a readable ONNX model"):
        load_model(tmp_path / "junk.onnx", arch="yolox-nano")
