"""``--backend auto``: which artifacts may serve (fp32, or a reduced precision that passed the export's accuracy
gate), the fastest measured on this machine wins, and ``/v1/models`` shows the choice with its measurements."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import httpx
import pytest

from model.artifacts import default_bundle_dir, load_bundle_meta
from model.predictor import backend_candidates
from service.backend_choice import measure_backends
from tests.service.conftest import server_settings
from tests.service.fakes import FakeMeta, FakePredictor
from tests.service.servers import ServerThread


def test_candidates_are_fp32_and_gated_reduced_precision() -> None:
    meta = load_bundle_meta(default_bundle_dir())
    assert backend_candidates(meta, "cpu") == [("onnxruntime", "fp32"), ("openvino", "bf16")]
    assert backend_candidates(meta, "cpu", "fp32") == [("onnxruntime", "fp32")]
    assert backend_candidates(meta, "cpu", "bf16") == [("openvino", "bf16")]
    assert backend_candidates(meta, "cpu", "int8") == []
    bf16 = meta.models["openvino"]
    failed = {**bf16.extra["accuracy"], "passed": False}
    for extra in ({"accuracy": failed}, {}):  # a failed gate, or never measured: never chosen automatically
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


@pytest.mark.parametrize(("precision", "expected"), [("auto", None), ("fp32", "onnxruntime")])
def test_the_server_serves_the_measured_choice_and_shows_it(precision: str, expected: str | None) -> None:
    settings = server_settings(Path(), bundles=[], precision=precision)  # the embedded default model
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
