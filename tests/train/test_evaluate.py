"""COCO evaluation: an oracle model scores mAP 1, boxes map back to original pixels, per-class AP, text table."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from model.config import MEGVII
from model.data.coco import CocoDetection
from model.data.layout import resolve_split
from model.data.loader import build_eval_loader
from model.evaluate import STAT_NAMES, evaluate, format_result, predict_coco, score_detections

INPUT_HW = (96, 96)


class Oracle(nn.Module):
    """Returns the ground truth (letterboxed) as decoded predictions, batch by batch in loader order."""

    def __init__(self, coco: CocoDetection, batch_size: int, drop_class: int | None = None) -> None:
        super().__init__()
        self.outputs = []
        n_max = max(coco.num_boxes(i) for i in range(len(coco))) + 1
        rows = []
        for i in range(len(coco)):
            h, w = coco.image_info(i).hw
            r = min(INPUT_HW[0] / h, INPUT_HW[1] / w)
            boxes, labels = coco.annotations(i)
            out = torch.zeros(n_max, 5 + coco.num_classes)
            for j, (box, label) in enumerate(zip(torch.from_numpy(boxes) * r, labels.tolist(), strict=True)):
                if label == drop_class:
                    continue
                out[j, :4] = torch.cat([(box[:2] + box[2:]) / 2, box[2:] - box[:2]])
                out[j, 4], out[j, 5 + label] = 1.0, 0.9
            rows.append(out)
        self.outputs = [torch.stack(rows[k : k + batch_size]) for k in range(0, len(rows), batch_size)]
        self.calls = 0

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        out = self.outputs[self.calls]
        self.calls += 1
        assert out.shape[0] == images.shape[0]
        return out


@pytest.fixture(scope="module")
def val(tiny_shapes: Path) -> tuple[Path, CocoDetection]:
    ann_file, image_dir = resolve_split(tiny_shapes, "val")
    return ann_file, CocoDetection(ann_file, image_dir)


def test_oracle_scores_map_one(val) -> None:
    ann_file, coco = val
    loader = build_eval_loader(coco, INPUT_HW, 3, 0)
    result = evaluate(Oracle(coco, 3), loader, ann_file, MEGVII, coco.cat_ids, coco.class_names)
    assert result.num_images == len(coco)
    assert result.ap50 == pytest.approx(1.0)
    assert result.ap50_95 > 0.9  # letterbox rounding costs a little at the strictest IoUs
    assert all(ap50 == pytest.approx(1.0) for name, _, ap50 in result.per_class if ap50 >= 0)
    text = format_result(result)
    assert all(name in text for name in STAT_NAMES) and all(n in text for n in coco.class_names)


def test_missing_class_scores_zero_for_that_class(val) -> None:
    ann_file, coco = val
    loader = build_eval_loader(coco, INPUT_HW, 4, 0)
    result = evaluate(Oracle(coco, 4, drop_class=0), loader, ann_file, MEGVII, coco.cat_ids, coco.class_names)
    per_class = {name: ap50 for name, _, ap50 in result.per_class}
    assert per_class[coco.class_names[0]] == 0.0
    assert result.ap50 < 1.0


class ConstantBox(nn.Module):
    """One confident class-0 box at (10, 10)-(50, 50) input pixels for every image."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(images.shape[0], 4, 7)
        out[:, 0] = torch.tensor([30.0, 30.0, 40.0, 40.0, 0.9, 1.0, 0.0])
        return out


def test_boxes_map_back_to_original_pixels(val) -> None:
    _, coco = val
    dets = predict_coco(ConstantBox(), build_eval_loader(coco, INPUT_HW, 2, 0), MEGVII, torch.device("cpu"),
                        coco.cat_ids)  # fmt: skip
    assert len(dets) == len(coco)
    for i, det in enumerate(dets):
        h, w = coco.image_info(i).hw
        r = min(INPUT_HW[0] / h, INPUT_HW[1] / w)
        x1, y1 = 10 / r, 10 / r
        x2, y2 = min(50 / r, w), min(50 / r, h)
        assert det["image_id"] == coco.image_info(i).image_id and det["category_id"] == coco.cat_ids[0]
        assert det["bbox"] == pytest.approx([x1, y1, x2 - x1, y2 - y1], abs=2e-3)
        assert det["score"] == pytest.approx(0.9)


def test_no_detections_scores_zero(val) -> None:
    ann_file, coco = val
    result = score_detections(ann_file, [], coco.cat_ids, coco.class_names)
    assert result.stats == (0.0,) * 12 and result.num_detections == 0
