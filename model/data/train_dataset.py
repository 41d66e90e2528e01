"""``TrainDataset``: a COCO dataset + ``Augmenter`` as a torch ``Dataset`` returning the training-sample contract.

``dataset[i] -> (image uint8 [3, H, W] BGR tensor, targets float32 [max_labels, 5] = (class, cx, cy, w, h) in
input pixels, zero-padded, image_id int)``. The training loop applies the preset's ``InputConvention`` on the
device; multiscale is a resize of the whole batch there, so the dataset has one fixed ``input_hw``.

Reproducibility: sample ``i`` of epoch ``e`` uses ``np.random.default_rng([seed, e, i])`` and nothing else, so a
resumed run sees the same augmented images whatever the worker count.

Switching epochs and closing mosaic with persistent workers: the epoch and the mosaic flag live in a small
shared-memory tensor that worker processes read at every ``__getitem__``. Call ``set_epoch`` / ``close_mosaic``
from the main process *between* epochs (after one epoch's iterator is exhausted and before ``iter(loader)`` of
the next): a DataLoader fetches nothing in between, so every sample of the new epoch sees the new values.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from model.data.augment import Augmenter, to_targets
from model.data.augment_config import AugmentConfig
from model.data.coco import CocoDetection, Sample

MAX_LABELS = 120


class TrainDataset(Dataset):
    """Augmented training samples of a ``CocoDetection`` at a fixed ``input_hw``."""

    def __init__(
        self,
        coco: CocoDetection,
        input_hw: tuple[int, int],
        augment: AugmentConfig,
        *,
        seed: int = 0,
        max_labels: int = MAX_LABELS,
    ) -> None:
        self.coco = coco
        self.input_hw = (int(input_hw[0]), int(input_hw[1]))
        self.augment = augment
        self.seed = int(seed)
        self.max_labels = int(max_labels)
        self._augmenter = Augmenter(coco, self.input_hw, augment)
        # [epoch, mosaic on/off], shared with DataLoader workers (see the module docstring).
        self._state = torch.tensor([0, 1], dtype=torch.int64).share_memory_()

    def __len__(self) -> int:
        return len(self.coco)

    @property
    def epoch(self) -> int:
        """The epoch that seeds the augmentation."""
        return int(self._state[0])

    @property
    def mosaic_enabled(self) -> bool:
        """False once ``close_mosaic`` ran (the no-augmentation phase)."""
        return bool(self._state[1])

    def set_epoch(self, epoch: int) -> None:
        """Seed the following samples with ``epoch`` (call between epochs, see the module docstring)."""
        self._state[0] = int(epoch)

    def enable_mosaic(self, enabled: bool) -> None:
        """Turn mosaic (and with it random affine and mixup) on or off."""
        self._state[1] = int(bool(enabled))

    def close_mosaic(self) -> None:
        """Enter the no-augmentation phase of the last epochs: only colour + flip + letterbox remain."""
        self.enable_mosaic(False)

    def sample(self, index: int, epoch: int | None = None) -> Sample:
        """The augmented numpy sample ``index`` of ``epoch`` (default: the current one); boxes in input pixels."""
        epoch = self.epoch if epoch is None else int(epoch)
        rng = np.random.default_rng([self.seed, epoch, int(index)])
        return self._augmenter(int(index), rng, mosaic=self.mosaic_enabled)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        sample = self.sample(index)
        image = torch.from_numpy(np.ascontiguousarray(sample.image.transpose(2, 0, 1)))  # [3, H, W] uint8
        targets = torch.from_numpy(to_targets(sample.boxes_xyxy, sample.labels, self.max_labels))  # [L, 5]
        return image, targets, self.coco.image_info(index).image_id
