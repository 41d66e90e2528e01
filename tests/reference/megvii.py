"""Load Megvii's own YOLOX 0.3.0 (the release that trained the official weights) as a numerical reference.

The sdist comes from PyPI (a package registry, reachable in CI) via ``pip download`` and is cached under
``~/.cache/yoloxpai-reference``. Only pure-PyTorch modules are imported: ``loguru``, ``thop`` and ``torchvision``
(imported at module level by ``yolox.utils`` but unused by the model forward, SimOTA and losses) are replaced by
inert stand-ins, so a call into them raises instead of silently doing something else.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import tarfile
import types
from pathlib import Path

YOLOX_VERSION = "0.3.0"
CACHE_DIR = Path(os.environ.get("YOLOXPAI_REFERENCE_CACHE", Path.home() / ".cache" / "yoloxpai-reference"))


class ReferenceUnavailable(RuntimeError):
    """The reference sdist could not be fetched (no registry access)."""


def _fetch_sdist() -> Path:
    target = CACHE_DIR / f"yolox-{YOLOX_VERSION}"
    if (target / "yolox" / "models" / "yolo_head.py").exists():
        return target
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    archive = CACHE_DIR / f"yolox-{YOLOX_VERSION}.tar.gz"
    if not archive.exists():
        # --no-build-isolation: metadata generation imports torch, which the test venv has.
        cmd = [sys.executable, "-m", "pip", "download", f"yolox=={YOLOX_VERSION}", "--no-deps",
               "--no-binary", ":all:", "--no-build-isolation", "-d", str(CACHE_DIR)]  # fmt: skip
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        if result.returncode != 0 or not archive.exists():
            raise ReferenceUnavailable(f"pip download yolox=={YOLOX_VERSION} failed: {result.stderr[-500:]}")
    with tarfile.open(archive) as tar:
        tar.extractall(CACHE_DIR, filter="data")
    return target


def _raise(*_args, **_kwargs):
    raise RuntimeError("this reference helper is stubbed out in the test harness")


def _install_stubs() -> None:
    if "loguru" not in sys.modules:
        loguru = types.ModuleType("loguru")
        loguru.logger = types.SimpleNamespace(
            info=lambda *a, **k: None, warning=lambda *a, **k: None, error=lambda *a, **k: None,
            debug=lambda *a, **k: None,
        )  # fmt: skip
        sys.modules["loguru"] = loguru
    if "thop" not in sys.modules:
        thop = types.ModuleType("thop")
        thop.profile = _raise
        sys.modules["thop"] = thop
    if "torchvision" not in sys.modules:
        tv = types.ModuleType("torchvision")
        tv.ops = types.SimpleNamespace(nms=_raise, batched_nms=_raise)
        sys.modules["torchvision"] = tv


def load_megvii() -> types.ModuleType:
    """Import and return Megvii's ``yolox`` package (0.3.0)."""
    root = _fetch_sdist()
    _install_stubs()
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    return importlib.import_module("yolox")


def build_megvii_model(depth: float, width: float, depthwise: bool, num_classes: int = 80):
    """Megvii's YOLOX built as ``Exp.get_model`` does (BN eps 1e-3, momentum 0.03, prior 0.01)."""
    import torch.nn as nn

    load_megvii()
    from yolox.models import YOLOPAFPN, YOLOX, YOLOXHead

    in_channels = [256, 512, 1024]
    backbone = YOLOPAFPN(depth, width, in_channels=in_channels, depthwise=depthwise)
    head = YOLOXHead(num_classes, width, in_channels=in_channels, depthwise=depthwise)
    model = YOLOX(backbone, head)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eps = 1e-3
            m.momentum = 0.03
    model.head.initialize_biases(1e-2)
    return model
