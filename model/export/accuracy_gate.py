"""The accuracy gate of an export (``yoloxpai export --eval-data DIR``): COCO AP of every artifact on real images.

Each CPU-runnable artifact is run through the ``Predictor`` (the serving path) on the validation split of ``DIR``
and scored against the same split through the eager fp32 model with the same letterbox, thresholds and NMS (the
reference). A reduced-precision artifact may lose at most ``MAX_DROP_AP_POINTS[precision]`` AP50:95 points
(bf16 / fp16 0.5, int8 1.0; AP points = AP x 100); fp32 artifacts are recorded, their parity with eager is checked
per box elsewhere (``model.export.parity``). The result is recorded in the artifact's ``extra["accuracy"]`` in
``meta.json`` (what ``--precision auto`` serving reads), and ``export_bundle`` refuses to publish a bundle with a
failed artifact unless forced (then the failure stays on record and ``auto`` never picks it).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch

from model.artifacts import BundleMeta
from model.data.coco import CocoDetection
from model.data.layout import resolve_split
from model.evaluate import score_detections
from model.evaluate_bundle import bundle_detections, coco_records

MAX_DROP_AP_POINTS = {"fp16": 0.5, "bf16": 0.5, "int8": 1.0}
CPU_BACKENDS = {"torchscript": "torchscript", "onnx": "onnxruntime", "openvino": "openvino"}


class AccuracyGateError(RuntimeError):
    """An artifact lost more accuracy than its precision allows."""


@dataclass(frozen=True)
class AccuracyRecord:
    """One artifact's measured accuracy against the eager fp32 reference (AP values in [0, 1])."""

    backend: str
    precision: str
    data: str  # the evaluation split's annotation file, from the data folder's name on
    images: int
    ap50_95: float
    ap50: float
    reference_ap50_95: float
    drop_ap_points: float  # (reference - ap50_95) x 100
    max_drop_ap_points: float | None  # None: fp32, not gated here
    passed: bool

    def to_dict(self) -> dict:
        """The ``extra["accuracy"]`` entry."""
        return dataclasses.asdict(self)


def eager_detections(model: torch.nn.Module, meta: BundleMeta, coco: CocoDetection) -> list[dict]:
    """COCO records of the eager model with the bundle's letterbox, baked thresholds and NMS."""
    from model.export.bundle import eager_predict

    model.eval()
    records: list[dict] = []
    for index in range(len(coco)):
        image_id = coco.image_info(index).image_id
        records += coco_records(image_id, coco.cat_ids, *eager_predict(model, meta, coco.load(index).image))
    return records


def measure_accuracy(
    bundle_dir: Path, eager: torch.nn.Module, meta: BundleMeta, data: str | Path
) -> dict[str, AccuracyRecord]:
    """Evaluate the reference and every CPU-runnable artifact of the bundle at ``bundle_dir`` on ``data``'s val
    split; returns one record per artifact format (artifacts this machine cannot run are left out)."""
    from model.predictor import Predictor, runtime_available

    ann_file, image_dir = resolve_split(data, "val")
    coco = CocoDetection(ann_file, image_dir)
    if coco.num_classes != meta.num_classes:
        raise ValueError(f"--eval-data has {coco.num_classes} classes, the model {meta.num_classes}")
    cat_ids, names = tuple(coco.cat_ids), tuple(coco.class_names)
    where = str(Path(ann_file).resolve().relative_to(Path(data).resolve().parent))  # no local paths recorded
    reference = score_detections(ann_file, eager_detections(eager, meta, coco), cat_ids, names)
    records = {}
    for fmt, artifact in meta.models.items():
        backend = CPU_BACKENDS.get(fmt)
        if backend is None or not runtime_available(backend) or (fmt == "torchscript" and artifact.precision != "fp32"):
            continue  # TensorRT and fp16 TorchScript need a GPU
        predictor = Predictor.from_bundle(bundle_dir, backend=backend, device="cpu", verify=False)
        result = score_detections(ann_file, bundle_detections(predictor, coco), cat_ids, names)
        drop = round((reference.ap50_95 - result.ap50_95) * 100, 3)
        limit = MAX_DROP_AP_POINTS.get(artifact.precision)
        records[fmt] = AccuracyRecord(backend, artifact.precision, where, len(coco), round(result.ap50_95, 4),
                                      round(result.ap50, 4), round(reference.ap50_95, 4), drop, limit,
                                      limit is None or drop <= limit)  # fmt: skip
    return records


def with_records(meta: BundleMeta, records: dict[str, AccuracyRecord]) -> BundleMeta:
    """``meta`` with each measured artifact's ``extra["accuracy"]`` set."""
    models = {
        fmt: dataclasses.replace(a, extra={**a.extra, "accuracy": records[fmt].to_dict()}) if fmt in records else a
        for fmt, a in meta.models.items()
    }
    return dataclasses.replace(meta, models=models)


def format_records(records: dict[str, AccuracyRecord]) -> str:
    """One line per artifact, for the export's output."""
    lines = []
    for fmt, r in records.items():
        limit = f"max drop {r.max_drop_ap_points:g}" if r.max_drop_ap_points is not None else "fp32, not gated"
        verdict = "PASS" if r.passed else "FAIL"
        lines.append(f"  {fmt:<12} {r.backend:<12} {r.precision:<5} AP50:95 {r.ap50_95:.4f} (reference "
                     f"{r.reference_ap50_95:.4f}, drop {r.drop_ap_points:+.2f} AP points, {limit}) "
                     f"{verdict}")  # fmt: skip
    return "\n".join(lines)
