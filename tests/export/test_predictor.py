"""Predictor inputs (arrays in either channel order, paths, bytes), options and batch handling."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from model.export.parity import parity_images
from model.predictor import Predictor


@pytest.fixture(scope="module")
def predictor(tiny_bundle: Path) -> Predictor:
    return Predictor.from_bundle(tiny_bundle, backend="onnxruntime")


def busiest_image(predictor: Predictor) -> np.ndarray:
    """The parity image with the most detections (so assertions on detections are not vacuous)."""
    images = parity_images()
    counts = [len(d) for d in predictor.predict(images)]
    return images[int(np.argmax(counts))]


def same(a, b) -> bool:
    if len(a) != len(b):
        return False
    return np.allclose(a.boxes_xyxy, b.boxes_xyxy, atol=1e-3) and np.array_equal(a.class_ids, b.class_ids)


def test_rgb_arrays_equal_bgr_arrays(predictor: Predictor) -> None:
    image = busiest_image(predictor)
    bgr = predictor.predict(image, channel_order="bgr")[0]
    rgb = predictor.predict(np.ascontiguousarray(image[..., ::-1]), channel_order="rgb")[0]
    assert len(bgr) > 0 and same(bgr, rgb)
    swapped = predictor.predict(image, channel_order="rgb")[0]  # the wrong order really changes the input
    assert not same(bgr, swapped)


def test_paths_bytes_and_arrays_agree(predictor: Predictor, tmp_path: Path) -> None:
    image = parity_images()[1]
    path = tmp_path / "a.png"
    cv2.imwrite(str(path), image)
    encoded = path.read_bytes()
    results = predictor.predict([image, path, str(path), encoded])
    assert all(same(results[0], r) for r in results[1:])


def test_bad_inputs_raise_clear_errors(predictor: Predictor, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot decode image bytes"):
        predictor.predict(b"this is text")
    with pytest.raises(ValueError, match="cannot read image file"):
        predictor.predict(tmp_path / "missing.jpg")
    with pytest.raises(ValueError, match="must be uint8"):
        predictor.predict(np.zeros((10, 10, 3), np.float32))
    with pytest.raises(ValueError, match=r"\[H, W, 3\]"):
        predictor.predict(np.zeros((10, 10, 5), np.uint8))
    with pytest.raises(ValueError, match="expected a batch"):
        predictor.infer(np.zeros((1, 3, 32, 32), np.float32))
    assert predictor.predict([]) == []


def test_options_filter_and_cap(predictor: Predictor) -> None:
    image = busiest_image(predictor)
    full = predictor.predict(image)[0]
    assert len(full) >= 3
    capped = predictor.predict(image, max_detections=2)[0]
    assert len(capped) == 2 and np.allclose(capped.scores, full.scores[:2])
    strict = predictor.predict(image, score_threshold=float(full.scores[1]))[0]
    assert (strict.scores >= full.scores[1]).all() and len(strict) < len(full) + 1
    only = predictor.predict(image, class_ids=[int(full.class_ids[0])])[0]
    assert set(only.class_ids.tolist()) == {int(full.class_ids[0])}
    gray = predictor.predict(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY))[0]  # grayscale accepted
    assert gray.image_hw == image.shape[:2]


def test_clone_has_its_own_session(predictor: Predictor) -> None:
    other = predictor.clone()
    assert other.runner is not predictor.runner and other.backend == predictor.backend
    image = parity_images()[2]
    assert same(other.predict(image)[0], predictor.predict(image)[0])


def test_to_dict_is_the_rest_shape(predictor: Predictor) -> None:
    image = busiest_image(predictor)
    data = predictor.predict(image)[0].to_dict()
    assert set(data) == {"width", "height", "detections"}
    assert (data["height"], data["width"]) == image.shape[:2]
    first = data["detections"][0]
    assert set(first) == {"box", "score", "class_id", "class_name"} and len(first["box"]) == 4
