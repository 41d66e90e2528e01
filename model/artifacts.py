"""The bundle: a directory with a ``preprocess`` artifact, one or more ``model`` artifacts and ``meta.json``.

Torch-free (stdlib + hashlib): the serving image reads bundles without torch. ``load_bundle_meta`` validates the
schema and every file's sha256 and raises ``BundleError`` naming the offending file. Every file name in the meta
must stay inside the bundle directory (no absolute paths, no ``..``, no symlink out): a bundle is data, possibly
from elsewhere, and must not make the server read or hash arbitrary files. Open bundle files through
``bundle_file``, which checks that again after resolving symlinks.

A model repository (what ``yoloxpai serve --model-repository`` reads and ``yoloxpai export --repository``
writes) holds one directory per model and, in it, one bundle per version: ``REPO/<model>/<version>/``, versions
numbered as Triton's (see ``repository_versions``).

Layout::

    meta.json          schema version, arch, classes, input size and convention, batch range, thresholds,
                       output contract, per-format model entries, sha256 of every file, provenance
    preprocess.pt      TorchScript letterbox + normalisation (model.transforms.Preprocess)
    model.pt           TorchScript end-to-end graph (decode + NMS), if exported
    model.onnx         ONNX end-to-end graph (NonMaxSuppression), if exported
    model.xml/.bin     OpenVINO IR of the ONNX graph, if exported
    model.trt.onnx     ONNX graph with EfficientNMS_TRT, the source of TensorRT engines
    model.engine       a prebuilt TensorRT engine (specific to GPU + TensorRT version), optional
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from model.config import InputConvention

SCHEMA_VERSION = 1
META_FILE = "meta.json"
PREPROCESS_FILE = "preprocess.pt"
FORMATS = ("torchscript", "onnx", "openvino", "tensorrt")
PRECISIONS = ("fp32", "fp16", "bf16", "int8")
OUTPUT_CONTRACT = {
    "num_dets": {"dtype": "int32", "shape": ["B"]},
    "boxes": {"dtype": "float32", "shape": ["B", "K", 4], "format": "xyxy", "frame": "letterboxed input pixels"},
    "scores": {"dtype": "float32", "shape": ["B", "K"], "meaning": "objectness x class confidence"},
    "classes": {"dtype": "int32", "shape": ["B", "K"]},
}


class BundleError(ValueError):
    """A missing, corrupt or incompatible bundle; the message names the file."""


@dataclass(frozen=True)
class Thresholds:
    """Baked into the graph: requests may raise ``score_threshold`` and lower ``max_detections``, never the
    opposite. ``default_score_threshold`` is what a request gets when it does not say."""

    score_threshold: float
    default_score_threshold: float
    iou_threshold: float
    max_detections: int
    class_agnostic: bool
    pre_nms_topk: int


@dataclass(frozen=True)
class ModelArtifact:
    """One exported model format inside the bundle."""

    format: str
    file: str  # main file, relative to the bundle
    precision: str
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. opset, weights file, TensorRT engine details


@dataclass(frozen=True)
class BundleMeta:
    """Everything ``meta.json`` records."""

    name: str
    version: str
    arch: str
    config: dict[str, Any]
    class_names: tuple[str, ...]
    input_hw: tuple[int, int]
    convention: InputConvention
    min_batch: int
    max_batch: int
    thresholds: Thresholds
    models: dict[str, ModelArtifact]
    files: dict[str, str]  # relative path -> sha256
    source_checkpoint_sha256: str
    yoloxpai_version: str
    created_at: str
    schema_version: int = SCHEMA_VERSION
    outputs: dict[str, Any] = field(default_factory=lambda: dict(OUTPUT_CONTRACT))

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.class_names)

    def to_json(self) -> dict[str, Any]:
        """The ``meta.json`` document."""
        data = dataclasses.asdict(self)
        data["convention"] = self.convention.to_dict()
        data["class_names"] = list(self.class_names)
        data["input_hw"] = list(self.input_hw)
        return {"schema_version": data.pop("schema_version"), **data}


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, streamed."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def meta_file_names(meta: BundleMeta) -> list[str]:
    """Every file name ``meta.json`` refers to: ``files`` keys, each model's ``file`` and its ``extra.*_file``."""
    names = list(meta.files)
    for artifact in meta.models.values():
        names.append(artifact.file)
        names += [value for key, value in artifact.extra.items() if key.endswith("_file") and value]
    return names


def _check_contained_name(name: object, where: str) -> None:
    """Refuse a file name that could leave the bundle directory (absolute, a drive, ``..``, backslashes)."""
    if not isinstance(name, str) or not name or "\x00" in name:
        raise BundleError(f"{where}: invalid bundle file name {name!r}")
    posix = PurePosixPath(name)
    windows = PureWindowsPath(name)
    if posix.is_absolute() or windows.drive or windows.root or ".." in posix.parts or "\\" in name:
        raise BundleError(f"{where}: bundle file {name!r} is outside the bundle directory (absolute or '..')")


def bundle_file(bundle_dir: str | Path, name: str) -> Path:
    """The path of the bundle file ``name`` (from ``meta.json``); ``BundleError`` if it resolves outside the bundle
    directory, through ``..``, an absolute path or a symlink."""
    bundle_dir = Path(bundle_dir)
    where = str(bundle_dir / META_FILE)
    _check_contained_name(name, where)
    path = bundle_dir / name
    if not path.resolve().is_relative_to(bundle_dir.resolve()):
        raise BundleError(f"{where}: bundle file {name!r} resolves outside the bundle directory ({path.resolve()})")
    return path


def _require(data: dict, key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if key not in data:
        raise BundleError(f"{where}: missing field {key!r}")
    value = data[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise BundleError(f"{where}: field {key!r} has type {type(value).__name__}")
    return value


def parse_meta(data: dict[str, Any], where: str = META_FILE) -> BundleMeta:
    """Validate a ``meta.json`` document and build ``BundleMeta``."""
    if not isinstance(data, dict):
        raise BundleError(f"{where}: expected a JSON object")
    schema = _require(data, "schema_version", int, where)
    if schema != SCHEMA_VERSION:
        raise BundleError(
            f"{where}: bundle schema_version {schema} is not supported by this yoloxpai (expects {SCHEMA_VERSION}); "
            "re-export the bundle with a matching version"
        )
    try:
        thresholds = Thresholds(**_require(data, "thresholds", dict, where))
        convention = InputConvention.from_dict(_require(data, "convention", dict, where))
        models = {}
        for fmt, entry in _require(data, "models", dict, where).items():
            if fmt not in FORMATS:
                raise BundleError(f"{where}: unknown model format {fmt!r}")
            artifact = ModelArtifact(**entry)
            if artifact.precision not in PRECISIONS:
                raise BundleError(f"{where}: unknown precision {artifact.precision!r} for {fmt}")
            models[fmt] = artifact
        input_hw = tuple(int(v) for v in _require(data, "input_hw", list, where))
        class_names = tuple(str(c) for c in _require(data, "class_names", list, where))
        meta = BundleMeta(
            name=_require(data, "name", str, where),
            version=str(_require(data, "version", str, where)),
            arch=_require(data, "arch", str, where),
            config=_require(data, "config", dict, where),
            class_names=class_names,
            input_hw=input_hw,  # type: ignore[arg-type]
            convention=convention,
            min_batch=_require(data, "min_batch", int, where),
            max_batch=_require(data, "max_batch", int, where),
            thresholds=thresholds,
            models=models,
            files=_require(data, "files", dict, where),
            source_checkpoint_sha256=_require(data, "source_checkpoint_sha256", str, where),
            yoloxpai_version=_require(data, "yoloxpai_version", str, where),
            created_at=_require(data, "created_at", str, where),
            outputs=data.get("outputs", dict(OUTPUT_CONTRACT)),
        )
    except (TypeError, KeyError, ValueError) as exc:
        if isinstance(exc, BundleError):
            raise
        raise BundleError(f"{where}: invalid meta: {exc}") from exc
    if len(meta.input_hw) != 2 or any(v <= 0 or v % 32 for v in meta.input_hw):
        raise BundleError(f"{where}: input_hw must be two positive multiples of 32, got {list(meta.input_hw)}")
    if not 1 <= meta.min_batch <= meta.max_batch:
        raise BundleError(f"{where}: invalid batch range [{meta.min_batch}, {meta.max_batch}]")
    if not meta.class_names:
        raise BundleError(f"{where}: class_names is empty")
    if not meta.models:
        raise BundleError(f"{where}: the bundle holds no model artifact")
    for name in meta_file_names(meta):
        _check_contained_name(name, where)
    return meta


def load_bundle_meta(bundle_dir: str | Path, verify: bool = True) -> BundleMeta:
    """Read and validate ``bundle_dir/meta.json``; with ``verify``, check every file's sha256."""
    bundle_dir = Path(bundle_dir)
    meta_path = bundle_dir / META_FILE
    if not bundle_dir.is_dir():
        raise BundleError(f"bundle directory not found: {bundle_dir}")
    if not meta_path.is_file():
        raise BundleError(f"not a bundle: {meta_path} is missing")
    try:
        data = json.loads(meta_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{meta_path}: unreadable JSON: {exc}") from exc
    meta = parse_meta(data, str(meta_path))
    if verify:
        verify_files(bundle_dir, meta)
    return meta


def verify_files(bundle_dir: Path, meta: BundleMeta) -> None:
    """Every listed file lies inside the bundle, exists and has its recorded sha256; every model file is listed."""
    listed = set(meta.files)
    for name in meta_file_names(meta):
        if name not in listed:
            raise BundleError(f"{bundle_dir / META_FILE}: model file {name} has no recorded sha256")
    for name, expected in meta.files.items():
        path = bundle_file(bundle_dir, name)
        if not path.is_file():
            raise BundleError(f"bundle file missing: {path}")
        actual = sha256_file(path)
        if actual != expected:
            raise BundleError(f"bundle file corrupt (sha256 mismatch): {path}")


def write_bundle_meta(bundle_dir: Path, meta: BundleMeta) -> Path:
    """Write ``meta.json`` (pretty, stable key order)."""
    path = Path(bundle_dir) / META_FILE
    path.write_text(json.dumps(meta.to_json(), indent=2) + "\n")
    return path


def default_bundle_dir() -> Path:
    """The embedded default model shipped inside the package."""
    return Path(__file__).resolve().parent / "assets" / "default_bundle"


def default_weights_path() -> Path:
    """The embedded default model's trained weights (a yolox-nano on the shapes data; config and classes inside)."""
    return Path(__file__).resolve().parent / "assets" / "default_weights.safetensors"


_VERSION_NAME = re.compile(r"[1-9][0-9]{0,17}")  # Triton: numeric, no leading zero (0 and 01 are not versions)


def repository_versions(model_dir: str | Path) -> dict[int, Path]:
    """The versions of one model of a model repository, oldest first: each sub-directory named by a positive integer
    without leading zeros; a bundle directly in ``model_dir`` (the flat layout) is version 1 unless a ``1/``
    sub-directory exists. Other entries (hidden exports in progress, ``config.json``) are not versions."""
    model_dir = Path(model_dir)
    versions = {
        int(path.name): path for path in model_dir.iterdir() if _VERSION_NAME.fullmatch(path.name) and path.is_dir()
    }
    if 1 not in versions and (model_dir / META_FILE).is_file():
        versions[1] = model_dir
    return dict(sorted(versions.items()))


def next_repository_version(model_dir: str | Path) -> int:
    """The version number a new export into ``model_dir`` takes: one above the newest (1 for a new model)."""
    model_dir = Path(model_dir)
    return max(repository_versions(model_dir), default=0) + 1 if model_dir.is_dir() else 1
