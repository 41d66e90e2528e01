"""BatchedEngine against the fake predictor: admission, options, deadlines, drain, statistics and metrics."""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path

import cv2
import pytest

from service.batched_engine import BatchedEngine
from service.engine import DetectOptions
from service.errors import (
    DeadlineExceeded,
    InferenceFailed,
    InvalidImage,
    InvalidOption,
    ModelNotFound,
    NotReady,
    Overloaded,
    PayloadTooLarge,
)
from service.imaging import EncodedImage, RawImage
from service.model_loading import tune_batch_size
from service.settings import Settings
from tests.service.fakes import FakePredictor, fake_loader, marker_image


def png(marker: int, hw=(24, 40)) -> EncodedImage:
    return EncodedImage(cv2.imencode(".png", marker_image(marker, hw))[1].tobytes(), "image/png")


FAKE_BUNDLE = Path(tempfile.mkdtemp()) / "fake"  # the fake loader only needs a directory named like the model
FAKE_BUNDLE.mkdir()


def settings(**kwargs) -> Settings:
    kwargs.setdefault("bundles", [str(FAKE_BUNDLE)])
    kwargs.setdefault("tune_batch_size", False)
    kwargs.setdefault("instances_per_device", 1)  # one batch at a time, whatever the machine's cores
    return Settings(**kwargs)


async def started(s: Settings, **fake_kwargs) -> BatchedEngine:
    engine = BatchedEngine(s, loader=fake_loader(**fake_kwargs))
    await engine.start()
    return engine


def test_detect_maps_boxes_to_the_original_image_and_names_classes():
    async def main():
        engine = await started(settings())
        result = await engine.detect(png(200, hw=(64, 128)))
        assert (result.model, result.model_version, result.width, result.height) == ("fake", "1", 128, 64)
        assert result.scores.tolist() == pytest.approx([200 / 255])
        assert result.class_names == (("cat", "dog", "bird")[200 % 3],)
        assert result.boxes_xyxy.tolist() == [[0.0, 0.0, 64.0, 64.0]]  # fake box (0, 0, 16, 16) / r=0.25
        assert result.timing.decode_ms > 0 and result.timing.inference_ms >= 0
        await engine.close()

    asyncio.run(main())


def test_warmup_covers_every_batch_size_of_every_instance():
    async def main():
        loader = fake_loader()
        engine = BatchedEngine(settings(max_batch_size=3, instances_per_device=2), loader=loader)
        assert not engine.is_ready()
        await engine.start()
        assert engine.is_ready()
        # Two batch instances at every batch size; the latency instance (when the machine has more cores than a
        # batch instance uses) runs single images only.
        warmed = [p.warmed for p in loader.created]
        assert warmed[:2] == [[1, 2, 3], [1, 2, 3]]
        assert warmed[2:] == ([[1]] if engine._registry.route("fake").latency is not None else [])
        await engine.close()

    asyncio.run(main())


def test_raw_pixels_and_options_are_validated_per_model():
    async def main():
        engine = await started(settings())
        raw = marker_image(120)
        result = await engine.detect(RawImage(raw.tobytes(), 40, 24, "rgb"))
        assert result.width == 40
        with pytest.raises(InvalidImage):
            await engine.detect(RawImage(raw.tobytes()[:-1], 40, 24))
        for bad in (
            DetectOptions(score_threshold=0.001),
            DetectOptions(score_threshold=1.5),
            DetectOptions(max_detections=0),
            DetectOptions(max_detections=99),
            DetectOptions(classes=("zebra",)),
            DetectOptions(classes=(7,)),
        ):
            with pytest.raises(InvalidOption):
                await engine.detect(png(200), options=bad)
        kept = await engine.detect(png(200), options=DetectOptions(classes=("cat", "dog", "bird")))
        assert len(kept.scores) == 1
        dropped = await engine.detect(png(200), options=DetectOptions(classes=((200 + 1) % 3,)))
        assert len(dropped.scores) == 0
        with pytest.raises(ModelNotFound):
            await engine.detect(png(1), model="nope")
        await engine.close()
        small = await started(settings(max_image_pixels=100))
        with pytest.raises(PayloadTooLarge):
            await small.detect(png(1))  # 40 x 24 = 960 pixels
        await small.close()

    asyncio.run(main())


def test_full_queue_is_refused_at_once_while_accepted_requests_finish():
    async def main():
        engine = await started(settings(queue_capacity=2, max_batch_size=1), infer_delay_s=0.2)
        running = asyncio.ensure_future(engine.detect(png(10)))
        await asyncio.sleep(0.05)  # now computing: no longer pending
        accepted = [asyncio.ensure_future(engine.detect(png(11 + i))) for i in range(2)]
        await asyncio.sleep(0)
        with pytest.raises(Overloaded):
            await engine.detect(png(99))
        results = await asyncio.gather(running, *accepted)
        assert len(results) == 3
        text = engine.telemetry.render().decode()
        assert 'yoloxpai_rejected_total{model="fake",reason="queue_full"} 1.0' in text
        assert 'nv_inference_request_failure{model="fake",version="1",reason="REJECTED"} 1' in text
        await engine.close()

    asyncio.run(main())


def test_detect_many_shares_batches_and_fails_as_a_whole():
    async def main():
        loader = fake_loader(infer_delay_s=0.05)
        engine = BatchedEngine(settings(max_batch_size=8), loader=loader)
        await engine.start()
        results = await engine.detect_many([png(100 + i) for i in range(5)])
        assert [round(float(r.scores[0]) * 255) for r in results] == [100, 101, 102, 103, 104]
        assert sum(loader.created[0].batch_sizes) == 5 and len(loader.created[0].batch_sizes) <= 2
        with pytest.raises(InvalidImage):
            await engine.detect_many([png(60), EncodedImage(b"not an image"), png(61)])
        await asyncio.sleep(0.1)
        assert engine.inflight == 0 and engine.model_states()[0].pending == 0
        await engine.close()

    asyncio.run(main())


def test_backend_failure_fails_its_batch_and_the_engine_keeps_serving():
    async def main():
        engine = await started(settings(max_batch_size=1), fail_marker=13)
        with pytest.raises(InferenceFailed):
            await engine.detect(png(13))
        assert (await engine.detect(png(200))).scores.size == 1
        assert engine.is_ready()
        snap = engine.telemetry.statistics("fake")
        assert snap.fail_count == {"BACKEND": 1} and snap.success_count == 1
        await engine.close()

    asyncio.run(main())


def test_deadline_and_cancellation():
    async def main():
        engine = await started(settings(max_batch_size=1), infer_delay_s=0.3)
        blocker = asyncio.ensure_future(engine.detect(png(1)))
        await asyncio.sleep(0.05)
        with pytest.raises(DeadlineExceeded):
            await engine.detect(png(2), timeout_s=0.1)
        cancelled = asyncio.ensure_future(engine.detect(png(3)))
        await asyncio.sleep(0.05)
        cancelled.cancel()
        await blocker
        await asyncio.sleep(0.05)
        snap = engine.telemetry.statistics("fake")
        assert snap.inference_count == 1  # neither the expired nor the cancelled request was computed
        assert snap.fail_count == {"REJECTED": 1, "CANCELED": 1}
        assert 'yoloxpai_expired_total{model="fake"} 1.0' in engine.telemetry.render().decode()
        await engine.close()

    asyncio.run(main())


def test_drain_refuses_new_work_and_waits_for_accepted_work():
    async def main():
        engine = await started(settings(max_batch_size=1), infer_delay_s=0.2)
        accepted = [asyncio.ensure_future(engine.detect(png(5 + i))) for i in range(3)]
        await asyncio.sleep(0.01)
        engine.begin_shutdown()
        assert not engine.is_ready()
        drain = asyncio.ensure_future(engine.drain(timeout_s=5.0))
        await asyncio.sleep(0)
        with pytest.raises(NotReady) as refused:
            await engine.detect(png(9))
        assert refused.value.draining
        assert await drain is True
        assert all(task.done() and not task.exception() for task in accepted)
        await engine.close()

    asyncio.run(main())


def test_a_dead_batcher_makes_the_engine_unready():
    async def main():
        engine = await started(settings())
        runtime = engine._registry.route("fake")
        runtime.batcher.task.cancel()
        await asyncio.gather(runtime.batcher.task, return_exceptions=True)
        await asyncio.sleep(0)  # the done-callback runs on the next loop turn
        assert not engine.is_ready()
        with pytest.raises(NotReady):
            await engine.detect(png(1))
        await engine.close()

    asyncio.run(main())


class TimedPredictor(FakePredictor):
    """``infer`` costs ``fixed_s + per_image_s * B``, or grows quadratically when ``quadratic``."""

    def __init__(self, fixed_s: float, per_image_s: float, quadratic: bool = False) -> None:
        super().__init__()
        self.fixed_s, self.per_image_s, self.quadratic = fixed_s, per_image_s, quadratic

    def infer(self, batch):
        b = len(batch)
        time.sleep(self.fixed_s + self.per_image_s * (b * b if self.quadratic else b))
        return super().infer(batch)


def test_batch_size_tuning_picks_the_fastest_per_image():
    # A fixed cost per call (GPU-like): the largest batch wins. Per-image cost growing with the batch (a small
    # CPU model): batch 1 wins.
    assert tune_batch_size(TimedPredictor(0.02, 0.001), 8, min_time_s=0.05)[0] == 8
    assert tune_batch_size(TimedPredictor(0.0, 0.002, quadratic=True), 8, min_time_s=0.05)[0] == 1


def test_tuned_batch_size_caps_the_batcher():
    async def main():
        engine = BatchedEngine(
            settings(tune_batch_size=True, max_batch_size=4),
            loader=lambda *args: TimedPredictor(0.0, 0.002, quadratic=True),
        )
        await engine.start()
        assert engine.model_info().max_batch_size == 1
        await engine.close()

    asyncio.run(main())


def test_a_lone_image_runs_directly_on_the_latency_instance_and_load_goes_to_the_batch_instances(monkeypatch):
    monkeypatch.setattr("service.instance_plan.available_cpus", lambda: 4)

    async def main():
        loader = fake_loader(infer_delay_s=0.05)
        engine = BatchedEngine(settings(instances_per_device=2, inference_threads=1, max_batch_size=4), loader=loader)
        await engine.start()
        assert loader.sessions == [(1, False), (1, False), (4, True)]  # (threads, spin): the latency one spins
        batch_a, batch_b, latency = loader.created
        result = await engine.detect(png(140))
        assert round(float(result.scores[0]) * 255) == 140 and result.timing.queue_ms == 0.0
        assert (latency.batch_sizes, batch_a.batch_sizes, batch_b.batch_sizes) == ([1], [], [])
        results = await asyncio.gather(*(engine.detect(png(150 + i)) for i in range(12)))
        assert [round(float(r.scores[0]) * 255) for r in results] == list(range(150, 162))
        batched = batch_a.batch_sizes + batch_b.batch_sizes
        assert sum(batched) + sum(latency.batch_sizes) == 13 and max(batched) > 1  # the load was batched
        snap = engine.telemetry.statistics("fake")
        assert snap.success_count == 13 and snap.inference_count == 13
        await engine.close()

    asyncio.run(main())


@pytest.mark.parametrize("decode_mode", ["pool", "batch"])
def test_a_bad_image_fails_alone_and_its_neighbours_share_a_batch(decode_mode):
    async def main():
        engine = BatchedEngine(
            settings(decode_mode=decode_mode, max_batch_size=4), loader=fake_loader(infer_delay_s=0.1)
        )
        await engine.start()
        predictor = engine._registry.route("fake").pool.workers[0].predictor
        blocker = asyncio.ensure_future(engine.detect(png(101)))  # runs directly: the instance is busy for 0.1 s
        await asyncio.sleep(0.02)
        truncated = EncodedImage(png(2).data[:40], "image/png")
        waiting = [asyncio.ensure_future(engine.detect(image)) for image in (png(170), truncated, png(171))]
        first, good_a, bad, good_b = await asyncio.gather(blocker, *waiting, return_exceptions=True)
        assert isinstance(bad, InvalidImage), bad
        assert [round(float(r.scores[0]) * 255) for r in (first, good_a, good_b)] == [101, 170, 171]
        assert predictor.batch_sizes == [1, 2]
        snap = engine.telemetry.statistics("fake")
        assert (snap.success_count, snap.fail_count, snap.queue_count) == (3, {"OTHER": 1}, 3)
        assert engine.inflight == 0 and engine.model_states()[0].pending == 0
        await engine.close()

    asyncio.run(main())


def test_the_direct_path_honours_the_deadline_and_holds_its_instance_until_the_call_ends():
    async def main():
        engine = await started(settings(), infer_delay_s=0.3)
        predictor = engine._registry.route("fake").pool.workers[0].predictor
        t0 = time.perf_counter()
        with pytest.raises(DeadlineExceeded):
            await engine.detect(png(105), timeout_s=0.05)
        assert time.perf_counter() - t0 < 0.2  # answered at the deadline, not when the compute ends
        # The abandoned call still owns the session: the next image waits for it instead of sharing it.
        assert round(float((await engine.detect(png(106))).scores[0]) * 255) == 106
        assert predictor.batch_sizes == [1, 1]
        assert 'yoloxpai_expired_total{model="fake"} 1.0' in engine.telemetry.render().decode()
        await engine.close()

    asyncio.run(main())


def test_a_batch_waits_behind_the_running_one_on_its_instance_and_counts_that_wait_as_queue_time():
    async def main():
        s = settings(max_batch_size=1, batches_per_instance=2, direct_when_idle=False)
        engine = await started(s, infer_delay_s=0.2)
        runtime = engine._registry.route("fake")
        first = asyncio.ensure_future(engine.detect(png(110)))
        second = asyncio.ensure_future(engine.detect(png(120)))
        await asyncio.sleep(0.1)
        (worker,) = runtime.pool.workers
        # Both batches are on the instance: the second one queued on its thread, not in the batcher.
        assert runtime.batcher.depth == 0 and runtime.pool._held[worker] == 2
        a, b = await asyncio.gather(first, second)
        assert round(float(b.scores[0]) * 255) == 120
        assert b.timing.queue_ms >= 150.0  # it waited ~0.2 s behind the first batch
        assert a.timing.queue_ms < 100.0
        await engine.close()

    asyncio.run(main())
