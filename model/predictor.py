"""``Predictor``: run a bundle on images of any size — preprocess, batched model, map boxes back.

Torch-free for ONNX Runtime / OpenVINO bundles. The backend is chosen once, at load time. Preprocessing is the
NumPy/OpenCV twin of the bundle's scripted ``preprocess`` artifact (same geometry, within one intensity level),
driven by the convention in ``meta.json``, so callers never restate it.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from model.artifacts import BundleError, BundleMeta, ModelArtifact, bundle_file, load_bundle_meta
from model.image_decode import Decoded, decode_full, decode_jpeg_for_input, is_jpeg, jpeg_size
from model.letterbox import boxes_to_original, preprocess_image
from model.runtime import RawOutput, Runner

# Preference order when backend="auto", fastest first (measured side by side with bench/backends.py, fp32, 2 cores:
# ONNX Runtime 2.2-4.4x eager PyTorch for nano, 1.5-2.5x for yolox-s; OpenVINO 1.5-2.9x; TorchScript ~1.1x; see
# docs/benchmarks.md). OpenVINO is still chosen for bundles only it can run (``--precision bf16``).
CPU_PREFERENCE = ("onnxruntime", "openvino", "torchscript")
# On a GPU: a TensorRT engine built for that GPU, then ONNX Runtime's CUDA provider, then TorchScript on CUDA, which
# needs torch (the serve-gpu image has none).
CUDA_PREFERENCE = ("tensorrt", "onnxruntime", "torchscript")
# Which bundle formats each backend can run, best first (OpenVINO also reads the ONNX graph directly).
BACKEND_FORMATS = {
    "onnxruntime": ("onnx",),
    "openvino": ("openvino", "onnx"),
    "torchscript": ("torchscript",),
    "tensorrt": ("tensorrt",),
}
_RUNTIME_MODULE = {"onnxruntime": "onnxruntime", "openvino": "openvino", "torchscript": "torch", "tensorrt": "tensorrt"}

ImageInput = np.ndarray | str | Path | bytes


@dataclass(frozen=True)
class Detections:
    """Detections of one image, in original-image pixels."""

    boxes_xyxy: np.ndarray  # float32 [K, 4], clipped to the image
    scores: np.ndarray  # float32 [K], descending
    class_ids: np.ndarray  # int32 [K]
    class_names: tuple[str, ...]
    image_hw: tuple[int, int]

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    def to_dict(self) -> dict:
        """JSON-friendly form (the REST response's per-image entry)."""
        return {
            "width": self.image_hw[1],
            "height": self.image_hw[0],
            "detections": [
                {
                    "box": [round(float(v), 2) for v in box],
                    "score": round(float(s), 5),
                    "class_id": int(c),
                    "class_name": n,
                }
                for box, s, c, n in zip(self.boxes_xyxy, self.scores, self.class_ids, self.class_names, strict=True)
            ],
        }


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a dotted name whose parent package is missing; a module without a spec
        return False


def _cuda_python_importable() -> bool:
    return _importable("cuda.bindings.runtime") or _importable("cuda.cudart")  # new / old cuda-python layout


def _onnxruntime_providers() -> list[str]:
    import onnxruntime as ort

    return ort.get_available_providers()


def _torch_cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def runtime_missing(backend: str, device: str) -> str | None:
    """Why ``backend`` cannot run on ``device`` here, None when it can. On the CPU only its package is looked for;
    on CUDA also its GPU support (the CPU onnxruntime wheel imports fine but has no CUDA provider)."""
    module = _RUNTIME_MODULE[backend]
    if not _importable(module):
        return f"{module} not installed"
    if not device.startswith("cuda"):
        return "tensorrt needs a CUDA device" if backend == "tensorrt" else None
    if backend == "tensorrt" and not _cuda_python_importable():
        return "cuda-python not installed (TensorRT needs it)"
    if backend == "onnxruntime" and "CUDAExecutionProvider" not in _onnxruntime_providers():
        return "onnxruntime has no CUDAExecutionProvider (install onnxruntime-gpu)"
    if backend == "torchscript" and not _torch_cuda_available():
        return "torch has no CUDA (torch.cuda.is_available() is False)"
    if backend == "openvino":
        return "openvino does not run on CUDA devices"
    return None


def runtime_available(backend: str) -> bool:
    """Whether the Python package behind ``backend`` is importable (``runtime_missing`` says whether it can run on
    a given device)."""
    return _importable(_RUNTIME_MODULE[backend])


def select_backend(meta: BundleMeta, backend: str, device: str) -> tuple[str, ModelArtifact]:
    """Resolve ``auto`` and find the artifact the backend will run; a clear ``BundleError`` otherwise."""
    if backend == "auto":
        on_gpu = device.startswith("cuda")
        reasons = []
        for candidate in CUDA_PREFERENCE if on_gpu else CPU_PREFERENCE:
            # The bundle first: a runtime's GPU probe (importing torch) is paid only for a usable artifact.
            if not any(f in meta.models for f in BACKEND_FORMATS[candidate]):
                reasons.append(f"no {candidate} artifact")
                continue
            missing = runtime_missing(candidate, device)
            if missing is None:
                return select_backend(meta, candidate, device)
            reasons.append(missing)
        raise BundleError(
            f"no {'GPU' if on_gpu else 'installed'} runtime can run this bundle on {device}: {', '.join(reasons)} "
            f"(bundle formats: {sorted(meta.models)})"
        )
    if backend not in BACKEND_FORMATS:
        raise ValueError(f"unknown backend {backend!r}; choose from auto, {', '.join(BACKEND_FORMATS)}")
    for fmt in BACKEND_FORMATS[backend]:
        if fmt in meta.models:
            return backend, meta.models[fmt]
    raise BundleError(f"bundle has no artifact for backend {backend!r} (it has: {', '.join(sorted(meta.models))})")


def runtime_precision(backend: str, artifact: ModelArtifact, device: str) -> str:
    """The precision ``backend`` runs ``artifact`` at: OpenVINO applies the artifact's precision only to its own
    format (the ONNX artifact runs fp32), TorchScript only on CUDA."""
    if backend == "openvino" and artifact.format != "openvino":
        return "fp32"
    if backend == "torchscript" and not device.startswith("cuda"):
        return "fp32"
    return artifact.precision


def backend_candidates(meta: BundleMeta, device: str, precision: str = "auto") -> list[tuple[str, str]]:
    """``(backend, precision)`` pairs ``--backend auto`` may serve on ``device``, in preference order.

    Each installed runtime of the device's preference list that has an artifact of its own format (OpenVINO
    reading the ONNX file is what ``select_backend`` falls back to, not a candidate), at fp32 or at a
    reduced precision whose export accuracy gate passed (``extra["accuracy"]["passed"]``; an unmeasured reduced
    precision is never chosen automatically); only ``precision`` unless it is ``auto``.
    """
    pairs = []
    for backend in CUDA_PREFERENCE if device.startswith("cuda") else CPU_PREFERENCE:
        artifact = meta.models.get(BACKEND_FORMATS[backend][0])  # its own format: an artifact exported for it
        if artifact is None or runtime_missing(backend, device) is not None:
            continue
        runs_at = runtime_precision(backend, artifact, device)
        gated = runs_at == "fp32" or artifact.extra.get("accuracy", {}).get("passed") is True
        if gated and precision in ("auto", runs_at):
            pairs.append((backend, runs_at))
    return pairs


def create_runner(
    bundle_dir: Path,
    meta: BundleMeta,
    backend: str,
    artifact: ModelArtifact,
    device: str,
    threads: int | None,
    spin: bool,
) -> Runner:
    """Instantiate the runner for a resolved backend (its files checked to lie inside the bundle)."""
    path = bundle_file(bundle_dir, artifact.file)
    if backend == "onnxruntime":
        from model.runtime.onnxruntime_runner import OnnxRuntimeRunner

        return OnnxRuntimeRunner(
            path, device, threads, spin=spin, precision=runtime_precision(backend, artifact, device)
        )
    if backend == "openvino":
        from model.runtime.openvino_runner import OpenVinoRunner

        return OpenVinoRunner(path, device, runtime_precision(backend, artifact, device), threads)
    if backend == "torchscript":
        from model.runtime.torchscript_runner import TorchScriptRunner

        return TorchScriptRunner(path, device, runtime_precision(backend, artifact, device), threads)
    from model.runtime.tensorrt_runner import TensorRTRunner

    engine = artifact.extra.get("engine_file")
    return TensorRTRunner(
        path,
        meta.input_hw,
        meta.max_batch,
        device,
        artifact.precision,
        prebuilt=bundle_file(bundle_dir, engine) if engine else None,
        prebuilt_spec=artifact.extra.get("engine_spec"),
    )


def _decode_bytes(data: bytes, input_hw: tuple[int, int] | None) -> Decoded | None:
    if input_hw is not None and is_jpeg(data):
        try:
            width, height = jpeg_size(data)
        except ValueError:
            return None
        if width > 0 and height > 0:
            return decode_jpeg_for_input(data, (height, width), input_hw)
    return decode_full(data)


def load_image(
    image: ImageInput, channel_order: str = "bgr", input_hw: tuple[int, int] | None = None
) -> tuple[Decoded, str]:
    """File path / encoded bytes / uint8 array -> (``Decoded`` uint8 [H, W, 3], its channel order). With
    ``input_hw``, a JPEG the letterbox shrinks 2x or more decodes at 1/2, 1/4 or 1/8 (``model.image_decode``)."""
    if isinstance(image, str | Path):
        try:
            data = Path(image).read_bytes()
        except OSError as exc:
            raise ValueError(f"cannot read image file {image}: {exc.strerror}") from None
        decoded = _decode_bytes(data, input_hw)
        if decoded is None:
            raise ValueError(f"cannot read image file {image}")
        return decoded, "bgr"
    if isinstance(image, bytes | bytearray | memoryview):
        decoded = _decode_bytes(bytes(image), input_hw)
        if decoded is None:
            raise ValueError("cannot decode image bytes (not a supported image format, or truncated)")
        return decoded, "bgr"
    if not isinstance(image, np.ndarray):
        raise TypeError(f"unsupported image type {type(image).__name__}")
    if image.dtype != np.uint8:
        raise ValueError(f"image arrays must be uint8, got {image.dtype}")
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
        channel_order = "bgr"
    elif image.ndim != 3 or image.shape[2] not in (3, 4) or 0 in image.shape:
        raise ValueError(f"image arrays must be [H, W, 3] (or [H, W, 4] / [H, W]), got {list(image.shape)}")
    elif image.shape[2] == 4:
        image = image[..., :3]
    return Decoded.full(image), channel_order


class Predictor:
    """A loaded bundle on one device; ``predict`` for convenience, ``preprocess``/``infer``/``postprocess`` for
    servers that batch across requests. One instance per thread (use :meth:`clone` for a pool)."""

    def __init__(self, bundle_dir: Path, meta: BundleMeta, runner: Runner, threads: int | None, spin: bool) -> None:
        self.bundle_dir = bundle_dir
        self.meta = meta
        self.runner = runner
        self._threads = threads
        self._spin = spin
        self._device_pipeline = None

    @classmethod
    def from_bundle(
        cls,
        path: str | Path,
        backend: str = "auto",
        device: str = "cpu",
        threads: int | None = None,
        spin: bool = False,
        verify: bool = True,
    ) -> Predictor:
        """Load and verify a bundle (schema, sha256 of every file) and start its backend."""
        bundle_dir = Path(path)
        meta = load_bundle_meta(bundle_dir, verify=verify)
        resolved, artifact = select_backend(meta, backend, device)
        runner = create_runner(bundle_dir, meta, resolved, artifact, device, threads, spin)
        return cls(bundle_dir, meta, runner, threads, spin)

    def clone(self) -> Predictor:
        """Another predictor on the same bundle and backend with its own session (for another worker)."""
        return Predictor.from_bundle(
            self.bundle_dir, self.backend, self.device, self._threads, self._spin, verify=False
        )

    @property
    def backend(self) -> str:
        """The resolved backend name."""
        return self.runner.backend

    @property
    def device(self) -> str:
        """The device the model runs on."""
        return self.runner.device

    @property
    def precision(self) -> str:
        """The precision the backend actually runs at."""
        return self.runner.precision

    def resolve_options(self, score_threshold: float | None, max_detections: int | None) -> tuple[float, int]:
        """Request options -> effective values; ``ValueError`` outside what the bundle's graph can deliver."""
        t = self.meta.thresholds
        score = t.default_score_threshold if score_threshold is None else float(score_threshold)
        if not t.score_threshold <= score <= 1.0:
            raise ValueError(f"score_threshold must be in [{t.score_threshold}, 1] for this model, got {score}")
        k = t.max_detections if max_detections is None else int(max_detections)
        if not 1 <= k <= t.max_detections:
            raise ValueError(f"max_detections must be in [1, {t.max_detections}] for this model, got {k}")
        return score, k

    def preprocess(self, image: np.ndarray, channel_order: str = "bgr") -> tuple[np.ndarray, float]:
        """uint8 [H, W, 3] -> (float32 [3, H_in, W_in], r). Thread-safe."""
        return preprocess_image(image, self.meta.input_hw, self.meta.convention, channel_order)

    def infer(self, batch: np.ndarray) -> RawOutput:
        """float32 [B, 3, H_in, W_in] -> RawOutput; batches above ``max_batch`` run in chunks."""
        expected = (3, *self.meta.input_hw)
        if batch.ndim != 4 or tuple(batch.shape[1:]) != expected:
            raise ValueError(f"expected a batch [B, {', '.join(map(str, expected))}], got {list(batch.shape)}")
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        step = self.meta.max_batch
        if batch.shape[0] <= step:
            return self._checked(self.runner.run(batch), batch.shape[0])
        chunks = [batch[i : i + step] for i in range(0, len(batch), step)]
        parts = [self._checked(self.runner.run(chunk), len(chunk)) for chunk in chunks]
        return RawOutput(*(np.concatenate(arrays) for arrays in zip(*parts, strict=True)))

    @staticmethod
    def _checked(raw: RawOutput, batch_size: int) -> RawOutput:
        if raw.num_dets.shape[0] != batch_size or raw.boxes.shape[0] != batch_size:
            raise RuntimeError(f"backend returned {raw.num_dets.shape[0]} results for {batch_size} images")
        return raw

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
        """Row ``index`` of a batch result -> Detections in original pixels (clipped), filtered and capped."""
        score_min, k = self.resolve_options(score_threshold, max_detections)
        n = int(raw.num_dets[index])
        scores = raw.scores[index, :n]
        classes = raw.classes[index, :n]
        keep = scores >= score_min
        if class_ids is not None:
            keep &= np.isin(classes, np.fromiter(class_ids, dtype=np.int32))
        keep_idx = np.nonzero(keep)[0][:k]
        boxes = boxes_to_original(raw.boxes[index, keep_idx], r, image_hw)
        classes = classes[keep_idx].astype(np.int32)
        names = tuple(self.meta.class_names[c] for c in classes)
        return Detections(boxes, scores[keep_idx].astype(np.float32), classes, names, image_hw)

    def device_pipeline(self, max_pixels: int | None = None):
        """This instance's :class:`model.device_pipeline.DevicePipeline` (decode + letterbox on its device; TorchScript
        bundles only, ``ValueError`` otherwise), created on first use and kept: it loads ``preprocess.pt`` once and
        shares this instance's runner, so it is used on this instance's thread only. ``max_pixels``: the largest
        image it decodes (a server passes its own limit)."""
        if self._device_pipeline is None:
            from model.device_pipeline import DevicePipeline  # imports torch: only for who uses it

            self._device_pipeline = DevicePipeline(self)
        if max_pixels is not None:
            self._device_pipeline.max_pixels = max_pixels
        return self._device_pipeline

    def predict(
        self,
        images: Sequence[ImageInput] | ImageInput,
        channel_order: str = "bgr",
        score_threshold: float | None = None,
        max_detections: int | None = None,
        class_ids: Iterable[int] | None = None,
        reduced_decode: bool = True,
    ) -> list[Detections]:
        """Detect objects in images of any sizes (arrays in ``channel_order``, file paths, encoded bytes).

        ``reduced_decode``: a JPEG (path or bytes) the letterbox shrinks 2x or more decodes at 1/2, 1/4 or 1/8;
        boxes are in its original pixels either way.
        """
        if isinstance(images, np.ndarray | str | Path | bytes):
            images = [images]
        self.resolve_options(score_threshold, max_detections)  # fail before any work
        decode_hw = self.meta.input_hw if reduced_decode else None
        loaded = [load_image(image, channel_order, decode_hw) for image in images]
        return self.predict_decoded(loaded, score_threshold, max_detections, class_ids)

    def predict_decoded(
        self,
        loaded: Sequence[tuple[Decoded, str]],
        score_threshold: float | None = None,
        max_detections: int | None = None,
        class_ids: Iterable[int] | None = None,
    ) -> list[Detections]:
        """``predict`` on images already decoded by :func:`load_image` (with its channel order): boxes in each
        image's original pixels, whatever reduction it was decoded at."""
        self.resolve_options(score_threshold, max_detections)
        if not loaded:
            return []
        prepared = [self.preprocess(decoded.image, order) for decoded, order in loaded]
        raw = self.infer(np.stack([tensor for tensor, _ in prepared]))
        wanted = None if class_ids is None else list(class_ids)
        return [
            self.postprocess(
                raw, i, decoded.scale_to_original(r), decoded.original_hw, score_threshold, max_detections, wanted
            )  # fmt: skip
            for i, ((decoded, _), (_, r)) in enumerate(zip(loaded, prepared, strict=True))
        ]

    def warmup(self, batch_sizes: Iterable[int] | None = None) -> None:
        """Run every batch size once (runtimes specialise per shape; the first call at a size is slow)."""
        sizes = range(self.meta.min_batch, self.meta.max_batch + 1) if batch_sizes is None else batch_sizes
        for b in sizes:
            self.runner.run(np.zeros((b, 3, *self.meta.input_hw), np.float32))
