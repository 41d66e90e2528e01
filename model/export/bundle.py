"""``export_bundle``: checkpoint -> reparameterised end-to-end graphs -> bundle directory, parity-checked.

The bundle is written into a temporary sibling directory (hidden: a name starting with ``.``), flushed to disk
(every file, then the directory) and renamed into place, so a failed export never leaves a half-written bundle
behind and a reader (a server polling its model repository) sees nothing or the complete bundle. The rename is
atomic because the temporary directory is on the same filesystem. ``repository_target`` picks the next version
directory of a model in a repository (``REPO/<model>/<version>``).
"""

from __future__ import annotations

import copy
import dataclasses
import datetime
import importlib.metadata
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from model.artifacts import (
    FORMATS,
    PREPROCESS_FILE,
    BundleMeta,
    ModelArtifact,
    Thresholds,
    next_repository_version,
    sha256_file,
    write_bundle_meta,
)
from model.checkpoint import load_model
from model.config import InputConvention
from model.export.e2e import DecodedNet, EndToEnd, NmsSettings
from model.export.int8_openvino import DEFAULT_CALIBRATION_COUNT, calibration_files, quantize_openvino
from model.export.onnx_export import OPSET, export_onnx
from model.export.parity import ParityReport, compare_detections, parity_images
from model.export.torchscript_export import export_torchscript
from model.fuse import reparameterize
from model.transforms import Preprocess

# precision -> formats that support it (the artifact records it; runtimes apply it at load time)
SUPPORTED_PRECISIONS = {
    "torchscript": ("fp32", "fp16"),
    "onnx": ("fp32",),
    "openvino": ("fp32", "bf16", "fp16", "int8"),  # int8: NNCF-quantised IR (model.export.int8_openvino)
    "tensorrt": ("fp32", "fp16"),
}


def distribution_version() -> str:
    """The installed ``yoloxpai`` version; read from package metadata so ``model`` never imports ``yoloxpai``."""
    try:
        return importlib.metadata.version("yoloxpai")
    except importlib.metadata.PackageNotFoundError:  # a source tree that was never installed
        return "0+unknown"


@dataclass(frozen=True)
class ExportOptions:
    """What to export and with which baked-in settings."""

    formats: tuple[str, ...] = ("onnx",)
    precision: str = "fp32"
    max_batch: int = 32
    input_hw: tuple[int, int] | None = None  # default: the checkpoint's / preset's
    nms: NmsSettings = NmsSettings()
    default_score_threshold: float = 0.25
    name: str | None = None
    version: str = "1"
    parity_check: bool = True
    build_engine: bool = False  # TensorRT: build the engine now (needs a GPU and TensorRT here)
    eval_data: str | None = None  # COCO-format folder: measure every artifact's AP (model.export.accuracy_gate)
    publish_failed_accuracy: bool = False  # publish even when an artifact misses its accuracy gate
    openvino_reads_onnx: bool = False  # the OpenVINO artifact is the ONNX file (compiled at load), no IR files
    calibration_data: str | None = None  # int8: the images the quantiser calibrates activation ranges on
    calibration_count: int = DEFAULT_CALIBRATION_COUNT  # int8: how many of them (the first, sorted by path)

    def __post_init__(self) -> None:
        if not self.formats:
            raise ValueError("at least one format is required")
        for fmt in self.formats:
            if fmt not in FORMATS:
                raise ValueError(f"unknown format {fmt!r}; choose from {', '.join(FORMATS)}")
        if not any(self.precision in SUPPORTED_PRECISIONS[fmt] for fmt in self.formats):
            supported = "; ".join(f"{fmt}: {', '.join(SUPPORTED_PRECISIONS[fmt])}" for fmt in self.formats)
            raise ValueError(f"{', '.join(self.formats)} does not support {self.precision} (supported: {supported})")
        if "int8" in map(self.precision_of, self.formats):
            if self.calibration_data is None:
                raise ValueError("--precision int8 needs --calibration-data DIR (real images, e.g. coco-tiny)")
            if self.openvino_reads_onnx:
                raise ValueError("an int8 OpenVINO artifact is a quantised IR: drop --openvino-reads-onnx")
            if self.calibration_count < 1:
                raise ValueError(f"calibration_count must be >= 1, got {self.calibration_count}")
        if not 1 <= self.max_batch <= 256:
            raise ValueError(f"max_batch must be in [1, 256], got {self.max_batch}")
        if not self.nms.score_threshold <= self.default_score_threshold <= 1.0:
            raise ValueError("default_score_threshold must be between the baked score_threshold and 1")

    def precision_of(self, fmt: str) -> str:
        """The precision ``fmt`` is exported at: ``precision`` where the format supports it, else fp32 (so
        ``--format onnx,openvino --precision bf16`` gives an fp32 ONNX beside the bf16 OpenVINO model)."""
        return self.precision if self.precision in SUPPORTED_PRECISIONS[fmt] else "fp32"


def _write_models(
    net: DecodedNet, options: ExportOptions, input_hw: tuple[int, int], convention: InputConvention, out: Path
) -> dict:
    models: dict[str, ModelArtifact] = {}
    if "torchscript" in options.formats:
        export_torchscript(net, options.nms, out / "model.pt", input_hw)
        models["torchscript"] = ModelArtifact("torchscript", "model.pt", options.precision_of("torchscript"))
    if "onnx" in options.formats or "openvino" in options.formats:
        onnx_path = export_onnx(EndToEnd(net, options.nms, "onnx"), out / "model.onnx", input_hw)
        if "openvino" in options.formats and options.openvino_reads_onnx:
            # OpenVINO compiles the ONNX graph itself at load: one file for both CPU runtimes (half the size).
            models["openvino"] = ModelArtifact("openvino", "model.onnx", options.precision_of("openvino"))
        elif "openvino" in options.formats and options.precision_of("openvino") == "int8":
            files = calibration_files(options.calibration_data, options.calibration_count)
            extra = quantize_openvino(onnx_path, out / "model.xml", files, input_hw, convention)
            models["openvino"] = ModelArtifact("openvino", "model.xml", "int8", extra)
        elif "openvino" in options.formats:
            import openvino as ov

            ov.save_model(ov.convert_model(str(onnx_path)), str(out / "model.xml"), compress_to_fp16=False)
            models["openvino"] = ModelArtifact(
                "openvino", "model.xml", options.precision_of("openvino"), {"weights_file": "model.bin"}
            )
        if "onnx" in options.formats:
            models["onnx"] = ModelArtifact("onnx", "model.onnx", "fp32", {"opset": OPSET})
        elif not any(a.file == onnx_path.name for a in models.values()):
            onnx_path.unlink()
    if "tensorrt" in options.formats:
        trt_onnx = export_onnx(EndToEnd(net, options.nms, "trt"), out / "model.trt.onnx", input_hw)
        extra: dict = {"opset": OPSET, "nms": "EfficientNMS_TRT", "engine_file": None, "engine_spec": None}
        if options.build_engine:
            from model.runtime.tensorrt_engine import build_engine, current_spec

            spec = current_spec(trt_onnx, options.precision_of("tensorrt"), input_hw, options.max_batch, "cuda:0")
            (out / "model.engine").write_bytes(build_engine(trt_onnx, spec))
            extra.update(engine_file="model.engine", engine_spec=dataclasses.asdict(spec))
        models["tensorrt"] = ModelArtifact("tensorrt", "model.trt.onnx", options.precision_of("tensorrt"), extra)
    return models


def export_bundle(
    weights: str | Path,
    out_dir: str | Path,
    options: ExportOptions,
    arch: str | None = None,
    overwrite: bool = False,
    calibration_images: str | Path | None = None,
) -> tuple[BundleMeta, dict[str, ParityReport]]:
    """Export ``weights`` into a bundle at ``out_dir``; returns its meta and per-backend parity reports.

    ``calibration_images``: BatchNorm statistics when ``weights`` is released ONNX (``model.onnx_import``).
    """
    weights, out_dir = Path(weights), Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise FileExistsError(f"{out_dir} exists (pass overwrite=True / --force to replace it)")
    model, info = load_model(weights, arch=arch, calibration_images=calibration_images)
    cfg = info.config
    input_hw = tuple(options.input_hw or cfg.input_hw)
    if input_hw[0] % 32 or input_hw[1] % 32:
        raise ValueError(f"input size must be multiples of 32, got {input_hw}")
    eager = copy.deepcopy(model).eval()
    net = DecodedNet(reparameterize(model), input_hw).eval()

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        torch.jit.script(Preprocess(input_hw, cfg.convention)).save(str(tmp / PREPROCESS_FILE))
        models = _write_models(net, options, input_hw, cfg.convention, tmp)
        files = {p.name: sha256_file(p) for p in sorted(tmp.iterdir()) if p.is_file()}
        nms = options.nms
        meta = BundleMeta(
            name=options.name or cfg.name,
            version=options.version,
            arch=cfg.name,
            config=dataclasses.replace(cfg, input_hw=input_hw).to_dict(),
            class_names=info.class_names,
            input_hw=input_hw,
            convention=cfg.convention,
            min_batch=1,
            max_batch=options.max_batch,
            thresholds=Thresholds(
                nms.score_threshold,
                options.default_score_threshold,
                nms.iou_threshold,
                nms.max_detections,
                nms.class_agnostic,
                nms.pre_nms_topk,
            ),
            models=models,
            files=files,
            source_checkpoint_sha256=sha256_file(weights),
            yoloxpai_version=distribution_version(),
            created_at=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        )
        write_bundle_meta(tmp, meta)
        reports = check_parity(tmp, eager, meta) if options.parity_check else {}
        failed = {k: r for k, r in reports.items() if not r.ok()}
        if failed:
            raise RuntimeError(f"parity check failed: {failed}")
        if options.eval_data is not None:
            meta = _gate_accuracy(tmp, eager, meta, options)
        tmp.chmod(0o755)  # mkdtemp makes it 0700: a server running as another uid must be able to read it
        fsync_tree(tmp)  # the data is on disk before the name that publishes it
        if out_dir.exists():
            if not overwrite:  # written meanwhile (another export picked the same version)
                raise FileExistsError(f"{out_dir} appeared during the export; nothing was replaced")
            shutil.rmtree(out_dir)
        tmp.rename(out_dir)
        fsync_tree(out_dir.parent, files=False)  # the rename itself
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return meta, reports


def _gate_accuracy(bundle_dir: Path, eager: torch.nn.Module, meta: BundleMeta, options: ExportOptions) -> BundleMeta:
    """Measure and record every artifact's AP; refuse (nothing published) when one misses its gate."""
    from model.export.accuracy_gate import AccuracyGateError, format_records, measure_accuracy, with_records

    records = measure_accuracy(bundle_dir, eager, meta, options.eval_data)
    meta = with_records(meta, records)
    write_bundle_meta(bundle_dir, meta)
    if not all(r.passed for r in records.values()) and not options.publish_failed_accuracy:
        raise AccuracyGateError(
            f"accuracy gate failed on {options.eval_data}:\n{format_records(records)}\n"
            "nothing was written (--force publishes it anyway, the failure recorded in meta.json)"
        )
    return meta


def fsync_tree(directory: Path, files: bool = True) -> None:
    """Flush ``directory``'s files (with ``files``) and the directory entry itself to disk."""
    paths = [p for p in directory.iterdir() if p.is_file()] if files else []
    for path in [*paths, directory]:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def repository_target(repository: str | Path, name: str, version: int | None = None) -> tuple[Path, int]:
    """``(REPO/<name>/<version>, version)`` for a new export: ``version``, else one above the model's newest
    (a flat ``REPO/<name>`` bundle counts as version 1). Refuses a version that exists: versions are immutable."""
    model_dir = Path(repository) / name
    chosen = next_repository_version(model_dir) if version is None else version
    if chosen < 1:
        raise ValueError(f"model versions are positive integers, got {chosen}")
    target = model_dir / str(chosen)
    if target.exists():
        raise FileExistsError(f"{target} exists: a published version is never replaced; export a new one")
    return target, chosen


def eager_predict(model: torch.nn.Module, meta: BundleMeta, image) -> tuple:
    """The eager model on one BGR image with the bundle's letterbox, baked thresholds and NMS (torch postprocess):
    ``(boxes_xyxy in original pixels, scores, class ids)`` as NumPy arrays, above the baked score threshold."""
    import numpy as np

    from model.letterbox import boxes_to_original, preprocess_image
    from model.postprocess import postprocess

    t = meta.thresholds
    x, r = preprocess_image(image, meta.input_hw, meta.convention, "bgr")
    with torch.no_grad():
        num, boxes, scores, classes = postprocess(
            model(torch.from_numpy(x)[None]), t.score_threshold, t.iou_threshold, t.max_detections,
            t.class_agnostic, t.pre_nms_topk,
        )  # fmt: skip
    n = int(num[0])
    boxes_xyxy = boxes_to_original(boxes[0, :n].numpy(), r, image.shape[:2])
    return boxes_xyxy, scores[0, :n].numpy(), classes[0, :n].numpy().astype(np.int32)


def eager_detections(model: torch.nn.Module, meta: BundleMeta, images: list) -> list:
    """Reference detections: the un-fused eager model + torch postprocess, same pre/post as the Predictor, at the
    requests' default threshold."""
    from model.predictor import Detections

    out = []
    for image in images:
        boxes_xyxy, scores, classes = eager_predict(model, meta, image)
        keep = scores >= meta.thresholds.default_score_threshold
        cls = classes[keep]
        names = tuple(meta.class_names[c] for c in cls)
        out.append(Detections(boxes_xyxy[keep], scores[keep], cls, names, image.shape[:2]))
    return out


def check_parity(bundle_dir: Path, eager: torch.nn.Module, meta: BundleMeta) -> dict[str, ParityReport]:
    """Run every CPU-runnable backend of the bundle on the parity images and compare with eager PyTorch."""
    from model.predictor import Predictor, runtime_available

    images = parity_images()
    reference = eager_detections(eager, meta, images)
    reports = {}
    backends = {"torchscript": "torchscript", "onnx": "onnxruntime", "openvino": "openvino"}
    for fmt, backend in backends.items():
        if fmt not in meta.models or not runtime_available(backend):
            continue
        if fmt == "openvino" and meta.models[fmt].precision != "fp32":
            continue  # reduced precision is judged by mAP, not by per-box parity
        predictor = Predictor.from_bundle(bundle_dir, backend=backend, device="cpu", verify=False)
        reports[backend] = compare_detections(reference, predictor.predict(images))
    return reports
