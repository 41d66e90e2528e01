"""Shared checks of the OIP tests: the same images through ``POST /v1/detect`` as the reference answer."""

from __future__ import annotations

import httpx
import numpy as np


def v1_detect(http_url: str, image: bytes, **params) -> list[dict]:
    """The detections ``POST /v1/detect`` returns for one encoded image."""
    response = httpx.post(
        f"{http_url}/v1/detect", content=image, params=params, headers={"content-type": "application/octet-stream"}
    )
    assert response.status_code == 200, response.text
    return response.json()["results"][0]["detections"]


def assert_outputs_match_v1(outputs: dict[str, np.ndarray], expected: list[list[dict]]) -> None:
    """OIP outputs (``num_dets``, ``boxes``, ``scores``, ``classes``, ``class_names``) equal the /v1 detections
    image by image, exactly (float32 values compared as float32), and the padding rows are empty."""
    num_dets = outputs["num_dets"]
    assert num_dets.dtype == np.int32 and num_dets.shape == (len(expected),)
    k = outputs["scores"].shape[1]
    assert outputs["boxes"].shape == (len(expected), k, 4) and outputs["boxes"].dtype == np.float32
    assert outputs["classes"].dtype == np.int32 and outputs["class_names"].shape == (len(expected), k)
    for i, detections in enumerate(expected):
        n = int(num_dets[i])
        assert n == len(detections), (i, n, len(detections))
        np.testing.assert_array_equal(
            outputs["boxes"][i, :n], np.array([d["box"] for d in detections], np.float32).reshape(-1, 4)
        )
        np.testing.assert_array_equal(outputs["scores"][i, :n], np.array([d["score"] for d in detections], np.float32))
        assert outputs["classes"][i, :n].tolist() == [d["class_id"] for d in detections]
        assert [name.decode() for name in outputs["class_names"][i, :n]] == [d["class_name"] for d in detections]
        assert not outputs["boxes"][i, n:].any() and not outputs["scores"][i, n:].any()
        assert (outputs["classes"][i, n:] == -1).all() and all(name == b"" for name in outputs["class_names"][i, n:])


def as_outputs(result) -> dict[str, np.ndarray]:
    """Every output of a tritonclient ``InferResult`` as numpy arrays (BYTES as ``bytes``: JSON outputs come back
    as ``str``)."""
    outputs = {name: result.as_numpy(name) for name in ("num_dets", "boxes", "scores", "classes", "class_names")}
    names = outputs["class_names"]
    outputs["class_names"] = np.vectorize(lambda v: v.encode() if isinstance(v, str) else v, otypes=[object])(names)
    return outputs
