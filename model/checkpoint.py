"""Reading checkpoints safely and loading weights into a model.

Accepted inputs: official Megvii ``.pth`` (``{"model": state_dict, ...}``), EasyCV (``{"state_dict": ...,
"meta": ...}``, RepVGG un-fused or fused), our training checkpoints (``{"format": "yoloxpai.checkpoint", ...}``,
EMA weights preferred), our ``.safetensors`` weights (config and class names in the metadata), a bare state
dict, or a Megvii-style ONNX export with folded BatchNorms (``.onnx``, imported by graph structure, see
``model.onnx_import``). ``torch.load`` always runs with ``weights_only=True``: a file that needs arbitrary
unpickling is refused.
"""

from __future__ import annotations

import json
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from model.classes import default_class_names
from model.config import YoloxConfig, get_config
from model.repvgg import RepVGGBlock
from model.yolox import YOLOX, build_from_config

CHECKPOINT_FORMAT = "yoloxpai.checkpoint"
SAFETENSORS_META_KEY = "yoloxpai"


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit the model."""


@dataclass
class LoadReport:
    """What ``load_weights`` did: keys loaded, missing, unexpected, and skipped for a shape mismatch."""

    loaded: int = 0
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    skipped_shape: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line for logs."""
        parts = [f"loaded {self.loaded} tensors", *self.notes]
        if self.skipped_shape:
            parts.append(f"skipped {len(self.skipped_shape)} with other shapes (e.g. {self.skipped_shape[0][0]})")
        if self.missing:
            parts.append(f"{len(self.missing)} missing (e.g. {self.missing[0]})")
        if self.unexpected:
            parts.append(f"{len(self.unexpected)} unexpected (e.g. {self.unexpected[0]})")
        return ", ".join(parts)


def read_checkpoint(path: str | Path) -> dict:
    """Load a checkpoint file into a dict without executing pickled code."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
            meta = json.loads((f.metadata() or {}).get(SAFETENSORS_META_KEY, "{}"))
        return {**meta, "model": tensors}
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"{path}: refusing to unpickle arbitrary objects (only tensors, numbers, strings and containers are "
            f"allowed): {str(exc).splitlines()[0]}"
        ) from exc
    except (RuntimeError, EOFError) as exc:
        raise CheckpointError(f"{path}: not a readable checkpoint: {exc}") from exc
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a dict, got {type(data).__name__}")
    return data


def extract_state_dict(ckpt: dict) -> tuple[dict[str, Tensor], str]:
    """The weights inside a checkpoint and where they came from (``ema``, ``model``, ``state_dict``, ``bare``)."""
    for key in ("ema", "model", "state_dict"):
        value = ckpt.get(key)
        if isinstance(value, dict) and value and all(isinstance(v, Tensor) for v in value.values()):
            return _strip_prefix(value), key
    if ckpt and all(isinstance(v, Tensor) for v in ckpt.values()):
        return _strip_prefix(ckpt), "bare"
    raise CheckpointError(f"no state dict found (top-level keys: {sorted(ckpt)[:10]})")


def _strip_prefix(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    # DDP / EMA wrappers save "module.<name>".
    if all(k.startswith("module.") for k in state_dict):
        return {k[len("module.") :]: v for k, v in state_dict.items()}
    return dict(state_dict)


def _fuse_repvgg_if_needed(model: nn.Module, state_dict: dict[str, Tensor]) -> None:
    if any(".rbr_reparam." in k for k in state_dict):
        model.eval()
        for module in model.modules():
            if isinstance(module, RepVGGBlock):
                module.fuse()


def load_weights(model: nn.Module, state_dict: dict[str, Tensor], strict: bool = False) -> LoadReport:
    """Copy matching tensors into ``model``.

    Non-strict: tensors whose shape differs (e.g. another ``num_classes`` when fine-tuning) are skipped and
    reported. Strict: any missing, unexpected or mismatched key raises ``CheckpointError`` — except a missing
    ``num_batches_tracked``, which some released files omit and which inference never reads.
    """
    _fuse_repvgg_if_needed(model, state_dict)
    own = model.state_dict()
    report = LoadReport()
    accepted: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        if key not in own:
            report.unexpected.append(key)
        elif tuple(own[key].shape) != tuple(value.shape):
            report.skipped_shape.append((key, tuple(value.shape), tuple(own[key].shape)))
        else:
            accepted[key] = value
    report.missing = [k for k in own if k not in state_dict and not k.endswith("num_batches_tracked")]
    if strict and (report.missing or report.unexpected or report.skipped_shape):
        raise CheckpointError(f"checkpoint does not match the model: {report.summary()}")
    model.load_state_dict(accepted, strict=False)
    report.loaded = len(accepted)
    return report


@dataclass(frozen=True)
class LoadedCheckpoint:
    """Metadata that came with the weights."""

    config: YoloxConfig
    class_names: tuple[str, ...]
    source: str  # which entry held the weights
    report: LoadReport


def config_from_checkpoint(
    ckpt: dict, arch: str | None, num_classes: int | None, state_dict: dict[str, Tensor]
) -> YoloxConfig:
    """The config recorded in the checkpoint, else ``arch`` with ``num_classes`` read from the weights."""
    if isinstance(ckpt.get("config"), dict):
        cfg = YoloxConfig.from_dict(ckpt["config"])
        if arch is not None and arch != cfg.name:
            raise CheckpointError(f"checkpoint records arch {cfg.name!r}, but --arch {arch!r} was given")
        return cfg
    if arch is None:
        raise CheckpointError("this checkpoint does not record its architecture: pass arch (e.g. --arch yolox-s)")
    if num_classes is None:
        cls_bias = state_dict.get("head.cls_preds.0.bias")
        num_classes = int(cls_bias.shape[0]) if cls_bias is not None else 80
    return get_config(arch, num_classes=num_classes)


def is_onnx(path: str | Path) -> bool:
    """Released ONNX weights rather than a checkpoint."""
    return Path(path).suffix.lower() == ".onnx"


def load_onnx_model(
    path: str | Path, arch: str | None, num_classes: int | None = None, calibration_images: str | Path | None = None
) -> tuple[YOLOX, LoadedCheckpoint]:
    """Import released ONNX weights into preset ``arch`` (BatchNorms un-folded with measured statistics)."""
    from model.onnx_import import OnnxImportError, import_onnx

    if arch is None:
        raise CheckpointError(f"{path}: ONNX weights do not record their architecture: pass arch (--arch yolox-nano)")
    if not Path(path).is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        model, result = import_onnx(path, arch, num_classes, calibration_images)
    except (OnnxImportError, FileNotFoundError) as exc:
        raise CheckpointError(str(exc)) from exc
    report = LoadReport(loaded=len(model.state_dict()), notes=[result.summary()])
    names = default_class_names(result.config.num_classes)
    return model, LoadedCheckpoint(result.config, names, "onnx", report)


def read_initial_weights(
    path: str | Path, arch: str, calibration_images: str | Path | None = None
) -> tuple[dict[str, Tensor], str, list[str]]:
    """Weights to start training from: ``(state_dict, source, notes)`` of any checkpoint, or of released ONNX
    weights imported into ``arch`` (BatchNorm statistics from ``calibration_images``)."""
    if is_onnx(path):
        model, info = load_onnx_model(path, arch, calibration_images=calibration_images)
        return model.state_dict(), "onnx", info.report.notes
    state_dict, source = extract_state_dict(read_checkpoint(path))
    return state_dict, source, []


def load_model(
    path: str | Path,
    arch: str | None = None,
    num_classes: int | None = None,
    strict: bool = True,
    calibration_images: str | Path | None = None,
) -> tuple[YOLOX, LoadedCheckpoint]:
    """Build the model a checkpoint describes (or ``arch``) and load its weights; returns eval-mode model.

    ``calibration_images`` only matters for ``.onnx`` files (BatchNorm statistics; default the shipped photos).
    """
    if is_onnx(path):
        return load_onnx_model(path, arch, num_classes, calibration_images)
    ckpt = read_checkpoint(path)
    state_dict, source = extract_state_dict(ckpt)
    cfg = config_from_checkpoint(ckpt, arch, num_classes, state_dict)
    model = build_from_config(cfg)
    try:
        report = load_weights(model, state_dict, strict=strict)
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: {exc} (is {cfg.name!r} the right architecture?)") from exc
    names = ckpt.get("class_names")
    if not names:
        names = _easycv_classes(ckpt) or default_class_names(cfg.num_classes)
    if len(names) != cfg.num_classes:
        raise CheckpointError(f"{path}: {len(names)} class names for {cfg.num_classes} classes")
    return model.eval(), LoadedCheckpoint(cfg, tuple(str(n) for n in names), source, report)


def _easycv_classes(ckpt: dict) -> list[str] | None:
    # EasyCV "raw" exports keep CLASSES inside meta.config (a JSON string).
    meta = ckpt.get("meta")
    if not isinstance(meta, dict):
        return None
    if isinstance(meta.get("CLASSES"), list | tuple):
        return list(meta["CLASSES"])
    try:
        config = json.loads(meta.get("config", ""))
    except (TypeError, ValueError):
        return None
    classes = config.get("CLASSES") or config.get("classes")
    return list(classes) if isinstance(classes, list | tuple) else None


def save_weights(
    path: str | Path, state_dict: dict[str, Tensor], config: YoloxConfig, class_names: tuple[str, ...]
) -> None:
    """Write weights + config + class names as ``.safetensors`` (atomic: temp file then rename)."""
    from safetensors.torch import save_file

    path = Path(path)
    meta = {SAFETENSORS_META_KEY: json.dumps({"config": config.to_dict(), "class_names": list(class_names)})}
    tmp = path.with_name(path.name + ".tmp")
    save_file({k: v.detach().contiguous().cpu() for k, v in state_dict.items()}, str(tmp), metadata=meta)
    tmp.chmod(0o644)  # safetensors creates owner-only files; a serving container's other user must read them
    tmp.replace(path)
