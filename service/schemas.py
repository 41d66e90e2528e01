"""REST wire types (pydantic): the JSON request body, responses and the error body; also the OpenAPI schema.

Pure data: conversion from/to engine types lives in ``service.rest``. Imports nothing from ``model``.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, StrictStr


class _Strict(BaseModel):
    # Unknown fields are errors: a misspelt option must not be silently ignored.
    model_config = ConfigDict(extra="forbid")


class B64Image(_Strict):
    """One base64-encoded JPEG/PNG/WebP/BMP image."""

    b64: StrictStr = Field(description="standard base64 of the encoded file (no data: prefix needed)")


class DetectJSONRequest(_Strict):
    """``application/json`` body of ``POST /v1/detect``."""

    images: list[B64Image] = Field(min_length=1)
    score_threshold: StrictFloat | StrictInt | None = Field(None, description="minimum score, in [bundle min, 1]")
    max_detections: StrictInt | None = Field(None, description="at most this many detections per image")
    classes: list[StrictInt | StrictStr] | None = Field(None, description="keep only these class ids or names")


class Detection(BaseModel):
    """One detected object; ``box`` is ``[x1, y1, x2, y2]`` in original-image pixels."""

    box: list[float] = Field(min_length=4, max_length=4)
    score: float
    class_id: int
    class_name: str


class ImageResult(BaseModel):
    """Detections for one input image."""

    width: int
    height: int
    detections: list[Detection]


class DetectResponse(BaseModel):
    """``POST /v1/detect`` response; ``timing_ms`` stages are the slowest image's (they run in parallel)."""

    model: str
    model_version: str
    results: list[ImageResult]
    timing_ms: dict[str, float] = Field(description="decode, queue, inference, postprocess, total")


class BackendChoiceDescription(BaseModel):
    """How ``--backend auto`` chose: every candidate timed on this machine at load."""

    backend: str
    precision: str
    batch: int = Field(description="images per inference the candidates were timed at")
    ms_per_image: dict[str, float] = Field(description='"backend/precision" -> milliseconds per image')


class ModelDescription(BaseModel):
    """One entry of ``GET /v1/models``."""

    name: str
    version: str
    default: bool = Field(description="the model `/v1/detect` uses")
    default_version: bool = Field(description="the version requests that name no version get (the newest served)")
    state: str = Field(description="READY: a served version (the others are in `repository`)")
    reason: str = Field(description="e.g. why a reload of this version failed (the loaded copy serves)")
    classes: list[str]
    input_size: dict[str, int] = Field(description="network input {height, width}")
    backend: str
    precision: str = Field(description="what the backend runs at: fp32, bf16, fp16 or int8")
    backend_choice: BackendChoiceDescription | None = Field(
        None, description="--backend auto's measurement at load (null: configured, or a single candidate)"
    )
    devices: list[str]
    instances: int
    max_batch_size: int
    max_queue_delay_ms: float
    queue_capacity: int
    score_threshold: dict[str, float] = Field(description="{minimum, default}")
    max_detections: int


class RepositoryEntry(BaseModel):
    """One model version the server knows of (as ``POST /v2/repository/index``)."""

    name: str
    version: str = Field(description='"" for the model as a whole (never loaded, unreadable config.json)')
    state: str = Field(description="READY, LOADING, UNLOADING (draining what it admitted) or UNAVAILABLE")
    reason: str = Field(description="why not READY: a load error, unloaded, removed from the repository, ...")


class ModelList(BaseModel):
    """``GET /v1/models`` response: the served model versions, and every version's state."""

    models: list[ModelDescription]
    repository: list[RepositoryEntry]


class ErrorBody(BaseModel):
    """The error object."""

    code: str = Field(description="stable machine-readable name, e.g. invalid_image, overloaded")
    message: str


class ErrorResponse(BaseModel):
    """Every non-2xx response body."""

    error: ErrorBody
