"""The engine implementation: model lifecycle, admission, deadlines and drain over one ``ModelUnit`` per served
model version.

Request path: ``_admit`` (route to the model version's unit; ready? draining? options valid? queue capacity: all or
nothing) -> one ``ModelUnit.submit`` per image (the unit picks the idle direct path or its batcher, decodes, runs,
records Triton's counters) -> ``_settle`` releases what the request still holds. A request keeps the unit it was
admitted on, whatever changes meanwhile. Which units serve is ``service.model_registry``'s (the atomic switch and
the drain of unloaded versions), changed by ``service.model_control`` (Triton's model control modes). Calls go one
way: front ends -> engine -> registry -> unit -> batch execution; the units never call back. The front ends record
only their transport-level request metric (``service.accounting``) through ``telemetry``. Imports ``model`` only
through ``service.bundles``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from service import bundles
from service.bundles import BundleSpec, ConfigError, PredictorLoader
from service.engine import DetectResult, Engine, ModelInfo, ModelStatus, Submission, Telemetry
from service.errors import InvalidImage, InvalidOption, ModelNotFound, NotReady, Overloaded, ServiceError
from service.imaging import ImageInput, image_bytes
from service.metrics import Metrics, ModelState
from service.model_control import ModelControl
from service.model_loading import load_model_unit
from service.model_registry import ModelRegistry
from service.model_unit import ModelUnit, Ticket, failure_reason
from service.options import ResolvedOptions
from service.settings import Settings
from service.watchdog import Watchdog

log = logging.getLogger(__name__)
CLOSE_TIMEOUT_S = 5.0


class BatchedEngine(Engine):
    """Serves the configured bundles through per-model dynamic batchers."""

    def __init__(
        self, settings: Settings, *, loader: PredictorLoader | None = None, metrics: Metrics | None = None
    ) -> None:
        self.settings = settings
        self.metrics = metrics or Metrics()
        self._loader = loader or bundles.load_predictor
        self._decode_pool = ThreadPoolExecutor(settings.decode_threads, thread_name_prefix="decode")
        # A retired version waits for its admitted requests at most as long as their deadline.
        drain_s = settings.request_timeout_ms / 1000.0 + 1.0
        self._registry = ModelRegistry(self._load_unit, self._start_unit, drain_s, CLOSE_TIMEOUT_S)
        self._control = ModelControl(settings, self._registry)
        self._ready = False
        self._shutting_down = False
        self._broken: str | None = None  # why a batcher task ended, if one did
        self._draining = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._inflight = 0
        self._inflight_bytes = 0  # encoded bytes of the admitted images (settings.max_inflight_bytes)
        self.watchdog = Watchdog(settings, self._watched)
        self._watchdog_task: asyncio.Task | None = None
        self.metrics.bind(self)  # last: the collector reads the state set up above

    # -- lifecycle -----------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Load and warm the fixed bundles and the repository's models (as the model control mode says), start
        the batchers, then report ready."""
        await self._control.start(bundles.bundle_specs(self.settings))
        default = self.settings.default_model
        if default is not None and self._registry.route(default) is None and self.settings.model_control == "none":
            raise ConfigError(f"default model {default!r} is not among the served models {self._registry.names()}")
        self._watchdog_task = asyncio.get_running_loop().create_task(self.watchdog.run(), name="watchdog")
        self._ready = True

    async def _load_unit(self, spec: BundleSpec) -> ModelUnit:
        return await load_model_unit(spec, self.settings, self.metrics, self._loader, self._decode_pool)

    def _start_unit(self, unit: ModelUnit) -> None:
        unit.batcher.start().add_done_callback(lambda task: self._batcher_ended(unit, task))

    def _batcher_ended(self, unit: ModelUnit, task: asyncio.Task) -> None:
        if task.cancelled() and (self._shutting_down or not self._registry.is_routed(unit)):
            return  # stopped on purpose: shutdown, or its version was unloaded
        # A batcher must never end while serving: stop reporting ready so the orchestrator replaces us.
        reason = "cancelled" if task.cancelled() else repr(task.exception())
        self._broken = f"batcher of model {unit.name!r} version {unit.info.version} ended: {reason}"
        log.error("%s; reporting not ready", self._broken)

    def _watched(self) -> dict[tuple[str, str], ModelUnit]:
        return {(unit.name, unit.info.version): unit for unit in self._registry.serving()}

    def begin_shutdown(self) -> None:
        """Report not ready (load balancers stop sending); requests are still accepted until ``drain``."""
        self._shutting_down = True

    async def drain(self, timeout_s: float) -> bool:
        """Stop admitting and polling, let streams finish, and wait (bounded) until every admitted request is
        answered."""
        self._shutting_down = True
        self._draining.set()
        await self._control.stop()  # no version switches while the process winds down
        try:
            await asyncio.wait_for(self._idle.wait(), timeout=timeout_s)
        except asyncio.TimeoutError:
            log.warning("drain timeout: %d request(s) still in flight", self._inflight)
            return False
        return True

    async def close(self) -> None:
        """Stop batchers and threads (after ``drain``), waiting at most ``CLOSE_TIMEOUT_S`` for running batches: a
        hung runtime call must not keep the process from exiting."""
        self._shutting_down = True
        if self._watchdog_task is not None:
            self._watchdog_task.cancel()
        self.watchdog.stop()
        await self._control.stop()
        await self._registry.close(CLOSE_TIMEOUT_S)
        self._decode_pool.shutdown(wait=False, cancel_futures=True)

    # -- Engine interface ----------------------------------------------------------------------------------

    def is_live(self) -> bool:
        """The process is up and no model's runtime is beyond repair (``service.watchdog``)."""
        return self.watchdog.live

    def is_ready(self) -> bool:
        """Loaded, warmed, a model served, batchers and polling alive, every model healthy, not shutting down."""
        broken = self._broken or self._control.broken
        serving = bool(self._registry.names())
        return self._ready and serving and not self._shutting_down and broken is None and self.watchdog.ready

    def health_reason(self) -> str:
        """Why the server is not ready or not live (empty when it is both)."""
        if self._ready and not self._registry.names():
            return "no model is loaded"
        return self._broken or self._control.broken or self.watchdog.reasons()

    @property
    def draining(self) -> asyncio.Event:
        """Set when drain begins."""
        return self._draining

    @property
    def inflight(self) -> int:
        """Admitted images not yet answered, over all models."""
        return self._inflight

    def models(self) -> list[ModelInfo]:
        """Served model versions: the default model first, each model's versions newest first."""
        infos = [unit.info for unit in self._registry.serving()]
        infos.sort(key=lambda info: info.name != self._default_name())  # stable: versions stay newest first
        return infos

    def model_info(self, name: str | None = None, version: str | None = None) -> ModelInfo:
        """One served model version (``None``: the default model, its newest served version)."""
        return self._unit(name, version).info

    def repository_index(self, ready_only: bool = False) -> list[ModelStatus]:
        """Every model version known, with its state and reason (Triton's repository index)."""
        return self._control.index(ready_only)

    async def load_model(self, name: str) -> None:
        """Load or reload a repository model beside what serves (explicit model control)."""
        if self._draining.is_set():
            raise NotReady("server is draining", draining=True)
        await self._control.load(name)

    async def unload_model(self, name: str) -> None:
        """Take a repository model out of service; its versions drain, then are freed (explicit model control)."""
        await self._control.unload(name)

    @property
    def telemetry(self) -> Telemetry:
        """The server's metrics (request metrics, statistics, the Prometheus text)."""
        return self.metrics

    def model_states(self) -> list[ModelState]:
        """Scrape-time state of every model version (``metrics.StateSource``): the served ones (each model's
        newest first), then those still draining, unless a reload of the same version replaced them."""
        served = self._registry.serving()
        keys = {(r.name, r.info.version) for r in served}
        draining = [r for r in self._registry.retiring() if (r.name, r.info.version) not in keys]
        return [
            ModelState(
                name=r.name,
                version=r.info.version,
                queue_depth=r.batcher.depth,
                inflight=r.inflight,
                pending=r.batcher.pending,
                load_seconds=r.load_seconds,
                stats=r.stats.snapshot(),
                oldest_batch_age_s=r.health.oldest_call_s(),
            )
            for r in [*served, *draining]
        ]

    async def submit_one(self, image: ImageInput, request: Submission) -> DetectResult:
        """One image through its model's unit."""
        level = self.priority_level(request.priority)  # before admission: a refusal must not hold a reservation
        nbytes = image_bytes(image)
        unit, resolved, deadline_s = self._admit(request, 1, nbytes)
        ticket = Ticket(priority_level=level)
        try:
            return await unit.submit(image, resolved, deadline_s, ticket)
        finally:
            self._settle(unit, [ticket], nbytes)

    async def submit(self, images: Sequence[ImageInput], request: Submission) -> list[DetectResult]:
        """Several images, admitted together; the first error cancels the rest."""
        if not images:
            raise InvalidImage("the request holds no image")
        if len(images) == 1:
            return [await self.submit_one(images[0], request)]
        level = self.priority_level(request.priority)
        nbytes = sum(image_bytes(image) for image in images)
        unit, resolved, deadline_s = self._admit(request, len(images), nbytes)
        tickets = [Ticket(priority_level=level) for _ in images]
        loop = asyncio.get_running_loop()
        tasks = [
            loop.create_task(unit.submit(image, resolved, deadline_s, ticket))
            for image, ticket in zip(images, tickets, strict=True)
        ]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        finally:
            for task in tasks:
                task.cancel()  # no-op for finished ones
            outcomes = await asyncio.gather(*tasks, return_exceptions=True)
            self._settle(unit, tickets, nbytes)
        for outcome in outcomes:
            if isinstance(outcome, BaseException) and not isinstance(outcome, asyncio.CancelledError):
                raise outcome
        return list(outcomes)  # type: ignore[arg-type]

    # -- request path --------------------------------------------------------------------------------------

    def _default_name(self) -> str | None:
        names = self._registry.names()
        return self.settings.default_model or (names[0] if names else None)

    def _unit(self, name: str | None, version: str | None = None) -> ModelUnit:
        key = name or self._default_name()
        unit = self._registry.route(key, version) if key else None
        if unit is None:
            if not self._ready:
                raise NotReady("server is not ready: models are loading")
            served = self._registry.versions(key) if key else []
            if served:
                raise ModelNotFound(f"'{key}' version {version} is not found (served versions: {', '.join(served)})")
            if key is None:
                raise ModelNotFound("no model is loaded")
            raise ModelNotFound(f"no model named {key!r}; served: {sorted(self._registry.names())}")
        return unit

    def priority_level(self, priority: int) -> int:
        """Triton's rule: 1..priority_levels is a level (1 most urgent); 0 or beyond -> the default level."""
        if isinstance(priority, bool) or not isinstance(priority, int) or priority < 0:
            raise InvalidOption(f"priority must be an unsigned integer, got {priority!r}")
        if 1 <= priority <= self.settings.priority_levels:
            return priority
        return self.settings.default_priority_level

    def _timeout_s(self, client_timeout_s: float | None) -> float:
        default_s = self.settings.request_timeout_ms / 1000.0
        return default_s if client_timeout_s is None else min(client_timeout_s, default_s)

    def _admit(self, request: Submission, n: int, nbytes: int) -> tuple[ModelUnit, ResolvedOptions, float]:
        unit = self._unit(request.model, request.version)
        try:
            if self._draining.is_set():
                self._reject(unit, "draining", n)
                raise NotReady("server is draining; retry on another replica", draining=True)
            if not self._ready or self._broken is not None:
                self._reject(unit, "not_ready", n)
                raise NotReady(self._broken or "server is not ready: models are loading")
            verdict = self.watchdog.verdicts.get((unit.name, unit.info.version))
            if verdict is not None and not verdict.ready:
                self._reject(unit, "unhealthy", n)
                raise NotReady(f"model {unit.name!r} is unhealthy ({verdict.reason}); retry on another replica")
            resolved = unit.resolve_options(request.options)
            budget = self.settings.max_inflight_bytes
            if self._inflight_bytes and self._inflight_bytes + nbytes > budget:  # one request always fits alone
                self._reject(unit, "memory", n)
                raise Overloaded(
                    f"{self._inflight_bytes + nbytes} image bytes would be in flight; the budget is {budget}"
                )
            try:
                unit.batcher.reserve(n)
            except Overloaded:
                self._reject(unit, "queue_full", n)
                raise
        except ServiceError as exc:
            for _ in range(n):
                unit.stats.record_failure(failure_reason(exc))
            raise
        unit.inflight += n
        self._inflight += n
        self._inflight_bytes += nbytes
        self._idle.clear()
        return unit, resolved, asyncio.get_running_loop().time() + self._timeout_s(request.timeout_s)

    def _reject(self, unit: ModelUnit, reason: str, n: int) -> None:
        self.metrics.rejected.labels(unit.name, reason).inc(n)

    def _settle(self, unit: ModelUnit, tickets: list[Ticket], nbytes: int) -> None:
        unsubmitted = sum(t.reserved for t in tickets)
        if unsubmitted:
            unit.batcher.release(unsubmitted)
        unit.inflight -= len(tickets)
        if unit.inflight == 0:
            self._registry.settled(unit)  # an unloaded version may close now
        self._inflight -= len(tickets)
        self._inflight_bytes -= nbytes
        if self._inflight == 0:
            self._idle.set()
