"""The TensorRT runner's CUDA data flow and engine cache, against fake ``tensorrt`` / cuda-python modules
(``tests.export.fake_tensorrt``): the real runner code, no GPU. On a GPU, tests/export/test_gpu.py runs the real thing.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from model.runtime import tensorrt_engine
from model.runtime.tensorrt_engine import EngineSpec, batch_profiles, cached_engine, default_cache_dir
from tests.export.fake_tensorrt import GARBAGE, engine_bytes, fake_modules, fake_network

K = 5
INPUT_HW = (8, 24)  # fake_network reads 4K values from each image's first row
MAX_BATCH = 8  # profiles [1], [2-4], [5-8]
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def fakes(request, monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """Fake modules installed (cuda-python's new layout unless parametrized), an engine cache in tmp_path and a
    builder that serializes the fake engine."""
    layout = getattr(request, "param", "cuda.bindings")
    trt, rt, modules = fake_modules(layout)
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setenv("YOLOXPAI_ENGINE_CACHE", str(tmp_path / "engines"))
    builds = []

    def build(onnx_path: Path, spec: EngineSpec) -> bytes:
        builds.append(spec)
        return engine_bytes(K, spec.input_hw, spec.profiles)

    monkeypatch.setattr(tensorrt_engine, "build_engine", build)
    onnx = tmp_path / "model.trt.onnx"
    onnx.write_bytes(b"not really onnx: the fake builder never reads it")
    return trt, rt, onnx, builds


def make_runner(onnx: Path, **kwargs):
    from model.runtime.tensorrt_runner import TensorRTRunner

    return TensorRTRunner(onnx, INPUT_HW, MAX_BATCH, **{"device": "cuda:0", "precision": "fp16", **kwargs})


def images(b: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 10, (b, 3, *INPUT_HW)).astype(np.float32)


@pytest.mark.parametrize("fakes", ["cuda.bindings", "cuda.cudart"], indirect=True)
def test_batches_of_every_profile_flow_through_device_memory(fakes) -> None:
    trt, rt, onnx, builds = fakes
    runner = make_runner(onnx)
    assert runner.spec.gpu_name == "Fake GPU 9000" and runner.spec.compute_capability == "9.0"
    assert runner.spec.tensorrt_version == "10.99.0" and len(builds) == 1
    context = trt.engines[0].contexts[0]
    first = None
    for step, b in enumerate((1, 3, 8, 2, 5, 1, 4)):
        batch = images(b, seed=step)
        raw = runner.run(batch)
        num, boxes, scores, classes = fake_network(batch, K)
        assert raw.num_dets.dtype == np.int32 and np.array_equal(raw.num_dets, num.reshape(-1))
        assert raw.boxes.dtype == np.float32 and raw.boxes.shape == (b, K, 4) and np.array_equal(raw.boxes, boxes)
        assert raw.scores.dtype == np.float32 and raw.scores.shape == (b, K) and np.array_equal(raw.scores, scores)
        assert raw.classes.dtype == np.int32 and np.array_equal(raw.classes, classes)
        lo, hi = context.engine.profiles[context.profile]
        assert lo <= b <= hi
        if first is None:
            first = (batch, raw.boxes.copy(), raw.boxes)
    assert np.array_equal(first[2], first[1]), "a result must not change when later runs reuse the buffers"
    assert context.profiles_selected == [0, 1, 2, 1, 2, 0, 1]  # switched only when the batch changes range
    # Grown for 1, then 4, then 8 images (each: 5 device buffers + 5 pinned twins), never again after.
    assert rt.calls.count("cudaMalloc") == 15 and rt.calls.count("cudaMallocHost") == 15
    assert len(rt.device_memory) == 5 and len(rt.pinned) == 5
    runner.close()
    assert rt.device_memory == {} and rt.pinned == {} and rt.streams == {}
    runner.close()  # idempotent


def test_output_not_waited_for_is_never_returned(fakes) -> None:
    """The fake runs a stream's work only at cudaStreamSynchronize: skipping it would return the garbage fill."""
    trt, rt, onnx, _ = fakes
    runner = make_runner(onnx)
    rt.cudaStreamSynchronize = lambda stream: (rt.cudaError_t.cudaSuccess,)  # "forgets" to run the queue
    raw = runner.run(images(3, seed=0))
    assert np.all(raw.scores.view(np.uint8) == GARBAGE)  # so the exact matches above prove the ordering


@pytest.mark.parametrize("call", ["cudaMallocHost", "cudaMalloc", "cudaMemcpyAsync", "cudaStreamSynchronize"])
def test_a_failed_cuda_call_in_a_run_is_named_and_nothing_leaks(fakes, call: str) -> None:
    trt, rt, onnx, _ = fakes
    runner = make_runner(onnx)
    runner.run(images(1, seed=0))
    rt.fail[call] = rt.cudaError_t.cudaErrorIllegalAddress
    with pytest.raises(RuntimeError, match=f"{call} failed: cudaErrorIllegalAddress"):
        runner.run(images(3, seed=1))  # needs bigger buffers: every call above is on its path
    rt.fail.clear()
    runner.close()
    assert rt.device_memory == {} and rt.pinned == {} and rt.streams == {}


@pytest.mark.parametrize("call", ["cudaGetDeviceCount", "cudaSetDevice", "cudaGetDeviceProperties", "cudaStreamCreate"])
def test_a_failed_cuda_call_at_load_is_named(fakes, call: str) -> None:
    trt, rt, onnx, _ = fakes
    rt.fail[call] = rt.cudaError_t.cudaErrorInvalidValue
    with pytest.raises(RuntimeError, match=f"{call} failed: cudaErrorInvalidValue"):
        make_runner(onnx)


def test_no_cuda_device_is_a_clear_error(fakes) -> None:
    trt, rt, onnx, _ = fakes
    with pytest.raises(RuntimeError, match="needs a CUDA device"):
        make_runner(onnx, device="cpu")
    with pytest.raises(RuntimeError, match=r"cuda:1 does not exist \(1 CUDA device"):
        make_runner(onnx, device="cuda:1")
    rt.devices = 0
    with pytest.raises(RuntimeError, match=r"cuda:0 does not exist \(0 CUDA device"):
        make_runner(onnx)


def test_missing_cuda_python_is_an_import_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from model.runtime.cuda_runtime import load_cudart

    for name in ("cuda", "cuda.bindings", "cuda.cudart"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(ModuleNotFoundError, match="cuda-python is not installed"):
        load_cudart()


def test_a_matching_prebuilt_engine_is_used_and_a_stale_one_rebuilt(fakes, tmp_path: Path) -> None:
    trt, rt, onnx, builds = fakes
    spec = tensorrt_engine.current_spec(onnx, "fp16", INPUT_HW, MAX_BATCH, "cuda:0")
    prebuilt = tmp_path / "model.engine"
    prebuilt.write_bytes(engine_bytes(K, INPUT_HW, spec.profiles))
    make_runner(onnx, prebuilt=prebuilt, prebuilt_spec=dataclasses.asdict(spec)).close()
    assert builds == []
    stale = dataclasses.asdict(dataclasses.replace(spec, gpu_name="NVIDIA A10"))
    make_runner(onnx, prebuilt=prebuilt, prebuilt_spec=stale).close()
    assert builds == [spec]


def test_the_runner_never_imports_torch(tmp_path: Path) -> None:
    """The serve-gpu image has no torch: with ``import torch`` made to fail, the runner loads and runs."""
    script = f"""
import sys
sys.modules["torch"] = None
from tests.export.fake_tensorrt import engine_bytes, fake_modules, fake_network
trt, rt, modules = fake_modules()
sys.modules.update(modules)
from model.runtime import tensorrt_engine
tensorrt_engine.build_engine = lambda onnx, spec: engine_bytes({K}, spec.input_hw, spec.profiles)
from model.runtime.tensorrt_runner import TensorRTRunner
import numpy as np
onnx = {str(tmp_path / "model.trt.onnx")!r}
open(onnx, "wb").write(b"x")
runner = TensorRTRunner(onnx, {INPUT_HW}, {MAX_BATCH})
batch = np.ones((2, 3, *{INPUT_HW}), np.float32)
assert np.array_equal(runner.run(batch).scores, fake_network(batch, {K})[2])
print("ran without torch")
"""
    env = {**os.environ, "PYTHONPATH": str(REPO), "YOLOXPAI_ENGINE_CACHE": str(tmp_path / "engines")}
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True)
    assert result.returncode == 0 and "ran without torch" in result.stdout, result.stderr


def test_default_cache_dir_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("YOLOXPAI_ENGINE_CACHE", str(tmp_path / "volume"))
    assert default_cache_dir() == tmp_path / "volume"
    monkeypatch.setenv("YOLOXPAI_ENGINE_CACHE", "")  # set but empty: as if unset
    assert default_cache_dir() == tmp_path / "xdg" / "yoloxpai" / "engines"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "yoloxpai" / "engines"


def spec(**changes) -> EngineSpec:
    base = EngineSpec("abc", "10.99.0", "Fake GPU 9000", "9.0", "fp16", INPUT_HW, tuple(batch_profiles(4)))
    return dataclasses.replace(base, **changes)


def test_cached_engine_is_written_atomically_and_reused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cache = tmp_path / "engines"
    builds, renames = [], []
    monkeypatch.setattr(
        tensorrt_engine, "build_engine", lambda onnx, s: builds.append(s) or b"engine:" + s.key().encode()
    )
    real_replace = os.replace

    def replace(src, dst) -> None:  # what a reader could see at the moment the file appears
        renames.append((Path(src).parent, Path(dst), Path(dst).exists(), Path(src).read_bytes()))
        real_replace(src, dst)

    monkeypatch.setattr(tensorrt_engine.os, "replace", replace)
    path = cached_engine(tmp_path / "model.trt.onnx", spec(), cache)
    assert path == cache / f"{spec().key()}.engine" and path.read_bytes() == b"engine:" + spec().key().encode()
    assert json.loads(path.with_suffix(".json").read_text())["gpu_name"] == "Fake GPU 9000"
    assert [r[1] for r in renames] == [path.with_suffix(".json"), path]  # an engine never lacks its spec
    engine_rename = renames[-1]
    assert engine_rename[1] == path and engine_rename[0] == cache  # renamed within the cache directory
    assert engine_rename[2] is False and engine_rename[3] == path.read_bytes()  # appears whole, never partial
    assert sorted(p.name for p in cache.iterdir()) == sorted([path.name, path.with_suffix(".json").name])
    assert cached_engine(tmp_path / "model.trt.onnx", spec(), cache) == path and len(builds) == 1  # reused
    cached_engine(tmp_path / "model.trt.onnx", spec(gpu_name="NVIDIA A10"), cache)  # another GPU: another engine
    assert len(builds) == 2


def test_a_failed_build_leaves_no_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def fail(onnx, s):
        raise RuntimeError("TensorRT failed to build")

    monkeypatch.setattr(tensorrt_engine, "build_engine", fail)
    with pytest.raises(RuntimeError, match="failed to build"):
        cached_engine(tmp_path / "model.trt.onnx", spec(), tmp_path / "engines")
    assert list((tmp_path / "engines").iterdir()) == []

    def write_fails(fd, mode):
        os.close(fd)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(tensorrt_engine, "build_engine", lambda onnx, s: b"engine")
    monkeypatch.setattr(tensorrt_engine.os, "fdopen", write_fails)
    with pytest.raises(OSError, match="No space left"):
        cached_engine(tmp_path / "model.trt.onnx", spec(), tmp_path / "engines")
    assert list((tmp_path / "engines").iterdir()) == []  # the temporary file is gone too
