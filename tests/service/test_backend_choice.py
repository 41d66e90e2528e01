"""``--backend auto``: which artifacts may serve (fp32, or a reduced precision that passed the export's accuracy
gate), the fastest measured on this machine wins, and ``/v1/models`` shows the choice with its measurements."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import httpx
import pytest

from model.artifacts import load_bundle_meta
from model.predictor import backend_candidates
from service.backend_choice import measure_backends
from tests.service.conftest import server_settings
from tests.service.fakes import FakeMeta, FakePredictor
from tests.service.servers import ServerThread


def record(passed: bool) -> dict:
    """An ``extra["accuracy"]`` entry as ``model.export.accuracy_gate`` writes it (the gate itself is measured in
    tests/export/test_accuracy_gate.py; here only the selection that reads it is under test)."""
    return {"backend": "openvino", "precision": "bf16", "data": "coco-tiny/annotations/instances_val2017.json",
            "images": 80, "ap50_95": 0.306, "ap50": 0.47, "reference_ap50_95": 0.307, "drop_ap_points": 0.1,
            "max_drop_ap_points": 0.5, "passed": passed}  # fmt: skip


@pytest.fixture(scope="module")
def gated_bundle(tiny_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny bundle plus an OpenVINO bf16 artifact compiled from its ONNX file, with a passed gate record."""
    out = tmp_path_factory.mktemp("gated") / "tiny"
    shutil.copytree(tiny_bundle, out)
    data = json.loads((out / "meta.json").read_text())
    data["models"]["openvino"] = {"format": "openvino", "file": data["models"]["onnx"]["file"], "precision": "bf16",
                                  "extra": {"accuracy": record(True)}}  # fmt: skip
    (out / "meta.json").write_text(json.dumps(data))
    return out


def test_candidates_are_fp32_and_gated_reduced_precision(tiny_bundle: Path, gated_bundle: Path) -> None:
    assert backend_candidates(load_bundle_meta(tiny_bundle), "cpu") == [("onnxruntime", "fp32")]  # ONNX only
    meta = load_bundle_meta(gated_bundle)
    assert backend_candidates(meta, "cpu") == [("onnxruntime", "fp32"), ("openvino", "bf16")]
    assert backend_candidates(meta, "cpu", "fp32") == [("onnxruntime", "fp32")]
    assert backend_candidates(meta, "cpu", "bf16") == [("openvino", "bf16")]
    assert backend_candidates(meta, "cpu", "int8") == []
    bf16 = meta.models["openvino"]
    for extra in ({"accuracy": record(False)}, {}):  # a failed gate, or never measured: never chosen automatically
        models = {**meta.models, "openvino": dataclasses.replace(bf16, extra=extra)}
        assert backend_candidates(dataclasses.replace(meta, models=models), "cpu") == [("onnxruntime", "fp32")]


def test_the_fastest_candidate_wins_measured_in_alternating_rounds() -> None:
    delays = {"slow": 0.004, "fast": 0.001}
    loaded = []

    def load(backend: str) -> FakePredictor:
        loaded.append(backend)
        return FakePredictor(meta=FakeMeta(name="m"), infer_delay_s=delays[backend], backend=backend)

    choice = measure_backends([("slow", "fp32"), ("fast", "bf16")], load, batch=2)
    assert (choice.backend, choice.precision, choice.batch) == ("fast", "bf16", 2) and loaded == ["slow", "fast"]
    assert choice.ms_per_image["fast/bf16"] < choice.ms_per_image["slow/fp32"]
    assert choice.ms_per_image["slow/fp32"] >= 4.0 / 2  # 4 ms per batch of 2 at least
    single = measure_backends([("only", "fp32")], load, batch=2)
    assert (single.backend, single.ms_per_image) == ("only", {}) and loaded == ["slow", "fast"]  # nothing timed
    # four 1-thread sessions of "slow" share the work: per image it is then the faster of the two
    shared = measure_backends([("slow", "fp32"), ("fast", "bf16")], load, batch=2, instances={"slow": 4})
    assert shared.backend == "slow" and shared.ms_per_image["slow/fp32"] < shared.ms_per_image["fast/bf16"]


@pytest.mark.parametrize(("precision", "expected"), [("auto", None), ("fp32", "onnxruntime")])
def test_the_server_serves_the_measured_choice_and_shows_it(gated_bundle: Path, precision: str, expected) -> None:
    settings = server_settings(gated_bundle, precision=precision)
    with ServerThread(settings) as server:
        model = httpx.get(f"{server.http_url}/v1/models", timeout=10).json()["models"][0]
    choice = model["backend_choice"]
    if expected is None:  # both runtimes measured here; whichever was faster serves
        timings = choice["ms_per_image"]
        assert set(timings) == {"onnxruntime/fp32", "openvino/bf16"} and all(v > 0 for v in timings.values())
        fastest = min(timings, key=timings.get)
        assert f"{model['backend']}/{model['precision']}" == fastest == f"{choice['backend']}/{choice['precision']}"
        assert choice["batch"] == min(settings.max_batch_size, 8)
    else:  # a single candidate: nothing to measure
        assert choice is None and (model["backend"], model["precision"]) == (expected, "fp32")
