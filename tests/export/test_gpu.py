"""CUDA / TensorRT paths: real tests where the hardware exists, skipped cleanly elsewhere."""

from __future__ import annotations

import importlib.util

import pytest

from model.runtime.tensorrt_engine import EngineSpec, batch_profiles

torch = pytest.importorskip("torch")
HAS_CUDA = torch.cuda.is_available()
HAS_TENSORRT = importlib.util.find_spec("tensorrt") is not None


def test_batch_profiles_cover_every_batch_once() -> None:
    assert batch_profiles(32) == [(1, 1), (2, 4), (5, 8), (9, 16), (17, 32)]
    assert batch_profiles(6) == [(1, 1), (2, 4), (5, 6)]
    assert batch_profiles(1) == [(1, 1)]
    for max_batch in range(1, 70):
        covered = [b for lo, hi in batch_profiles(max_batch) for b in range(lo, hi + 1)]
        assert covered == list(range(1, max_batch + 1))


def test_engine_cache_key_changes_with_what_the_engine_depends_on() -> None:
    spec = EngineSpec("abc", "10.3.0", "NVIDIA H100", "9.0", "fp16", (640, 640), ((1, 1), (2, 4)))
    assert spec.key() == EngineSpec(**{**spec.__dict__}).key()
    for change in (dict(gpu_name="NVIDIA A10"), dict(tensorrt_version="10.4.0"), dict(precision="fp32")):
        assert EngineSpec(**{**spec.__dict__, **change}).key() != spec.key()


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_torchscript_on_cuda_matches_eager(precision: str, tmp_path) -> None:
    """The trained default model (confident, separated detections; a random model's near-tied candidates let
    fp16 rounding pick another box in NMS): fp32 within the fp32 tolerances, fp16 within 1 px and 0.02."""
    from model.artifacts import default_weights_path
    from model.checkpoint import load_model
    from model.export.bundle import ExportOptions, eager_detections, export_bundle
    from model.export.parity import CUDA_FP32_SCORE_TOL, compare_detections, parity_images
    from model.predictor import Predictor

    options = ExportOptions(formats=("torchscript",), precision=precision, max_batch=4, input_hw=(320, 320))
    export_bundle(default_weights_path(), tmp_path / "b", options)
    eager, _ = load_model(default_weights_path())
    predictor = Predictor.from_bundle(tmp_path / "b", backend="torchscript", device="cuda:0")
    assert predictor.precision == precision
    images = parity_images()
    reference = eager_detections(eager, predictor.meta, images)
    assert sum(len(d) for d in reference) >= 10, "parity needs detections to compare"
    report = compare_detections(reference, predictor.predict(images))
    if precision == "fp32":
        assert report.ok(score_tol=CUDA_FP32_SCORE_TOL), report
    else:  # a detection at the score threshold may flip
        assert report.count_mismatches <= 1 and report.class_mismatches <= 1, report
        assert report.max_box_diff_px <= 1.0 and report.max_score_diff <= 0.02, report


@pytest.mark.gpu
@pytest.mark.tensorrt
@pytest.mark.skipif(not (HAS_CUDA and HAS_TENSORRT), reason="needs a CUDA GPU and TensorRT")
def test_tensorrt_engine_matches_eager(tmp_path) -> None:
    from model.checkpoint import load_model
    from model.export.bundle import eager_detections
    from model.export.parity import compare_detections, parity_images
    from model.predictor import Predictor
    from tests.conftest import make_tiny_bundle

    bundle = make_tiny_bundle(tmp_path / "b", formats=("tensorrt",))
    eager, _ = load_model(tmp_path / "b.safetensors")
    predictor = Predictor.from_bundle(bundle, backend="tensorrt", device="cuda:0")
    images = parity_images()
    report = compare_detections(eager_detections(eager, predictor.meta, images), predictor.predict(images))
    assert report.ok(), report
    for b in (1, 3, 8):  # every optimisation profile range gets exercised
        import numpy as np

        raw = predictor.infer(np.zeros((b, 3, *predictor.meta.input_hw), np.float32))
        assert raw.num_dets.shape == (b,)


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_nvjpeg_decode_of_a_rotated_photo_matches_the_host(orientation: int) -> None:
    """nvJPEG ignores EXIF orientation; ``model.device_pipeline`` applies it, so a phone photo held sideways is
    letterboxed the way the host path sees it (same shape, pixels within the two decoders' rounding)."""
    import cv2
    import numpy as np

    from model.device_pipeline import nvjpeg_decoder, orient
    from model.image_decode import jpeg_orientation
    from tests.model.jpeg_samples import structured_image, with_exif_orientation

    decode = nvjpeg_decoder()
    if decode is None:
        pytest.skip("torchvision does not import here")
    data = with_exif_orientation(cv2.imencode(".jpg", structured_image(480, 640))[1].tobytes(), orientation)
    host = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)[:, :, ::-1]
    [chw] = decode([torch.frombuffer(bytearray(data), dtype=torch.uint8)], "cuda:0")
    device = orient(chw.permute(1, 2, 0), jpeg_orientation(data)).cpu().numpy()
    assert device.shape == host.shape
    assert np.abs(device.astype(np.int16) - host).mean() < 2.0
