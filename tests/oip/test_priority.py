"""Request priority (Triton's ``priority_levels``): the batcher takes urgent levels first when it forms a batch,
the engine maps a request's ``priority`` to a level as Triton does (0 or beyond the levels = the default level),
and the OIP ``priority`` parameter reaches the batcher."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

import cv2
import pytest

from service.batched_engine import BatchedEngine
from service.batcher import DynamicBatcher, QueuedItem
from service.errors import InvalidOption
from service.imaging import EncodedImage
from service.oip.detector_io import InferRequest
from service.oip.serving import infer
from service.oip.tensors import InputTensor
from service.settings import Settings
from service.workers import Worker, WorkerPool
from tests.service.fakes import fake_loader, marker_image

FAKE_BUNDLE = Path(tempfile.mkdtemp()) / "fake"  # the fake loader only needs a directory named like the model
FAKE_BUNDLE.mkdir()


class Recorder:
    """``execute`` that records the payloads of each batch (slowly, so the queue fills meanwhile)."""

    def __init__(self, delay_s: float) -> None:
        self.batches: list[list[object]] = []
        self.delay_s = delay_s

    async def __call__(self, worker: Worker, items: list[QueuedItem]) -> None:
        live = [item for item in items if not item.future.done()]
        self.batches.append([item.payload for item in live])
        await asyncio.sleep(self.delay_s)
        for item in live:
            item.future.set_result(item.payload)


def make_batcher(recorder: Recorder, max_batch_size: int) -> DynamicBatcher:
    pool = WorkerPool([Worker("w0", "cpu", None)])
    return DynamicBatcher(
        pool=pool, execute=recorder, max_batch_size=max_batch_size, max_queue_delay_s=0.0, capacity=16
    )


def test_the_batcher_takes_urgent_levels_first_and_keeps_arrival_order_within_a_level():
    async def main():
        rec = Recorder(delay_s=0.1)
        b = make_batcher(rec, max_batch_size=2)
        b.start()
        loop = asyncio.get_running_loop()
        b.reserve()
        running = b.submit("running", loop.time() + 10)
        await asyncio.sleep(0.02)  # the only worker is busy: everything below queues up, in this arrival order
        queued = []
        for payload, level in (("low-a", 3), ("normal-a", 2), ("low-b", 3), ("urgent-a", 1), ("urgent-b", 1)):
            b.reserve()
            queued.append(b.submit(payload, loop.time() + 10, priority_level=level))
        assert b.depth == 5
        await asyncio.gather(running, *queued)
        # The urgent pair overtook everything queued before it; then level 2, then level 3 in arrival order.
        assert rec.batches == [["running"], ["urgent-a", "urgent-b"], ["normal-a", "low-a"], ["low-b"]]
        await b.stop()

    asyncio.run(main())


def test_a_cancelled_item_leaves_its_level():
    async def main():
        rec = Recorder(delay_s=0.1)
        b = make_batcher(rec, max_batch_size=4)
        b.start()
        loop = asyncio.get_running_loop()
        b.reserve(3)
        running = b.submit("running", loop.time() + 10)
        await asyncio.sleep(0.02)
        gone = b.submit("gone", loop.time() + 10, priority_level=1)
        kept = b.submit("kept", loop.time() + 10, priority_level=5)
        gone.cancel()
        await asyncio.sleep(0)
        assert b.depth == 1 and b.pending == 1
        assert await asyncio.gather(running, kept) == ["running", "kept"]
        assert rec.batches == [["running"], ["kept"]]
        await b.stop()

    asyncio.run(main())


def png(marker: int) -> EncodedImage:
    return EncodedImage(cv2.imencode(".png", marker_image(marker))[1].tobytes(), "image/png")


async def started_engine() -> BatchedEngine:
    settings = Settings(
        bundles=[str(FAKE_BUNDLE)],
        tune_batch_size=False,
        max_batch_size=1,
        instances_per_device=1,
        priority_levels=3,
        default_priority_level=2,
    )
    engine = BatchedEngine(settings, loader=fake_loader(infer_delay_s=0.25))
    await engine.start()
    return engine


async def run_in_order(engine: BatchedEngine, calls: list[tuple[int, object]]) -> list[int]:
    """Start a blocker, then every ``(marker, call)``; returns the markers in completion order."""
    finished: list[int] = []

    async def one(marker: int, call) -> None:
        await call
        finished.append(marker)

    blocker = asyncio.ensure_future(engine.detect(png(1)))
    await asyncio.sleep(0.04)  # the blocker is computing: the rest must queue behind it
    await asyncio.gather(*(one(marker, call) for marker, call in calls), blocker)
    return finished


def test_the_engine_maps_priority_to_levels_as_triton_does():
    async def main():
        engine = await started_engine()
        assert [engine.priority_level(p) for p in (0, 1, 2, 3, 4, 2**64 - 1)] == [2, 1, 2, 3, 2, 2]
        with pytest.raises(InvalidOption):
            engine.priority_level(-1)
        with pytest.raises(InvalidOption):
            await engine.detect_many([png(5), png(6)], priority=-1)
        assert engine.model_states()[0].pending == 0 and engine.inflight == 0  # refused before admission
        level = {10: 3, 20: 2, 30: 1, 40: 2}  # marker -> expected level (priorities 3, 0, 1, 99)
        calls = [
            (10, engine.detect(png(10), priority=3)),
            (20, engine.detect(png(20))),
            (30, engine.detect(png(30), priority=1)),
            (40, engine.detect(png(40), priority=99)),
        ]
        finished = await run_in_order(engine, calls)
        assert [level[m] for m in finished] == [1, 2, 2, 3], finished
        await engine.close()

    asyncio.run(main())


def test_the_oip_priority_parameter_reaches_the_batcher():
    async def main():
        engine = await started_engine()

        def request(marker: int, priority: int) -> InferRequest:
            tensor = InputTensor("IMAGE", "BYTES", (1,), (png(marker).data,))
            return InferRequest("fake", "", str(marker), (tensor,), {"priority": priority})

        calls = [(m, infer(engine, request(m, p), max_images=4)) for m, p in ((10, 3), (20, 2), (30, 1))]
        assert await run_in_order(engine, calls) == [30, 20, 10]
        await engine.close()

    asyncio.run(main())
