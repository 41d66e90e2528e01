"""Training checkpoints: build, write atomically, read back for ``--resume``.

Layout (``torch.load(weights_only=True)``-safe: tensors, numbers, strings, lists, dicts only)::

    {"format": "yoloxpai.checkpoint", "format_version": 1, "config": YoloxConfig.to_dict(),
     "class_names": [...], "model": state_dict, "ema": state_dict | None, "ema_updates": int,
     "optimizer": ..., "scaler": ..., "epoch": last finished epoch (0-based), "iteration": global steps done,
     "best_map": float, "map": float | None, "train_config": TrainConfig.to_dict(), "rng": {...}}

``ema`` holds the weights evaluation and export use (``model.checkpoint.extract_state_dict`` prefers it).
``last.pt`` is written after every epoch, ``best.pt`` when the evaluated mAP50:95 improves.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import torch

from model.checkpoint import CHECKPOINT_FORMAT, CheckpointError, read_checkpoint

FORMAT_VERSION = 1


def rng_state() -> dict:
    """Python, numpy and torch generator states in weights-only-loadable form."""
    py_version, py_state, py_gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state = {
        "python": [py_version, list(py_state), py_gauss],
        "numpy": [np_name, torch.from_numpy(np_keys.astype(np.int64)), np_pos, np_has_gauss, np_gauss],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict) -> None:
    """Inverse of :func:`rng_state` (missing parts are left alone)."""
    if "python" in state:
        version, values, gauss = state["python"]
        random.setstate((version, tuple(values), gauss))
    if "numpy" in state:
        name, keys, pos, has_gauss, gauss = state["numpy"]
        np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    if "torch" in state:
        torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def atomic_save(obj: dict, path: str | Path) -> Path:
    """``torch.save`` to a temp file in the same folder, fsync, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def read_training_checkpoint(path: str | Path) -> dict:
    """Read one of our training checkpoints for resuming; other files raise ``CheckpointError``."""
    ckpt = read_checkpoint(path)
    if ckpt.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{path}: not a yoloxpai training checkpoint (use --weights to initialise from other weights)"
        )
    if int(ckpt.get("format_version", 0)) > FORMAT_VERSION:
        raise CheckpointError(f"{path}: format_version {ckpt['format_version']} is newer than {FORMAT_VERSION}")
    for key in ("model", "optimizer", "epoch", "iteration", "train_config"):
        if key not in ckpt:
            raise CheckpointError(f"{path}: training checkpoint has no {key!r} entry")
    return ckpt


def cpu_state(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Detached CPU copies (checkpoints load anywhere)."""
    return {k: v.detach().cpu().clone() for k, v in state_dict.items()}
