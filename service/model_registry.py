"""Loaded model versions: which ``ModelUnit`` serves each (model, version), the atomic switch when versions change,
and the drain that frees a version taken out of service.

A request is routed once, at admission (``route``), and keeps its unit to the end (the engine counts it in
``unit.inflight``). A change (``apply``) loads every new or changed version first, beside what serves (state
LOADING); then it replaces the model's routing table in one assignment on the event loop, so a request sees the old
table or the new one, never a mix; then it retires the units no longer routed: each drains (what it admitted
finishes on it), its batcher stops, its worker threads end and the registry drops it, which frees its predictors
(state UNLOADING until then, UNAVAILABLE "unloaded" after). A version that fails to load is reported (UNAVAILABLE
and the reason; the same files are not tried again until they change, unless a load request forces it) and changes
nothing else: the versions that served keep serving; where none served yet, a ``latest:N`` model falls back to the
newest older version that loads. Fixed bundles (``--bundle``) are routed once and never changed. One change at a
time: callers hold ``lock``. Imports nothing from ``model``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from service.bundles import BundleSpec, ConfigError
from service.engine import ModelStatus
from service.model_unit import ModelUnit
from service.repository import Fingerprint, ModelEntry, VersionDir

log = logging.getLogger(__name__)

READY, LOADING, UNLOADING, UNAVAILABLE = "READY", "LOADING", "UNLOADING", "UNAVAILABLE"
UnitLoader = Callable[[BundleSpec], Awaitable[ModelUnit]]


def _newest_first(units: dict[str, ModelUnit]) -> dict[str, ModelUnit]:
    return dict(sorted(units.items(), key=lambda item: int(item[0]) if item[0].isdigit() else -1, reverse=True))


class ModelRegistry:
    """The routing table of served units, the status of every version, and the units being drained."""

    def __init__(
        self, load: UnitLoader, start: Callable[[ModelUnit], None], drain_timeout_s: float, close_timeout_s: float
    ) -> None:
        self._load = load  # BundleSpec -> a loaded, warmed unit (its batcher not started)
        self._start = start  # starts a unit's batcher, watched by the engine
        self._drain_timeout_s = drain_timeout_s  # longest wait for a retired unit's admitted requests
        self._close_timeout_s = close_timeout_s  # longest wait for a retired unit's running batches
        self._routes: dict[str, dict[str, ModelUnit]] = {}  # name -> version -> unit, newest first
        self._fingerprints: dict[tuple[str, str], Fingerprint] = {}  # of the routed repository units
        self._failed: dict[tuple[str, str], tuple[Fingerprint, str]] = {}  # files that failed, why: not retried
        self._status: dict[str, dict[str, ModelStatus]] = {}  # name -> version -> the index entry
        self._fixed: set[str] = set()
        self._retiring: dict[ModelUnit, asyncio.Event] = {}  # set when the unit has nothing admitted
        self._drains: set[asyncio.Task] = set()
        self.lock = asyncio.Lock()

    # -- routing -------------------------------------------------------------------------------------------

    def route(self, name: str, version: str | None = None) -> ModelUnit | None:
        """The unit serving ``name`` at ``version`` (``None``: the newest served), if any."""
        versions = self._routes.get(name)
        if not versions:
            return None
        return next(iter(versions.values())) if version is None else versions.get(version)

    def names(self) -> list[str]:
        """Models with at least one served version: fixed bundles first, then in the order they were loaded."""
        return list(self._routes)

    def versions(self, name: str) -> list[str]:
        """The served versions of ``name``, newest first."""
        return list(self._routes.get(name, ()))

    def serving(self) -> list[ModelUnit]:
        """Every routed unit, model by model, newest version first."""
        return [unit for versions in self._routes.values() for unit in versions.values()]

    def retiring(self) -> list[ModelUnit]:
        """Units out of the routing table that still drain (or close)."""
        return list(self._retiring)

    def is_routed(self, unit: ModelUnit) -> bool:
        """Whether ``unit`` still takes new requests."""
        return self.route(unit.name, unit.info.version) is unit

    def is_fixed(self, name: str) -> bool:
        """Whether ``name`` is a fixed bundle (``--bundle``), outside the repository."""
        return name in self._fixed

    def index(self) -> list[ModelStatus]:
        """Every version the registry has seen, by model name, each model's model-level entry ("") first, then its
        versions newest first."""
        rows = []
        for name in sorted(self._status):
            versions = self._status[name]
            rows += [versions[v] for v in sorted(versions, key=lambda v: -int(v) if v.isdigit() else -(2**63))]
        return rows

    def settled(self, unit: ModelUnit) -> None:
        """The engine's note that ``unit`` has nothing admitted any more: a retiring unit may close now."""
        event = self._retiring.get(unit)
        if event is not None:
            event.set()

    # -- changes -------------------------------------------------------------------------------------------

    async def add_fixed(self, spec: BundleSpec) -> ModelUnit:
        """Load and route a fixed bundle (a failure raises: there is nothing to fall back to)."""
        unit = await self._load(spec)
        if unit.name in self._routes:
            unit.close()
            raise ConfigError(f"two bundles are served as {unit.name!r}: name them with --bundle NAME=PATH")
        self._start(unit)
        self._routes[unit.name] = {unit.info.version: unit}
        self._fixed.add(unit.name)
        self._note(unit.name, unit.info.version, READY)
        return unit

    async def apply(self, entry: ModelEntry, *, force: bool = False) -> list[str]:
        """Serve ``entry``'s wanted versions: load what is new or changed beside what serves, switch, retire the
        rest. Returns the errors (empty: the model serves exactly its wanted versions). With an error, every
        version that served and is still on disk keeps serving. ``force`` retries files that failed before."""
        name = entry.name
        self._status.setdefault(name, {}).pop("", None)  # a model-level problem of an earlier scan
        if entry.error:
            self._note(name, "", UNAVAILABLE, f"{entry.error}; served versions unchanged")
            return [entry.error]
        current = self._routes.get(name, {})
        errors = [f"version {v} is not in the repository" for v in entry.missing]
        for version in entry.missing:
            self._note(name, version, UNAVAILABLE, "not in the repository")
        if not entry.wanted:
            errors.append("no version directory (REPO/<model>/<version>/ or a bundle in REPO/<model>/)")
            self._note(name, "", UNAVAILABLE, errors[-1])
        fresh: dict[str, ModelUnit] = {}
        try:
            errors += await self._load_new(name, entry.wanted, current, fresh, force)
            wanted = {vdir.version for vdir in entry.wanted}
            found = set(entry.found) if errors else set()  # with an error, what served and is on disk serves on
            keep = {v: u for v, u in current.items() if v not in fresh and (v in wanted or v in found)}
            for vdir in entry.fallback if errors and not keep and not fresh else ():  # never dark: an older one
                failures = await self._load_new(name, (vdir,), {}, fresh, force)
                errors += failures
                if not failures:
                    break
        except BaseException:  # cancelled (shutdown) mid-change: what was loaded for it never serves
            for unit in fresh.values():
                unit.close()
            raise
        self._switch(name, _newest_first({**keep, **fresh}), "unloaded")
        return errors

    async def _load_new(
        self,
        name: str,
        versions: tuple[VersionDir, ...],
        current: dict[str, ModelUnit],
        fresh: dict[str, ModelUnit],
        force: bool,
    ) -> list[str]:
        # Load each version that is new or changed into ``fresh``; returns the errors.
        errors = []
        for vdir in versions:
            key = (name, vdir.version)
            if vdir.version in current and self._fingerprints.get(key) == vdir.fingerprint:
                continue  # unchanged: keeps serving
            failed, why = self._failed.get(key, (None, ""))
            if not force and failed == vdir.fingerprint:
                errors.append(f"version {vdir.version}: {why}")
                continue  # the same files failed before
            if vdir.version not in current:
                self._note(name, vdir.version, LOADING)
            try:
                unit = await self._load(BundleSpec(vdir.path, name, vdir.version))
            except Exception as exc:  # a bad bundle or a runtime that cannot load it: reported, nothing changes
                log.warning("model %s version %s failed to load: %s", name, vdir.version, exc)
                self._failed[key] = (vdir.fingerprint, str(exc))
                errors.append(f"version {vdir.version}: {exc}")
                served = vdir.version in current
                self._note(name, vdir.version, READY if served else UNAVAILABLE, str(exc), reload=served)
                continue
            self._failed.pop(key, None)
            self._fingerprints[key] = vdir.fingerprint
            fresh[vdir.version] = unit
        return errors

    def retire_model(self, name: str, reason: str) -> None:
        """Stop routing to every version of ``name`` (each drains, then is freed)."""
        self._status.setdefault(name, {}).pop("", None)
        self._switch(name, {}, reason)

    def _switch(self, name: str, routes: dict[str, ModelUnit], reason: str) -> None:
        # The atomic part: one assignment; then the units left out drain and close on their own.
        old = self._routes.get(name, {})
        for unit in routes.values():
            if unit not in old.values():
                self._start(unit)
        if routes:
            self._routes[name] = routes
        else:
            self._routes.pop(name, None)
        for version, unit in routes.items():
            if old.get(version) is not unit:
                self._note(name, version, READY)
                log.info("model %s version %s serves (%s)", name, version, unit.info.path)
        for version, unit in old.items():
            if routes.get(version) is not unit:
                self._retire(unit, reason)

    def _retire(self, unit: ModelUnit, reason: str) -> None:
        name, version = unit.name, unit.info.version
        if self.route(name, version) is None:  # not replaced by a reload of the same version
            self._fingerprints.pop((name, version), None)
            self._note(name, version, UNLOADING, reason)
        idle = asyncio.Event()
        if unit.inflight == 0:
            idle.set()
        self._retiring[unit] = idle
        task = asyncio.get_running_loop().create_task(self._drain(unit, idle, reason), name=f"unload-{name}-{version}")
        self._drains.add(task)
        task.add_done_callback(self._drains.discard)

    async def _drain(self, unit: ModelUnit, idle: asyncio.Event, reason: str) -> None:
        name, version = unit.name, unit.info.version
        try:
            try:
                await asyncio.wait_for(idle.wait(), timeout=self._drain_timeout_s)
            except asyncio.TimeoutError:
                log.warning("model %s version %s: %d request(s) still admitted; closing", name, version, unit.inflight)
            if not await unit.batcher.stop(self._close_timeout_s):
                log.warning("model %s version %s: a batch is still running; leaving it", name, version)
        finally:
            unit.close()
            del self._retiring[unit]
            status = self._status.get(name, {}).get(version)
            if status is not None and status.state == UNLOADING:  # not loading again meanwhile
                self._note(name, version, UNAVAILABLE, reason)
            log.info("model %s version %s drained and freed (%s)", name, version, reason)

    def _note(self, name: str, version: str, state: str, reason: str = "", *, reload: bool = False) -> None:
        text = f"a reload failed, the loaded copy serves: {reason}" if reload else reason
        self._status.setdefault(name, {})[version] = ModelStatus(name, version, state, text)

    async def close(self, timeout_s: float) -> None:
        """Stop everything: the drains in progress (their units close), then every routed unit, waiting at most
        ``timeout_s`` per unit for its running batches."""
        for task in list(self._drains):
            task.cancel()
        await asyncio.gather(*self._drains, return_exceptions=True)
        for unit in self.serving():  # still listed after: their statistics are the shutdown's final count
            if not await unit.batcher.stop(timeout_s):
                log.warning("model %r: a batch is still running after %.0f s; leaving it", unit.name, timeout_s)
            unit.close()
