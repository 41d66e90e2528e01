"""Batch execution on a worker's thread: decode + preprocess (``prepare``), stack, ``infer``, ``postprocess``.

Blocking work is split by thread. ``run_batch`` runs on the worker's own thread. ``prepare`` runs where the decode
mode says: ``pool`` decodes in the engine's decode pool before an image is queued, overlapping decoding with
inference (GPUs); ``batch`` queues the encoded image and the worker decodes its batch (over the decode pool when
it holds several) just before inferring, so decoding and a CPU runtime take turns on the cores instead of
contending for them. The event loop never runs anything here. Imports nothing from ``model``.
"""

from __future__ import annotations

import time
from concurrent.futures import Executor
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
from prometheus_client import Histogram

from service.errors import InvalidOption, ServiceError
from service.imaging import ImageInput, load_image
from service.options import ResolvedOptions
from service.predictor_api import Detections, Predictor


class BatchSizeMismatch(RuntimeError):
    """The backend returned a different number of outputs than inputs."""


@dataclass(frozen=True)
class Prepared:
    """An image ready for batching."""

    tensor: np.ndarray  # float32 [3, H_in, W_in]
    r: float  # letterbox scale (network pixels per original image pixel, a reduced decode included)
    image_hw: tuple[int, int]  # original (height, width)
    options: ResolvedOptions
    decode_ns: int


@dataclass(frozen=True)
class Encoded:
    """An image queued before decoding (decode mode ``batch``): the worker decodes it with its batch."""

    image: ImageInput
    options: ResolvedOptions


@dataclass(frozen=True)
class ItemOutput:
    """What one image's request resolves to."""

    detections: Detections
    image_hw: tuple[int, int]  # original (height, width)
    decode_ns: int
    queue_ns: int
    infer_ns: int
    output_ns: int


@dataclass(frozen=True)
class BatchOutput:
    """``run_batch``'s result: one entry per input (detections, or the error of that image alone)."""

    results: list[Detections | ServiceError]
    input_ns: int
    infer_ns: int
    output_ns: int


NOTHING_RAN = BatchOutput([], 0, 0, 0)
DecodeMode = Literal["pool", "batch"]


def resolve_decode_mode(setting: str, devices: tuple[str, ...]) -> DecodeMode:
    """``auto``: ``batch`` when every device is a CPU (decoding would contend with inference for the same cores),
    else ``pool`` (decoding overlaps accelerator compute)."""
    if setting in ("pool", "batch"):
        return setting  # type: ignore[return-value]
    return "batch" if all(d == "cpu" for d in devices) else "pool"


def run_batch(predictor: Predictor, payloads: list[Prepared]) -> BatchOutput:
    """Stack, infer and postprocess one batch. Runs on the worker's thread."""
    t0 = time.perf_counter_ns()
    # [B, 3, H_in, W_in]; a single image is a view, not a copy
    batch = payloads[0].tensor[None] if len(payloads) == 1 else np.stack([p.tensor for p in payloads])
    t1 = time.perf_counter_ns()
    raw = predictor.infer(batch)
    t2 = time.perf_counter_ns()
    if len(raw.num_dets) != len(payloads):
        raise BatchSizeMismatch(f"got {len(raw.num_dets)} outputs for {len(payloads)} inputs")
    results: list[Detections | ServiceError] = []
    for index, p in enumerate(payloads):
        try:
            results.append(
                predictor.postprocess(
                    raw,
                    index,
                    p.r,
                    p.image_hw,
                    score_threshold=p.options.score_threshold,
                    max_detections=p.options.max_detections,
                    class_ids=p.options.class_ids,
                )
            )
        except ValueError as exc:  # an option the predictor refuses fails this image only
            results.append(InvalidOption(str(exc)))
    t3 = time.perf_counter_ns()
    return BatchOutput(results, t1 - t0, t2 - t1, t3 - t2)


class BatchExecutor:
    """Decodes and runs batches of one model (its methods run on worker or decode-pool threads)."""

    def __init__(
        self,
        preprocessor: Predictor,
        max_image_pixels: int,
        decode_pool: Executor,
        decode_seconds: Histogram,
        reduced_decode: bool = True,
    ) -> None:
        self._preprocessor = preprocessor  # preprocess is thread-safe on any instance
        self._max_image_pixels = max_image_pixels
        # a large JPEG decodes at the reduction its letterbox allows (service.imaging.decode_for_input)
        self._decode_hw = tuple(preprocessor.meta.input_hw) if reduced_decode else None
        self._decode_pool = decode_pool
        self._decode_seconds = decode_seconds

    def prepare(self, image: ImageInput, options: ResolvedOptions) -> Prepared:
        """Decode + preprocess one image. Blocking: runs in the decode pool or on a worker's thread."""
        t0 = time.perf_counter_ns()
        decoded, channel_order = load_image(image, self._max_image_pixels, self._decode_hw)
        tensor, r = self._preprocessor.preprocess(decoded.image, channel_order=channel_order)
        decode_ns = time.perf_counter_ns() - t0
        self._decode_seconds.observe(decode_ns / 1e9)
        # r and the size against the original pixels, so boxes come back in the client's image
        return Prepared(tensor, decoded.scale_to_original(float(r)), decoded.original_hw, options, decode_ns)

    def _prepare_or_error(self, payload: Prepared | Encoded) -> Prepared | ServiceError:
        if isinstance(payload, Prepared):
            return payload
        try:
            return self.prepare(payload.image, payload.options)
        except ServiceError as exc:  # a bad image fails alone; the rest of its batch goes on
            return exc

    def decode_and_run(
        self, predictor: Predictor, payloads: list[Prepared | Encoded]
    ) -> tuple[list[Prepared | ServiceError], BatchOutput]:
        """Decode what is still encoded, then ``run_batch`` the decodable images. Runs on the worker's thread.

        Several encoded images are decoded in parallel over the decode pool while the runtime's threads are
        idle. Returns each payload's ``Prepared`` (or its error) and the batch output with one result per payload.
        """
        if sum(isinstance(p, Encoded) for p in payloads) > 1:
            prepared = list(self._decode_pool.map(self._prepare_or_error, payloads))
        else:
            prepared = [self._prepare_or_error(p) for p in payloads]
        ok = [p for p in prepared if isinstance(p, Prepared)]
        output = run_batch(predictor, ok) if ok else NOTHING_RAN
        inferred = iter(output.results)
        results = [p if isinstance(p, ServiceError) else next(inferred) for p in prepared]
        return prepared, replace(output, results=results)


def item_output(detections: Detections, prepared: Prepared | ServiceError, queue_ns: int, output: BatchOutput):
    """One image's ``ItemOutput`` (only decoded images have detections)."""
    assert isinstance(prepared, Prepared)
    return ItemOutput(detections, prepared.image_hw, prepared.decode_ns, queue_ns, output.infer_ns, output.output_ns)
