"""The one interface between the front ends (REST, gRPC, OIP) and the model: :class:`Engine`.

Transports decode their wire format into :mod:`service.imaging` inputs and :class:`DetectOptions`, call
``detect``/``detect_many`` (cancelling the awaiting task cancels the request), read health and the model list,
and encode a :class:`DetectResult`; they never see batching, workers or predictors. Metrics and statistics reach
them as one object, ``engine.telemetry`` (:class:`Telemetry`). Everything here is protocol-agnostic: the protocol
is only a label on request metrics. Imports nothing from ``model`` (the implementation does, through
``service.model_loading``).
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from service.backend_choice import BackendChoice
from service.imaging import ImageInput
from service.stats import StatsSnapshot


@dataclass(frozen=True)
class DetectOptions:
    """Per-request postprocessing options; ``None`` = the model's default.

    ``classes`` may mix class ids and class names; the engine resolves and validates them per model.
    """

    score_threshold: float | None = None
    max_detections: int | None = None
    classes: tuple[int | str, ...] | None = None


@dataclass(frozen=True)
class StageTiming:
    """Where one image's time went, in milliseconds."""

    decode_ms: float = 0.0  # decode + preprocess (letterbox, normalise)
    queue_ms: float = 0.0  # enqueue -> batch start
    inference_ms: float = 0.0  # backend call for the whole batch
    postprocess_ms: float = 0.0  # postprocessing for the whole batch


@dataclass(frozen=True)
class DetectResult:
    """Detections for one image, boxes in original-image pixels."""

    model: str
    model_version: str
    width: int
    height: int
    boxes_xyxy: np.ndarray  # float32 [K, 4]
    scores: np.ndarray  # float32 [K]
    class_ids: np.ndarray  # int32 [K]
    class_names: tuple[str, ...]  # [K], one per detection
    timing: StageTiming = field(default_factory=StageTiming)


@dataclass(frozen=True)
class ModelInfo:
    """What ``GET /v1/models`` and ``ListModels`` report about a served model."""

    name: str
    version: str
    class_names: tuple[str, ...]
    input_hw: tuple[int, int]
    backend: str
    devices: tuple[str, ...]
    instances: int  # model instances over all devices
    max_batch_size: int  # effective: min(server setting, bundle limit)
    max_queue_delay_ms: float
    queue_capacity: int
    score_threshold: float  # lowest threshold a request may ask for (baked into the bundle)
    default_score_threshold: float
    max_detections: int
    path: str
    precision: str = "fp32"  # what the backend runs at
    backend_choice: BackendChoice | None = None  # --backend auto's measurements (None: configured or one candidate)


@dataclass(frozen=True)
class ModelStatus:
    """One model version in the repository index (``POST /v2/repository/index``, ``GET /v1/models``): Triton's
    states READY, LOADING, UNLOADING (draining what it admitted) and UNAVAILABLE, and why (a load error, "unloaded")."""

    name: str
    version: str  # "" for a model with no version to report (never loaded, no version directory)
    state: str
    reason: str = ""


class Telemetry(Protocol):
    """What front ends record and read: request metrics, per-model statistics, the Prometheus text."""

    def observe_request(self, protocol: str, model: str, code: str, duration_s: float) -> None:
        """Record one transport request (``protocol``: rest, grpc, oip_rest, oip_grpc; ``code``: ok or error)."""
        ...

    def statistics(self, name: str, version: str | None = None) -> StatsSnapshot:
        """Triton-style statistics of a served model version (``None``: the one requests without a version get;
        ``/v2/models/{m}/stats``, ``ModelStatistics``)."""
        ...

    def render(self) -> bytes:
        """The Prometheus exposition text."""
        ...


@dataclass(frozen=True)
class Submission:
    """Where and how one request's images go (see :meth:`Engine.detect`)."""

    model: str | None = None  # None: the default model
    options: DetectOptions | None = None
    timeout_s: float | None = None  # the client's deadline
    priority: int = 0  # Triton's: 1 most urgent, 0 the default level
    version: str | None = None  # None: the newest version the model's policy serves


class Engine(abc.ABC):
    """Decode -> dynamic batcher -> worker pool -> postprocess, shared by every front end."""

    async def detect(
        self,
        image: ImageInput,
        *,
        model: str | None = None,
        options: DetectOptions | None = None,
        timeout_s: float | None = None,
        priority: int = 0,
        version: str | None = None,
    ) -> DetectResult:
        """Detect objects in one image.

        Raises the ``service.errors`` domain errors; ``timeout_s`` is the client's deadline (the server's
        ``request_timeout_ms`` caps it). ``priority`` follows Triton: 1 is the most urgent level, 0 (or a value
        beyond the configured levels) means the default level. ``version``: one of the model's served versions
        (``None``: the newest). Cancelling the awaiting task drops the request before compute.
        """
        return await self.submit_one(image, Submission(model, options, timeout_s, priority, version))

    async def detect_many(
        self,
        images: Sequence[ImageInput],
        *,
        model: str | None = None,
        options: DetectOptions | None = None,
        timeout_s: float | None = None,
        priority: int = 0,
        version: str | None = None,
    ) -> list[DetectResult]:
        """Detect objects in several images of one request: admitted together (on one model version), batched with
        everyone else, failing (and cancelling the rest) on the first error."""
        return await self.submit(images, Submission(model, options, timeout_s, priority, version))

    @abc.abstractmethod
    async def submit_one(self, image: ImageInput, request: Submission) -> DetectResult:
        """``detect``'s work."""

    @abc.abstractmethod
    async def submit(self, images: Sequence[ImageInput], request: Submission) -> list[DetectResult]:
        """``detect_many``'s work."""

    @abc.abstractmethod
    def models(self) -> list[ModelInfo]:
        """The served model versions: the default model first, each model's versions newest first."""

    @abc.abstractmethod
    def model_info(self, name: str | None = None, version: str | None = None) -> ModelInfo:
        """One served model (``None`` = the default) at ``version`` (``None`` = its newest served version);
        raises ``ModelNotFound``."""

    @abc.abstractmethod
    def repository_index(self, ready_only: bool = False) -> list[ModelStatus]:
        """Every model version the server knows of, with its state (Triton's repository index)."""

    @abc.abstractmethod
    async def load_model(self, name: str) -> None:
        """Load or reload a repository model (its policy's versions) beside what serves, then switch; raises
        ``ModelControlDisabled`` unless model control is explicit, ``ModelLoadFailed`` with the reason."""

    @abc.abstractmethod
    async def unload_model(self, name: str) -> None:
        """Stop routing to every version of a repository model; each drains what it admitted, then is freed."""

    @abc.abstractmethod
    def is_live(self) -> bool:
        """The process is up (even while loading)."""

    @abc.abstractmethod
    def is_ready(self) -> bool:
        """Every model is loaded, warmed up and healthy, every batcher runs, and the server is not draining."""

    @abc.abstractmethod
    def health_reason(self) -> str:
        """Why the server is not ready or not live ("" when it is both)."""

    @property
    @abc.abstractmethod
    def draining(self) -> asyncio.Event:
        """Set when shutdown begins: long-lived streams stop taking frames and finish."""

    @property
    @abc.abstractmethod
    def telemetry(self) -> Telemetry:
        """Request metrics, per-model statistics and the Prometheus text."""
