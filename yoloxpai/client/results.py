"""Client-side result types, shared by the REST and gRPC clients (plain dataclasses, no server imports)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Detection:
    """One object; ``box_xyxy`` in original-image pixels."""

    box_xyxy: tuple[float, float, float, float]
    score: float
    class_id: int
    class_name: str


@dataclass(frozen=True)
class ImageDetections:
    """The detections of one image (or stream frame). ``error`` is set for a frame answered in band."""

    model: str
    model_version: str
    width: int
    height: int
    detections: tuple[Detection, ...]
    timing_ms: dict[str, float] = field(default_factory=dict)
    frame_id: int = 0
    error: str | None = None  # "<code>: <message>" of a failed stream frame
