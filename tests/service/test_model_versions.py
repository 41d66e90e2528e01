"""Model versions and model control in the engine, against the fake predictor: versions served by policy and named
by requests, explicit load / unload, polling, the atomic switch, the drain of an unloaded version (its requests
finish on it, then its unit and predictors are freed), and a version that fails to load changing nothing."""

from __future__ import annotations

import asyncio
import gc
import shutil
import weakref
from pathlib import Path

import pytest

from service.batched_engine import BatchedEngine
from service.bundles import ConfigError
from service.errors import ModelControlDisabled, ModelLoadFailed, ModelNotFound
from service.imaging import RawImage
from service.settings import Settings
from tests.service.fakes import fake_loader, marker_image

BROKEN = "BROKEN"  # a version directory holding this file fails to load


def image(marker: int = 200) -> RawImage:
    return RawImage(marker_image(marker).tobytes(), 40, 24)


def add_version(repo: Path, model: str, version: str, *, broken: bool = False) -> Path:
    path = repo / model / version
    path.mkdir(parents=True)
    (path / "model.onnx").write_bytes(version.encode())
    if broken:
        (path / BROKEN).write_text("sha256 mismatch")
    return path


def loader(**fake_kwargs):
    """The fake loader, refusing directories marked BROKEN as the real one refuses a corrupt bundle."""
    load = fake_loader(**fake_kwargs)

    def checked(path: Path, *args):
        if (Path(path) / BROKEN).exists():
            raise ConfigError(f"cannot load bundle {path}: bundle file corrupt (sha256 mismatch)")
        return load(path, *args)

    checked.created = load.created  # type: ignore[attr-defined]
    return checked


def settings(repo: Path, **kwargs) -> Settings:
    values = dict(model_repository=repo, tune_batch_size=False, instances_per_device=1, max_batch_size=2)
    values.update(kwargs)
    return Settings(**values)


async def started(s: Settings, load) -> BatchedEngine:
    engine = BatchedEngine(s, loader=load)
    await engine.start()
    return engine


def states(engine: BatchedEngine) -> dict[tuple[str, str], str]:
    return {(row.name, row.version): row.state for row in engine.repository_index()}


async def until(condition, timeout_s: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


def test_explicit_load_switches_atomically_and_the_old_version_drains_then_is_freed(tmp_path):
    async def main():
        add_version(tmp_path, "m", "1")
        load = loader()
        engine = await started(settings(tmp_path, model_control="explicit", load_models=["m"]), load)
        assert (await engine.detect(image())).model_version == "1"
        old = engine._registry.route("m", "1")
        old_predictors = [w.predictor for w in (*old.pool.workers, old.latency) if w is not None]
        for predictor in old_predictors:
            predictor.infer_delay_s = 0.5  # a request admitted on v1 is still running when v2 takes over
        running = asyncio.ensure_future(engine.detect(image()))
        await asyncio.sleep(0.05)
        add_version(tmp_path, "m", "2")
        await engine.load_model("m")  # returns once version 2 serves
        assert states(engine) == {("m", "2"): "READY", ("m", "1"): "UNLOADING"}
        assert (await engine.detect(image())).model_version == "2"  # new requests: the new version
        assert engine.is_ready() and [i.version for i in engine.models()] == ["2"]
        assert (await running).model_version == "1"  # admitted on v1, answered by v1
        refs = [weakref.ref(old), *(weakref.ref(p) for p in old_predictors)]
        del old, old_predictors, predictor
        load.created.clear()  # the fake loader's own list of what it made
        await until(lambda: states(engine)[("m", "1")] == "UNAVAILABLE")
        reason = {(r.name, r.version): r.reason for r in engine.repository_index()}[("m", "1")]
        assert reason == "unloaded"
        gc.collect()
        assert [ref() for ref in refs] == [None] * len(refs), "the unloaded version is still referenced"
        await engine.close()

    asyncio.run(main())


def test_a_version_that_fails_to_load_leaves_the_serving_one_untouched(tmp_path):
    async def main():
        add_version(tmp_path, "m", "1")
        bad = add_version(tmp_path, "m", "2", broken=True)
        engine = await started(settings(tmp_path, model_control="explicit", load_models=["*"]), loader())
        # latest:1 picks version 2, which fails: on a fresh start the newest older version that loads serves.
        assert states(engine) == {("m", "2"): "UNAVAILABLE", ("m", "1"): "READY"}
        with pytest.raises(ModelLoadFailed, match="sha256 mismatch"):
            await engine.load_model("m")
        reason = {(r.name, r.version): r.reason for r in engine.repository_index()}[("m", "2")]
        assert "sha256 mismatch" in reason and states(engine)[("m", "1")] == "READY"
        assert (await engine.detect(image(), model="m")).model_version == "1" and engine.is_ready()
        (bad / BROKEN).unlink()  # fixed in place: the next load takes it
        await engine.load_model("m")
        assert (await engine.detect(image(), model="m")).model_version == "2"
        await engine.close()

    asyncio.run(main())


def test_polling_follows_the_repository(tmp_path):
    async def main():
        add_version(tmp_path, "m", "1")
        load = loader()
        engine = await started(settings(tmp_path, model_control="poll", repository_poll_s=3600), load)
        poll = engine._control.poll  # one scan, as the poller runs it every --repository-poll-s
        loads = len(load.created)
        await poll()
        assert len(load.created) == loads  # nothing changed: nothing loaded
        v2 = add_version(tmp_path, "m", "2")
        await poll()
        assert (await engine.detect(image())).model_version == "2"
        first = engine._registry.route("m", "2")
        (v2 / "model.onnx").write_bytes(b"retrained in place")
        await poll()
        assert engine._registry.route("m", "2") is not first  # changed files: reloaded beside, then switched
        add_version(tmp_path, "m", "3", broken=True)
        await poll()
        loads = len(load.created)
        await poll()
        assert len(load.created) == loads  # the same broken files are not retried every poll
        assert states(engine)[("m", "3")] == "UNAVAILABLE"
        assert (await engine.detect(image())).model_version == "2"
        (tmp_path / "m" / "config.json").write_text("{not json")
        await poll()
        rows = {(r.name, r.version): r for r in engine.repository_index()}
        assert rows[("m", "")].state == "UNAVAILABLE" and "unreadable JSON" in rows[("m", "")].reason
        assert (await engine.detect(image())).model_version == "2"
        add_version(tmp_path, "other", "1")
        await poll()
        assert (await engine.detect(image(), model="other")).model_version == "1"
        shutil.rmtree(tmp_path / "other")
        await poll()
        with pytest.raises(ModelNotFound):
            await engine.detect(image(), model="other")
        assert states(engine)[("other", "1")] in ("UNLOADING", "UNAVAILABLE")
        with pytest.raises(ModelControlDisabled):
            await engine.load_model("m")  # the files are the truth in poll mode
        await engine.close()

    asyncio.run(main())


def test_a_policy_serves_several_versions_and_requests_may_name_one(tmp_path):
    async def main():
        for version in ("1", "2", "3"):
            add_version(tmp_path, "m", version)
        engine = await started(settings(tmp_path, version_policy="latest:2"), loader())
        assert [(i.name, i.version) for i in engine.models()] == [("m", "3"), ("m", "2")]
        assert (await engine.detect(image())).model_version == "3"
        assert (await engine.detect(image(), model="m", version="2")).model_version == "2"
        assert engine.model_info("m", "2").version == "2"
        with pytest.raises(ModelNotFound, match="version 1 is not found"):
            await engine.detect(image(), model="m", version="1")
        text = engine.telemetry.render().decode()
        assert 'nv_inference_request_success{model="m",version="3"} 1' in text
        assert 'nv_inference_request_success{model="m",version="2"} 1' in text
        assert text.count('yoloxpai_queue_depth{model="m"}') == 1  # versions add up in the per-model gauges
        assert engine.telemetry.statistics("m", "2").success_count == 1
        with pytest.raises(ModelControlDisabled, match="--model-control none"):
            await engine.unload_model("m")
        await engine.close()

    asyncio.run(main())


def test_start_fails_fast_without_model_control_and_reports_with_it(tmp_path):
    async def main():
        add_version(tmp_path, "good", "1")
        add_version(tmp_path, "bad", "1", broken=True)
        with pytest.raises(ConfigError, match="cannot load model 'bad'"):
            await started(settings(tmp_path), loader())
        with pytest.raises(ConfigError, match="--load-model"):
            await started(settings(tmp_path, model_control="explicit", load_models=["nope"]), loader())
        engine = await started(settings(tmp_path, model_control="poll"), loader())
        assert states(engine) == {("bad", "1"): "UNAVAILABLE", ("good", "1"): "READY"}
        assert engine.is_ready()
        await engine.close()
        explicit = await started(settings(tmp_path, model_control="explicit"), loader())
        assert not explicit.is_ready() and "no model is loaded" in explicit.health_reason()
        assert [(r.name, r.state, r.reason) for r in explicit.repository_index()] == [
            ("bad", "UNAVAILABLE", "not loaded"),
            ("good", "UNAVAILABLE", "not loaded"),
        ]
        await explicit.load_model("good")
        assert explicit.is_ready() and [r.state for r in explicit.repository_index(ready_only=True)] == ["READY"]
        with pytest.raises(ModelNotFound):
            await explicit.load_model("nope")
        await explicit.unload_model("good")
        assert not explicit.is_ready()
        await explicit.close()

    asyncio.run(main())


def test_fixed_bundles_sit_beside_the_repository_and_cannot_be_unloaded(tmp_path):
    async def main():
        fixed = tmp_path / "fixed" / "fake"
        fixed.mkdir(parents=True)
        add_version(tmp_path / "repo", "m", "1")
        s = settings(tmp_path / "repo", model_control="explicit", load_models=["*"], bundles=[str(fixed)])
        engine = await started(s, loader())
        assert [i.name for i in engine.models()] == ["fake", "m"]  # the first --bundle is the default model
        with pytest.raises(ModelControlDisabled, match="fixed --bundle"):
            await engine.unload_model("fake")
        await engine.close()

    asyncio.run(main())
