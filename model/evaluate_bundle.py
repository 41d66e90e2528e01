"""COCO evaluation of an exported bundle through a real runtime (``yoloxpai eval --bundle``).

Runs the ``Predictor`` (the serving path: NumPy letterbox, the bundle's graph with NMS inside, boxes mapped back)
over a dataset split and scores it with the same COCO code as ``model.evaluate``. This is how reduced precision
(OpenVINO bf16, TensorRT fp16) is judged. For numbers comparable with checkpoint evaluation, export the bundle with
``--score-threshold 0.001 --max-detections 100`` (the COCO protocol); a bundle with a higher baked threshold
under-reports recall.
"""

from __future__ import annotations

from model.data.coco import CocoDetection
from model.evaluate import EvalResult, score_detections
from model.predictor import Predictor


def coco_records(image_id: int, cat_ids, boxes_xyxy, scores, class_ids) -> list[dict]:
    """COCO-format detections (xywh, ``cat_ids[class id]`` as category) of one image."""
    return [
        {
            "image_id": image_id,
            "category_id": int(cat_ids[int(cls)]),
            "bbox": [float(x1), float(y1), float(x2 - x1), float(y2 - y1)],
            "score": float(score),
        }
        for (x1, y1, x2, y2), score, cls in zip(boxes_xyxy, scores, class_ids, strict=True)
    ]


def bundle_detections(predictor: Predictor, coco: CocoDetection, batch_size: int = 8) -> list[dict]:
    """COCO-format detections (xywh, original category ids) of every image of ``coco``."""
    t = predictor.meta.thresholds
    detections: list[dict] = []
    for start in range(0, len(coco), batch_size):
        indices = range(start, min(start + batch_size, len(coco)))
        images = [coco.load(i).image for i in indices]
        results = predictor.predict(images, "bgr", score_threshold=t.score_threshold, max_detections=t.max_detections)
        for index, det in zip(indices, results, strict=True):
            image_id = coco.image_info(index).image_id
            detections += coco_records(image_id, coco.cat_ids, det.boxes_xyxy, det.scores, det.class_ids)
    return detections


def evaluate_bundle(predictor: Predictor, coco: CocoDetection, ann_file: str, batch_size: int = 8) -> EvalResult:
    """The 12 COCO numbers and per-class AP of a bundle on a dataset split."""
    if predictor.meta.num_classes != coco.num_classes:
        raise ValueError(f"the bundle has {predictor.meta.num_classes} classes, the dataset {coco.num_classes}")
    detections = bundle_detections(predictor, coco, batch_size)
    return score_detections(ann_file, detections, tuple(coco.cat_ids), tuple(coco.class_names))
