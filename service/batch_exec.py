"""Batch execution on a worker's thread: decode + preprocess (``prepare``), stack, ``infer``, ``postprocess``.

Blocking work is split by thread. ``run_batch`` runs on the worker's own thread. ``prepare`` runs where the decode
mode says: ``pool`` decodes in the engine's decode pool before an image is queued, overlapping decoding with
inference (GPUs); ``batch`` queues the encoded image and the worker decodes its batch (over the decode pool when
it holds several) just before inferring, so decoding and a CPU runtime take turns on the cores instead of
contending for them; ``device`` queues it encoded too, and the worker checks each image's header on the host, then
decodes (nvJPEG on CUDA) and letterboxes the whole batch on the model's device (TorchScript bundles,
``model.device_pipeline``), so a GPU server's host no longer decodes every image. The event loop never runs
anything here. Imports nothing from ``model``.
"""

from __future__ import annotations

import time
from concurrent.futures import Executor
from dataclasses import dataclass, replace
from typing import Any, Literal, cast

import numpy as np
from prometheus_client import Histogram

from service.bundles import ConfigError
from service.errors import InvalidImage, InvalidOption, ServiceError
from service.imaging import ImageInput, RawImage, check_media_type, checked_header, load_image, raw_to_array
from service.options import ResolvedOptions
from service.predictor_api import Detections, DeviceDecoding, DevicePipeline, Predictor, RawOutput


class BatchSizeMismatch(RuntimeError):
    """The backend returned a different number of outputs than inputs."""


@dataclass(frozen=True)
class Prepared:
    """An image ready for batching."""

    tensor: np.ndarray | None  # float32 [3, H_in, W_in]; None: letterboxed on the device (decode mode ``device``)
    r: float  # letterbox scale (network pixels per original image pixel, a reduced decode included)
    image_hw: tuple[int, int]  # original (height, width)
    options: ResolvedOptions
    decode_ns: int


@dataclass(frozen=True)
class Encoded:
    """An image queued before decoding (decode modes ``batch``, ``device``): the worker decodes it with its batch."""

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
DecodeMode = Literal["pool", "batch", "device"]


def device_decode_capable(predictor: Predictor) -> bool:
    """Whether ``predictor`` can decode and letterbox on its device (a TorchScript bundle's ``DevicePipeline``)."""
    return predictor.backend == "torchscript" and callable(getattr(predictor, "device_pipeline", None))


def resolve_decode_mode(setting: str, devices: tuple[str, ...], device_capable: bool = False) -> DecodeMode:
    """``auto``: ``device`` when every device is CUDA and ``device_capable`` (the instances run TorchScript: the
    GPU decodes, the host's cores stop setting the pace), else ``batch`` when every device is a CPU (decoding would
    contend with inference for the same cores), else ``pool`` (decoding overlaps accelerator compute). An explicit
    ``device`` the predictor cannot do is a ``ConfigError`` at load, never a failure at request time."""
    if setting == "device" and not device_capable:
        raise ConfigError(
            "--decode-mode device needs a TorchScript bundle served by the torchscript backend "
            "(decode and letterbox on the model's device); use pool, batch or auto"
        )
    if setting in ("pool", "batch", "device"):
        return setting  # type: ignore[return-value]
    if device_capable and all(d.startswith("cuda") for d in devices):
        return "device"
    return "batch" if all(d == "cpu" for d in devices) else "pool"


def decode_mode_for(
    setting: str, devices: tuple[str, ...], instances: list[Predictor], max_image_pixels: int
) -> DecodeMode:
    """``resolve_decode_mode`` for a model's instances; in mode ``device`` each instance's pipeline is built and run
    once now (it loads the bundle's ``preprocess.pt``; the first letterbox on a GPU selects its kernels), so a bundle
    that cannot give one is a ``ConfigError`` at load and the first request pays nothing extra. Blocking: the
    loader runs it off the event loop."""
    mode = resolve_decode_mode(setting, devices, device_decode_capable(instances[0]))
    if mode == "device":
        for predictor in instances:
            try:
                pipeline = cast(DeviceDecoding, predictor).device_pipeline(max_image_pixels)
                if not pipeline.warm:
                    h, w = predictor.meta.input_hw
                    pipeline.infer([pipeline.upload(np.zeros((h, w, 3), np.uint8), "bgr")])
                    pipeline.warm = True
            except (OSError, RuntimeError, ValueError) as exc:
                raise ConfigError(f"decode mode device: {type(exc).__name__}: {exc}") from exc
    return mode


def run_batch(predictor: Predictor, payloads: list[Prepared]) -> BatchOutput:
    """Stack, infer and postprocess one batch. Runs on the worker's thread."""
    t0 = time.perf_counter_ns()
    # [B, 3, H_in, W_in]; a single image is a view, not a copy
    tensors = cast(list[np.ndarray], [p.tensor for p in payloads])
    batch = tensors[0][None] if len(tensors) == 1 else np.stack(tensors)
    t1 = time.perf_counter_ns()
    raw = predictor.infer(batch)
    t2 = time.perf_counter_ns()
    results = postprocess_batch(predictor, raw, payloads)
    t3 = time.perf_counter_ns()
    return BatchOutput(results, t1 - t0, t2 - t1, t3 - t2)


def postprocess_batch(
    predictor: Predictor, raw: RawOutput, payloads: list[Prepared]
) -> list[Detections | ServiceError]:
    """Row ``i`` of ``raw`` -> ``payloads[i]``'s detections in its original pixels, or its option error."""
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
    return results


@dataclass(frozen=True)
class _Checked:
    """An image that passed decode mode ``device``'s host checks: its encoded bytes, or a raw image's pixels."""

    fmt: str  # "jpeg", "png", "webp", "bmp"; "raw" for raw pixels
    data: bytes | np.ndarray  # encoded bytes, or uint8 [H, W, 3] in channel_order
    channel_order: str = "bgr"


def _host_checked(image: ImageInput, max_image_pixels: int) -> _Checked:
    """The host side of one image in decode mode ``device``, no pixels decoded: the media type, the format sniff
    and the header's size against the limit, raising the same ``ServiceError``s as the other modes."""
    if isinstance(image, RawImage):
        return _Checked("raw", raw_to_array(image, max_image_pixels), image.channel_order)
    check_media_type(image.media_type)
    fmt, _, _ = checked_header(image.data, max_image_pixels)
    return _Checked(fmt, image.data)


class BatchExecutor:
    """Decodes and runs batches of one model (its methods run on worker or decode-pool threads)."""

    def __init__(
        self,
        preprocessor: Predictor,
        max_image_pixels: int,
        decode_pool: Executor,
        decode_seconds: Histogram,
        reduced_decode: bool = True,
        decode_mode: DecodeMode = "pool",
    ) -> None:
        self._preprocessor = preprocessor  # preprocess is thread-safe on any instance
        self._max_image_pixels = max_image_pixels
        self._decode_mode = decode_mode
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
        if self._decode_mode == "device":
            return self._device_run(predictor, payloads)
        if sum(isinstance(p, Encoded) for p in payloads) > 1:
            prepared = list(self._decode_pool.map(self._prepare_or_error, payloads))
        else:
            prepared = [self._prepare_or_error(p) for p in payloads]
        ok = [p for p in prepared if isinstance(p, Prepared)]
        output = run_batch(predictor, ok) if ok else NOTHING_RAN
        return prepared, _merged(prepared, output)

    def _device_run(
        self, predictor: Predictor, payloads: list[Prepared | Encoded]
    ) -> tuple[list[Prepared | ServiceError], BatchOutput]:
        """Decode mode ``device``: host header checks, one device decode of the batch, device letterbox + model.

        ``decode_ns`` of each image (and the decode histogram, once per image) is its share of the batch's host
        checks + decode + uploads, so the histogram's sum stays the time spent decoding; the letterbox runs inside
        the model's call and counts as inference. No reduced-resolution decode here: nvJPEG decodes full size.
        """
        pipeline = cast(DeviceDecoding, predictor).device_pipeline(self._max_image_pixels)
        t0 = time.perf_counter_ns()
        images = self._device_decode(pipeline, payloads)
        decode_ns = (time.perf_counter_ns() - t0) // len(payloads)
        for _ in payloads:
            self._decode_seconds.observe(decode_ns / 1e9)
        ok = [i for i, image in enumerate(images) if not isinstance(image, ServiceError)]
        prepared: list[Prepared | ServiceError] = list(images)
        if not ok:
            return prepared, _merged(prepared, NOTHING_RAN)
        t1 = time.perf_counter_ns()
        raw, scales = pipeline.infer([images[i] for i in ok])
        t2 = time.perf_counter_ns()
        for i, r in zip(ok, scales, strict=True):
            hw = (int(images[i].shape[0]), int(images[i].shape[1]))
            prepared[i] = Prepared(None, float(r), hw, cast(Encoded, payloads[i]).options, decode_ns)
        results = postprocess_batch(predictor, raw, [cast(Prepared, prepared[i]) for i in ok])
        return prepared, _merged(prepared, BatchOutput(results, 0, t2 - t1, time.perf_counter_ns() - t2))

    def _device_decode(self, pipeline: DevicePipeline, payloads: list[Prepared | Encoded]) -> list[Any]:
        """Each payload's RGB device image, or its ``ServiceError``: the encoded images in one ``decode`` call."""
        out: list[Any] = []
        for payload in payloads:
            if not isinstance(payload, Encoded):  # the device mode queues every image encoded
                raise TypeError("decode mode device runs encoded images only")
            try:
                out.append(_host_checked(payload.image, self._max_image_pixels))
            except ServiceError as exc:  # refused before decoding; the rest of the batch goes on
                out.append(exc)
        encoded = [i for i, item in enumerate(out) if isinstance(item, _Checked) and item.fmt != "raw"]
        decoded = pipeline.decode([out[i].data for i in encoded]) if encoded else []
        for i, image in zip(encoded, decoded, strict=True):
            bad = InvalidImage(f"could not decode the {out[i].fmt.upper()} image (corrupt or truncated)")
            out[i] = bad if isinstance(image, ValueError) else image  # the wording of the host decoder's error
        for i, item in enumerate(out):
            if isinstance(item, _Checked):  # raw pixels: checked on the host, uploaded as they are
                out[i] = pipeline.upload(item.data, item.channel_order)
        return out


def _merged(prepared: list[Prepared | ServiceError], output: BatchOutput) -> BatchOutput:
    """``output`` (the decoded images' results) with one result per payload: a failed one's error in its place."""
    inferred = iter(output.results)
    return replace(output, results=[p if isinstance(p, ServiceError) else next(inferred) for p in prepared])


def item_output(detections: Detections, prepared: Prepared | ServiceError, queue_ns: int, output: BatchOutput):
    """One image's ``ItemOutput`` (only decoded images have detections)."""
    assert isinstance(prepared, Prepared)
    return ItemOutput(detections, prepared.image_hw, prepared.decode_ns, queue_ns, output.infer_ns, output.output_ns)
