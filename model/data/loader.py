"""DataLoaders for training (augmented, shuffled per epoch, optionally distributed) and evaluation (letterbox only).

Training batches: ``(images uint8 [B, 3, H, W] BGR, targets float32 [B, max_labels, 5], image_ids int64 [B])``.
Evaluation batches: ``(images uint8 [B, 3, H, W] BGR, ratios float32 [B], image_ids int64 [B],
image_hw int64 [B, 2])``; a detection in input pixels maps back with ``box / ratio`` (``boxes_to_original``).
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from model.data.coco import CocoDetection
from model.data.train_dataset import TrainDataset
from model.letterbox import letterbox


def collate_train(batch: Sequence[tuple[torch.Tensor, torch.Tensor, int]]) -> tuple[torch.Tensor, ...]:
    """Stack ``TrainDataset`` items into (images [B, 3, H, W] uint8, targets [B, L, 5], image_ids [B])."""
    images, targets, image_ids = zip(*batch, strict=True)
    return torch.stack(images), torch.stack(targets), torch.as_tensor(image_ids, dtype=torch.int64)


def _init_worker(worker_id: int) -> None:
    """Seed the global generators (for third-party code; ours uses explicit ones) and cap OpenCV threads."""
    seed = torch.initial_seed() % 2**32  # DataLoader derives it from its generator and the worker id
    random.seed(seed)
    np.random.seed(seed)
    cv2.setNumThreads(0)  # sequential OpenCV: N workers x an all-core OpenCV pool would oversubscribe the CPU


class TrainLoader:
    """A training DataLoader plus the per-epoch switches the loop needs (``set_epoch``, ``close_mosaic``)."""

    def __init__(self, loader: DataLoader, sampler: DistributedSampler, dataset: TrainDataset) -> None:
        self.loader = loader
        self.sampler = sampler
        self.dataset = dataset

    def set_epoch(self, epoch: int) -> None:
        """Reshuffle and reseed augmentation for ``epoch``; call before iterating that epoch."""
        self.sampler.set_epoch(epoch)
        self.dataset.set_epoch(epoch)

    def close_mosaic(self) -> None:
        """Switch to the no-augmentation phase from the next epoch on (persistent workers follow)."""
        self.dataset.close_mosaic()

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        return iter(self.loader)

    def __len__(self) -> int:
        return len(self.loader)


def build_train_loader(
    dataset: TrainDataset,
    batch_size: int,
    workers: int,
    seed: int,
    distributed: bool = False,
    rank: int = 0,
    world_size: int = 1,
    *,
    pin_memory: bool = False,
    prefetch_factor: int = 2,
) -> TrainLoader:
    """Shuffled, ``drop_last`` batches of ``batch_size`` per rank; call ``set_epoch(e)`` before each epoch.

    One sampler for both cases: ``DistributedSampler`` with ``(world_size, rank)`` when distributed, else with
    ``(1, 0)`` (no process group needed), so the shuffle order is a function of ``(seed, epoch)`` alone.
    """
    if batch_size < 1 or workers < 0:
        raise ValueError(f"batch_size must be >= 1 and workers >= 0, got {batch_size}, {workers}")
    replicas, this_rank = (world_size, rank) if distributed else (1, 0)
    sampler = DistributedSampler(dataset, num_replicas=replicas, rank=this_rank, shuffle=True, seed=seed)
    generator = torch.Generator().manual_seed(seed + this_rank)
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        collate_fn=collate_train,
        pin_memory=pin_memory,
        drop_last=True,
        worker_init_fn=_init_worker if workers > 0 else None,
        generator=generator,
        persistent_workers=workers > 0,
        prefetch_factor=prefetch_factor if workers > 0 else None,
    )
    return TrainLoader(loader, sampler, dataset)


class EvalDataset(Dataset):
    """Letterboxed (top-left, pad 114), un-augmented images of a ``CocoDetection`` with their geometry."""

    def __init__(self, coco: CocoDetection, input_hw: tuple[int, int], pad_value: float = 114.0) -> None:
        self.coco = coco
        self.input_hw = (int(input_hw[0]), int(input_hw[1]))
        self.pad_value = pad_value

    def __len__(self) -> int:
        return len(self.coco)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, float, int, tuple[int, int]]:
        image = self.coco.load(index).image
        canvas, r = letterbox(image, self.input_hw, self.pad_value)
        info = self.coco.image_info(index)
        return torch.from_numpy(np.ascontiguousarray(canvas.transpose(2, 0, 1))), r, info.image_id, image.shape[:2]


def collate_eval(batch: Sequence[tuple[torch.Tensor, float, int, tuple[int, int]]]) -> tuple[torch.Tensor, ...]:
    """Stack ``EvalDataset`` items into (images uint8 [B, 3, H, W], ratios [B], image_ids [B], image_hw [B, 2])."""
    images, ratios, image_ids, hws = zip(*batch, strict=True)
    return (
        torch.stack(images),
        torch.as_tensor(ratios, dtype=torch.float32),
        torch.as_tensor(image_ids, dtype=torch.int64),
        torch.as_tensor(hws, dtype=torch.int64),
    )


class ShardSampler(Sampler[int]):
    """Indices ``rank, rank + world_size, ...`` in order: each image evaluated exactly once across ranks."""

    def __init__(self, length: int, rank: int, world_size: int) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
        self.indices = range(rank, length, world_size)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def build_eval_loader(
    coco_dataset: CocoDetection,
    input_hw: tuple[int, int],
    batch_size: int,
    workers: int,
    *,
    distributed: bool = False,
    rank: int = 0,
    world_size: int = 1,
    pin_memory: bool = False,
) -> DataLoader:
    """Ordered evaluation batches (see the module docstring); distributed ranks take disjoint shards."""
    if batch_size < 1 or workers < 0:
        raise ValueError(f"batch_size must be >= 1 and workers >= 0, got {batch_size}, {workers}")
    dataset = EvalDataset(coco_dataset, input_hw)
    shard = ShardSampler(len(dataset), rank, world_size) if distributed else ShardSampler(len(dataset), 0, 1)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=shard,
        num_workers=workers,
        collate_fn=collate_eval,
        pin_memory=pin_memory,
        drop_last=False,
        worker_init_fn=_init_worker if workers > 0 else None,
    )
