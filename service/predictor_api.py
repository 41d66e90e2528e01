"""The typed seam between the service and the model: what the service uses of a ``model.predictor.Predictor``.

Structural (``Protocol``) so the service needs no import of ``model`` to type against it, and the test fakes
(``tests/service/fakes.py``) satisfy it too. The contract itself is in ``docs/contracts.md``. Imports nothing from
``model``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Protocol

import numpy as np


class Thresholds(Protocol):
    """The bundle's baked thresholds."""

    score_threshold: float  # the lowest threshold a request may ask for
    default_score_threshold: float
    max_detections: int


class BundleInfo(Protocol):
    """What the service reads of a bundle's ``meta.json``."""

    name: str
    version: str
    class_names: Sequence[str]
    input_hw: tuple[int, int]
    max_batch: int
    thresholds: Thresholds


class RawOutput(Protocol):
    """A batch's raw result: per-image rows of the bundle's output contract."""

    num_dets: np.ndarray  # int32 [B]


class Detections(Protocol):
    """One image's detections, boxes in original-image pixels."""

    boxes_xyxy: np.ndarray  # float32 [K, 4]
    scores: np.ndarray  # float32 [K]
    class_ids: np.ndarray  # int32 [K]


class Predictor(Protocol):
    """One loaded model instance (not thread-safe except ``preprocess`` and ``resolve_options``)."""

    meta: BundleInfo

    @property
    def backend(self) -> str:
        """The runtime running the bundle."""
        ...

    def resolve_options(self, score_threshold: float | None, max_detections: int | None) -> tuple[float, int]:
        """Effective (threshold, K); ``ValueError`` naming the bound when outside what the bundle can deliver."""
        ...

    def preprocess(self, image: np.ndarray, channel_order: str = "bgr") -> tuple[np.ndarray, float]:
        """uint8 [H, W, 3] -> (float32 [3, H_in, W_in], letterbox scale r)."""
        ...

    def infer(self, batch: np.ndarray) -> RawOutput:
        """float32 [B, 3, H_in, W_in] -> the batch's raw result."""
        ...

    def postprocess(
        self,
        raw: RawOutput,
        index: int,
        r: float,
        image_hw: tuple[int, int],
        score_threshold: float | None = None,
        max_detections: int | None = None,
        class_ids: Iterable[int] | None = None,
    ) -> Detections:
        """Row ``index`` of ``raw`` in original pixels, filtered and capped."""
        ...

    def warmup(self, batch_sizes: Iterable[int] | None = None) -> None:
        """Run each batch size once."""
        ...


class DevicePipeline(Protocol):
    """Decode and letterbox next to the model (``model.device_pipeline.DevicePipeline``; decode mode ``device``).
    Images are opaque device tensors to the service."""

    warm: bool  # it has run once (the server runs it at load)

    def decode(self, images: Sequence[bytes]) -> list[Any]:
        """Encoded images -> RGB ``[H, W, 3]`` uint8 device tensors, or each undecodable image's ``ValueError``."""
        ...

    def upload(self, image: np.ndarray, channel_order: str = "bgr") -> Any:
        """A host uint8 ``[H, W, 3]`` array -> an RGB device tensor."""
        ...

    def infer(self, images: list[Any]) -> tuple[RawOutput, list[float]]:
        """Device images -> the batch's raw result and each image's letterbox scale ``r``."""
        ...


class DeviceDecoding(Protocol):
    """A predictor that can decode and letterbox on its own device (TorchScript bundles)."""

    def device_pipeline(self, max_pixels: int | None = None) -> DevicePipeline:
        """This instance's pipeline, created on first use and kept (used on the instance's thread only)."""
        ...
