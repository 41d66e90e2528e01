"""``yoloxpai predict`` decodes as the server does: a JPEG the letterbox shrinks 2x or more is decoded at 1/2, 1/4
or 1/8, its boxes still in the original pixels; ``--save-dir`` draws on the full image; an unreadable file is an
error line and exit 1, the other images still answered."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from model.artifacts import default_bundle_dir
from model.bn_unfold import DEFAULT_CALIBRATION_DIR
from model.image_decode import jpeg_reduction
from model.predictor import Predictor
from yoloxpai.cli import main


def test_predict_decodes_large_jpegs_reduced_and_draws_on_the_full_image(tmp_path: Path, capsys) -> None:
    cat = cv2.imread(str(DEFAULT_CALIBRATION_DIR / "chelsea.jpg"))  # the README's cat
    large = cv2.resize(cat, None, fx=4, fy=4, interpolation=cv2.INTER_CUBIC)  # 1804x1200: 416 decodes it at 1/4
    assert jpeg_reduction(large.shape[:2], (416, 416)) == 4
    photos = tmp_path / "in"
    photos.mkdir()
    cv2.imwrite(str(photos / "cat_large.jpg"), large, [cv2.IMWRITE_JPEG_QUALITY, 95])
    (photos / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    drawn = tmp_path / "drawn"

    code = main(["predict", str(photos), "--bundle", str(default_bundle_dir()), "--backend", "onnxruntime",
                 "--json", "--score-threshold", "0.3", "--save-dir", str(drawn)])  # fmt: skip

    out = capsys.readouterr().out.splitlines()
    assert code == 1  # the broken file
    assert any(line.startswith("error: cannot read image") and "broken.jpg" in line for line in out), out
    [answer] = [json.loads(line) for line in out if line.startswith("{")]
    predictor = Predictor.from_bundle(default_bundle_dir(), backend="onnxruntime", device="cpu")
    reduced = predictor.predict(photos / "cat_large.jpg", score_threshold=0.3)[0]  # the library's reduced path
    full = predictor.predict(photos / "cat_large.jpg", score_threshold=0.3, reduced_decode=False)[0]
    assert [d["class_name"] for d in answer["detections"]] == list(reduced.class_names)
    boxes = [d["box"] for d in answer["detections"]]
    np.testing.assert_allclose(boxes, reduced.boxes_xyxy, atol=0.01)  # the JSON keeps 2 decimals
    assert "cat" in reduced.class_names and reduced.image_hw == full.image_hw == large.shape[:2]
    # the same cat as a full decode finds, in the original pixels (the two paths resample differently)
    cat_box = reduced.boxes_xyxy[list(reduced.class_names).index("cat")]
    assert np.abs(cat_box - full.boxes_xyxy[list(full.class_names).index("cat")]).max() <= 0.02 * large.shape[1]
    saved = cv2.imread(str(drawn / "cat_large.jpg"))
    assert saved is not None and saved.shape == large.shape  # drawn on the full-resolution image
