"""TrainDataset contract, reproducibility and mosaic switch; train/eval loaders with workers and shards."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from model.data.augment_config import AUGMENT_PRESETS
from model.data.coco import CocoDetection, resolve_split
from model.data.loader import build_eval_loader, build_train_loader
from model.data.train_dataset import TrainDataset
from model.letterbox import letterbox

INPUT_HW = (96, 128)


@pytest.fixture(scope="module")
def coco(shapes_dir: Path) -> CocoDetection:
    return CocoDetection(*resolve_split(shapes_dir, "train"))


def _plain_cfg():
    """Colour and flip off: the no-augmentation phase becomes an exact letterbox."""
    return dataclasses.replace(AUGMENT_PRESETS["default"], photometric_prob=0.0, flip_prob=0.0)


@pytest.mark.parametrize("preset", ["default", "nano", "pai"])
def test_sample_contract(coco: CocoDetection, preset: str) -> None:
    dataset = TrainDataset(coco, INPUT_HW, AUGMENT_PRESETS[preset], seed=3)
    assert len(dataset) == len(coco) == 24
    for index in range(6):
        image, targets, image_id = dataset[index]
        assert image.dtype == torch.uint8 and image.shape == (3, *INPUT_HW)
        assert targets.dtype == torch.float32 and targets.shape == (120, 5)
        assert image_id == coco.image_info(index).image_id
        n = int((targets[:, 3] > 0).sum())
        assert not targets[n:].any()  # boxes first, zero padding after
        cls, cx, cy, w, h = targets[:n].T
        assert torch.all((cls >= 0) & (cls < coco.num_classes) & (cls == cls.round()))
        assert torch.all((w > 1) & (h > 1))
        assert torch.all(cx - w / 2 >= -1e-3) and torch.all(cx + w / 2 <= INPUT_HW[1] + 1e-3)
        assert torch.all(cy - h / 2 >= -1e-3) and torch.all(cy + h / 2 <= INPUT_HW[0] + 1e-3)


def test_reproducible_per_seed_epoch_and_index(coco: CocoDetection) -> None:
    a = TrainDataset(coco, INPUT_HW, AUGMENT_PRESETS["default"], seed=5)
    b = TrainDataset(coco, INPUT_HW, AUGMENT_PRESETS["default"], seed=5)
    for index in (0, 7):
        for x, y in zip(a[index][:2], b[index][:2], strict=True):
            assert torch.equal(x, y)
        assert torch.equal(a[index][0], a[index][0])
    b.set_epoch(1)
    assert b.epoch == 1 and not torch.equal(a[0][0], b[0][0])
    c = TrainDataset(coco, INPUT_HW, AUGMENT_PRESETS["default"], seed=6)
    assert not torch.equal(a[0][0], c[0][0])
    assert np.array_equal(a.sample(3, epoch=1).image, b.sample(3).image)


def test_close_mosaic_gives_the_plain_letterbox(coco: CocoDetection) -> None:
    dataset = TrainDataset(coco, INPUT_HW, _plain_cfg())
    assert dataset.mosaic_enabled
    dataset.close_mosaic()
    assert not dataset.mosaic_enabled
    for index in range(4):
        image, targets, _ = dataset[index]
        sample = coco.load(index)
        canvas, r = letterbox(sample.image, INPUT_HW)
        assert torch.equal(image, torch.from_numpy(canvas.transpose(2, 0, 1).copy()))
        boxes = sample.boxes_xyxy * r
        n = len(boxes)
        np.testing.assert_allclose(targets[:n, 1].numpy(), (boxes[:, 0] + boxes[:, 2]) / 2, rtol=1e-5)
        np.testing.assert_allclose(targets[:n, 3].numpy(), boxes[:, 2] - boxes[:, 0], rtol=1e-5)
        assert targets[:n, 0].tolist() == sample.labels.tolist()
    dataset.enable_mosaic(True)
    assert not torch.equal(dataset[0][0], image)


def test_train_loader_with_persistent_workers_follows_epoch_and_mosaic_switch(coco: CocoDetection) -> None:
    dataset = TrainDataset(coco, INPUT_HW, AUGMENT_PRESETS["default"], seed=1)
    loader = build_train_loader(dataset, batch_size=5, workers=2, seed=0)
    assert len(loader) == 24 // 5  # drop_last

    def expected_first_batch() -> torch.Tensor:
        order = list(iter(loader.sampler))[:5]  # what the workers are asked for, computed in this process
        return torch.stack([torch.from_numpy(dataset.sample(i).image.transpose(2, 0, 1).copy()) for i in order])

    loader.set_epoch(0)
    batches = list(loader)
    assert len(batches) == 4
    images, targets, image_ids = batches[0]
    assert images.shape == (5, 3, *INPUT_HW) and images.dtype == torch.uint8
    assert targets.shape == (5, 120, 5) and targets.dtype == torch.float32
    assert image_ids.shape == (5,) and image_ids.dtype == torch.int64
    assert torch.equal(images, expected_first_batch())
    seen = torch.cat([b[2] for b in batches])
    assert len(set(seen.tolist())) == 20  # one epoch: distinct images

    loader.set_epoch(1)  # between epochs, persistent workers still alive
    loader.close_mosaic()
    images1 = next(iter(loader))[0]
    assert torch.equal(images1, expected_first_batch())  # workers saw epoch 1 and mosaic off
    assert not dataset.mosaic_enabled


def test_distributed_train_sampler_splits_ranks(coco: CocoDetection) -> None:
    dataset = TrainDataset(coco, INPUT_HW, AUGMENT_PRESETS["nano"], seed=1)
    ranks = [build_train_loader(dataset, 3, 0, seed=2, distributed=True, rank=r, world_size=2) for r in range(2)]
    for loader in ranks:
        loader.set_epoch(4)
    shards = [set(iter(loader.sampler)) for loader in ranks]
    assert not shards[0] & shards[1] and len(shards[0] | shards[1]) == 24
    assert len(ranks[0]) == 12 // 3


@pytest.mark.parametrize("workers", [0, 2])
def test_eval_loader_letterboxes_in_order(coco: CocoDetection, workers: int) -> None:
    loader = build_eval_loader(coco, (64, 64), batch_size=5, workers=workers)
    batches = list(loader)
    assert [len(b[0]) for b in batches] == [5, 5, 5, 5, 4]
    images, ratios, image_ids, image_hw = (torch.cat(parts) for parts in zip(*batches, strict=True))
    assert images.dtype == torch.uint8 and images.shape == (24, 3, 64, 64)
    assert ratios.dtype == torch.float32 and image_ids.dtype == torch.int64 and image_hw.shape == (24, 2)
    for index in (0, 13, 23):
        image = coco.load(index).image
        canvas, r = letterbox(image, (64, 64))
        assert torch.equal(images[index], torch.from_numpy(canvas.transpose(2, 0, 1).copy()))
        assert ratios[index].item() == pytest.approx(r)
        assert image_ids[index].item() == coco.image_info(index).image_id
        assert tuple(image_hw[index].tolist()) == image.shape[:2]


def test_eval_loader_shards_cover_every_image_once(coco: CocoDetection) -> None:
    ids = []
    for rank in range(3):
        loader = build_eval_loader(coco, (32, 32), batch_size=4, workers=0, distributed=True, rank=rank, world_size=3)
        ids += torch.cat([b[2] for b in loader]).tolist()
    assert sorted(ids) == sorted(coco.image_info(i).image_id for i in range(len(coco)))
