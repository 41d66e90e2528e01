"""Fixtures of the training tests: Megvii's 0.3.0 reference modules and tiny shapes datasets."""

from __future__ import annotations

import shutil
import types
from pathlib import Path

import pytest
import torch

from model.data.shapes import make_shapes_dataset
from tests.reference.megvii import ReferenceUnavailable, load_megvii


@pytest.fixture(scope="session")
def megvii() -> types.ModuleType:
    """Megvii's ``yolox`` package (0.3.0); skips when it cannot be fetched."""
    try:
        return load_megvii()
    except ReferenceUnavailable as exc:
        pytest.skip(f"Megvii reference unavailable: {exc}")


def shapes_with_val_equal_train(out_dir: Path, images: int, img_size: int, seed: int = 0) -> Path:
    """A shapes dataset whose val split is a copy of its train split (for overfitting checks)."""
    make_shapes_dataset(out_dir, train=images, val=0, img_size=img_size, seed=seed)
    shutil.rmtree(out_dir / "val", ignore_errors=True)
    shutil.copytree(out_dir / "train", out_dir / "val")
    shutil.copy(out_dir / "annotations" / "instances_train.json", out_dir / "annotations" / "instances_val.json")
    return out_dir


@pytest.fixture(scope="session")
def tiny_shapes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """8 train + 4 val shapes images at 96 px (fast loop tests)."""
    return make_shapes_dataset(tmp_path_factory.mktemp("tiny_shapes"), train=8, val=4, img_size=96, seed=3)


@pytest.fixture
def one_thread():
    """Run a training-heavy test on one intra-op thread: on a busy 2-core machine two spinning OpenMP threads
    slow down far more (observed 10-20x) than one thread does."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
