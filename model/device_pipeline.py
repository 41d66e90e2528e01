"""Encoded images -> detections with the pixels on the model's device: batched nvJPEG decode (torchvision), the
bundle's TorchScript letterbox (``preprocess.pt``) and the TorchScript model, all on one CUDA stream; the host only
parses the requests and reads back ``[B, K]`` detections.

On a GPU the host's per-image decode + letterbox is what sets a server's pace (docs/benchmarks.md: 296 img/s with
the GPU mostly idle), so this path moves them next to the model. The same code runs on the CPU (``device="cpu"``),
which is how it is tested where no GPU is present. A JPEG nvJPEG refuses, or any other format, is decoded on the
host with OpenCV and uploaded; an undecodable image fails alone.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from model.image_decode import decode_full, is_jpeg, jpeg_orientation
from model.predictor import Detections, Predictor
from model.runtime import RawOutput

GpuDecode = Callable[[list[Any], str], list[Any]]  # (uint8 byte tensors, device) -> RGB [3, H, W] uint8 tensors


def nvjpeg_decoder() -> GpuDecode | None:
    """torchvision's batched ``decode_jpeg`` on the device (nvJPEG on CUDA), or None where torchvision does not
    import (PyPI's wheel does not beside the CPU torch these machines use)."""
    try:
        from torchvision.io import ImageReadMode, decode_jpeg
    except Exception:  # ImportError, or torchvision's C++ ops failing to load against this torch
        return None

    def decode(data: list[Any], device: str) -> list[Any]:
        # as stored: the CUDA decoder ignores EXIF orientation (``apply_exif_orientation`` is for the CPU one)
        return list(decode_jpeg(data, mode=ImageReadMode.RGB, device=device, apply_exif_orientation=False))

    return decode


def orient(image: Any, orientation: int) -> Any:
    """An ``[H, W, C]`` tensor as stored -> as displayed under EXIF ``orientation`` (1-8), as OpenCV's decode
    gives it: 2 mirrors, 3 turns 180 degrees, 4 flips, 5 transposes, 6 turns 90 clockwise, 7 transposes across the
    other diagonal, 8 turns 90 counter-clockwise. Views where torch allows (flips copy)."""
    if orientation in (5, 6, 7, 8):
        image = image.transpose(0, 1)
    dims = {2: (1,), 3: (0, 1), 4: (0,), 6: (1,), 7: (0, 1), 8: (0,)}.get(orientation)
    return image.flip(dims) if dims else image


class DevicePipeline:
    """``detect(encoded images)`` for a TorchScript predictor, decode and letterbox on its device.

    ``gpu_decode``: the JPEG decoder to use (default :func:`nvjpeg_decoder` on CUDA, none on CPU); ``max_pixels``:
    images larger than this are refused before decoding (as the server refuses them).
    """

    def __init__(self, predictor: Predictor, gpu_decode: GpuDecode | None = None, max_pixels: int = 50_000_000):
        import torch

        if predictor.backend != "torchscript":
            raise ValueError(f"the device pipeline runs TorchScript bundles, not {predictor.backend!r}")
        self._torch = torch
        self.predictor = predictor
        self.device = predictor.device
        self.runner = predictor.runner
        path = predictor.bundle_dir / "preprocess.pt"
        self.preprocess = torch.jit.load(str(path), map_location=self.device).eval()
        on_cuda = self.device.startswith("cuda")
        self.gpu_decode = gpu_decode if gpu_decode is not None else (nvjpeg_decoder() if on_cuda else None)
        self.max_pixels = max_pixels
        self.warm = False  # set by a server once it has run the pipeline (its first letterbox picks kernels)

    def _host_decode(self, data: bytes):
        decoded = decode_full(data)  # the host path's own full-resolution decode (EXIF orientation applied)
        if decoded is None:
            raise ValueError("cannot decode image bytes (not a supported image format, or truncated)")
        return self.upload(decoded.image, "bgr")

    def upload(self, image: np.ndarray, channel_order: str = "bgr"):
        """A host uint8 ``[H, W, 3]`` array in ``channel_order`` -> an RGB device tensor (RGB like nvJPEG's output,
        so one batch has one channel order)."""
        if channel_order not in ("bgr", "rgb"):
            raise ValueError(f"channel_order must be 'bgr' or 'rgb', got {channel_order!r}")
        rgb = np.ascontiguousarray(image[:, :, ::-1] if channel_order == "bgr" else image)
        if not rgb.flags.writeable:  # a view of a request's read-only bytes: torch wants memory of its own
            rgb = rgb.copy()
        return self._torch.from_numpy(rgb).to(self.device, non_blocking=True)

    def decode(self, images: Sequence[bytes]) -> list[Any]:
        """Encoded images -> RGB uint8 ``[H, W, 3]`` tensors on the device, EXIF orientation applied as on the host,
        or the ``ValueError`` of each image that cannot be decoded. JPEGs go through ``gpu_decode`` in one call; one
        it refuses is decoded alone and, failing that, on the host."""
        torch = self._torch
        out: list[Any] = [None] * len(images)
        jpegs = [i for i, data in enumerate(images) if self.gpu_decode is not None and is_jpeg(data)]
        if jpegs:
            tensors = [torch.frombuffer(bytearray(images[i]), dtype=torch.uint8) for i in jpegs]
            try:
                decoded = self.gpu_decode(tensors, self.device)
            except RuntimeError:  # one bad file fails nvJPEG's whole batch: retry one by one
                decoded = []
                for tensor in tensors:
                    try:
                        decoded.extend(self.gpu_decode([tensor], self.device))
                    except RuntimeError:
                        decoded.append(None)
            for i, chw in zip(jpegs, decoded, strict=True):
                # a view unless the EXIF orientation turns it: Preprocess permutes it back
                out[i] = None if chw is None else orient(chw.permute(1, 2, 0), jpeg_orientation(images[i]))
        for i, data in enumerate(images):
            if out[i] is None:
                try:
                    out[i] = self._host_decode(data)
                except ValueError as exc:
                    out[i] = exc
        for i, image in enumerate(out):
            if not isinstance(image, ValueError) and image.shape[0] * image.shape[1] > self.max_pixels:
                out[i] = ValueError(f"image of {image.shape[1]}x{image.shape[0]} exceeds {self.max_pixels} pixels")
        return out

    def infer(self, images: list[Any]) -> tuple[RawOutput, list[float]]:
        """RGB ``[H, W, 3]`` device tensors -> the model's raw output and each image's letterbox scale ``r``."""
        torch = self._torch
        with torch.inference_mode():
            stream = getattr(self.runner, "stream", None)
            context = torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext()
            with context:
                batch, scales = self.preprocess(images, "rgb")
                raw = self.runner.run_tensor(batch)
            return raw, scales.cpu().tolist()

    def detect(
        self,
        images: Sequence[bytes],
        score_threshold: float | None = None,
        max_detections: int | None = None,
        class_ids: Sequence[int] | None = None,
    ) -> list[Detections | ValueError]:
        """Detections per encoded image (boxes in its original pixels), or the ``ValueError`` of each image that
        could not be decoded; the rest of the batch is unaffected."""
        self.predictor.resolve_options(score_threshold, max_detections)  # fail before any work
        decoded = self.decode(images)
        ok = [i for i, image in enumerate(decoded) if not isinstance(image, ValueError)]
        results: list[Detections | ValueError] = list(decoded)
        if not ok:
            return results
        step = self.predictor.meta.max_batch
        for start in range(0, len(ok), step):
            chunk = ok[start : start + step]
            raw, scales = self.infer([decoded[i] for i in chunk])
            for row, (i, r) in enumerate(zip(chunk, scales, strict=True)):
                hw = (int(decoded[i].shape[0]), int(decoded[i].shape[1]))
                results[i] = self.predictor.postprocess(raw, row, r, hw, score_threshold, max_detections, class_ids)
        return results
