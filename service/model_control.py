"""Model control, Triton's three modes: which repository models load at start, the polling of the repository, and
the load / unload requests.

- ``none``: every repository model loads at start (a model that fails to load stops the start, as a bad
  ``--bundle`` does); nothing changes afterwards; load and unload requests are refused.
- ``poll``: as ``none`` at start, except that a model failing to load is reported (the index) instead; then every
  ``--repository-poll-s`` the repository is scanned and each model's served versions follow it: new versions load,
  changed ones reload, removed ones (and removed models) unload, a failing one is reported and the rest keeps
  serving. Load and unload requests are refused (Triton's rule: the files are the truth).
- ``explicit``: only ``--load-model`` models load at start; ``load`` (re)reads one model's directory and serves
  its policy's versions, ``unload`` takes every version of it out of service.

The loading, switching and draining are ``service.model_registry``'s; the files are ``service.repository``'s.
Imports nothing from ``model``.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from service.bundles import BundleSpec, ConfigError
from service.engine import ModelStatus
from service.errors import ModelControlDisabled, ModelLoadFailed, ModelNotFound
from service.model_registry import READY, UNAVAILABLE, ModelRegistry
from service.repository import VersionPolicy, model_names, scan_model, scan_repository
from service.settings import Settings

log = logging.getLogger(__name__)


class ModelControl:
    """Applies the model control mode to a :class:`ModelRegistry` over ``--model-repository``."""

    def __init__(self, settings: Settings, registry: ModelRegistry) -> None:
        self.mode = settings.model_control
        self._repository: Path | None = settings.model_repository
        self._policy = VersionPolicy.parse(settings.version_policy)
        self._poll_s = settings.repository_poll_s
        self._load_at_start = settings.load_models
        self._registry = registry
        self._poller: asyncio.Task | None = None
        self.broken: str | None = None  # why the poller ended, if it did

    async def start(self, fixed: list[BundleSpec]) -> None:
        """Load the fixed bundles, then the repository's models as the mode says; in poll mode, start polling."""
        for spec in fixed:
            await self._registry.add_fixed(spec)
        if self._repository is None:
            return
        entries = scan_repository(self._repository, self._policy)
        names = list(entries)
        if self.mode == "explicit":
            names = names if "*" in self._load_at_start else self._load_at_start
            unknown = sorted(set(names) - set(entries))
            if unknown:
                raise ConfigError(f"--load-model: no model named {unknown} in {self._repository}")
        elif self.mode == "none" and not entries and not fixed:
            raise ConfigError(f"model repository {self._repository} holds no model directories")
        for name in names:
            if self._registry.is_fixed(name):
                raise ConfigError(f"two bundles are served as {name!r}: a --bundle and a repository model")
            async with self._registry.lock:
                errors = await self._registry.apply(entries[name])
            if errors and self.mode == "none":
                raise ConfigError(f"cannot load model {name!r} from {self._repository}: {'; '.join(errors)}")
        if self.mode == "poll":
            self._poller = asyncio.get_running_loop().create_task(self._poll_forever(), name="repository-poll")
            self._poller.add_done_callback(self._poller_ended)

    async def stop(self) -> None:
        """Stop polling (a change in progress is cancelled; what it loaded is closed by the registry's close)."""
        if self._poller is not None:
            self._poller.cancel()
            await asyncio.gather(self._poller, return_exceptions=True)

    # -- poll ----------------------------------------------------------------------------------------------

    async def _poll_forever(self) -> None:
        while True:
            await asyncio.sleep(self._poll_s)
            try:
                await self.poll()
            except OSError as exc:  # the repository's volume hiccuped: what serves goes on, the next poll retries
                log.warning("cannot scan the model repository %s: %s", self._repository, exc)

    def _poller_ended(self, task: asyncio.Task) -> None:
        if task.cancelled():
            return
        self.broken = f"repository polling ended: {task.exception()!r}"
        log.error("%s; reporting not ready", self.broken)

    async def poll(self) -> None:
        """One scan: every repository model's served versions follow its directory; removed models unload."""
        assert self._repository is not None
        async with self._registry.lock:
            entries = scan_repository(self._repository, self._policy)
            for name, entry in entries.items():
                if not self._registry.is_fixed(name):
                    await self._registry.apply(entry)
            for name in set(self._registry.names()) - set(entries):
                if not self._registry.is_fixed(name):
                    self._registry.retire_model(name, "removed from the repository")

    # -- explicit ------------------------------------------------------------------------------------------

    def _explicit(self, name: str, action: str) -> Path:
        if self.mode != "explicit" or self._repository is None:
            raise ModelControlDisabled(
                f"explicit model {action} is not allowed: the server runs with --model-control {self.mode}"
                + ("" if self._repository is not None else " and no --model-repository")
            )
        if self._registry.is_fixed(name):
            raise ModelControlDisabled(f"model {name!r} is a fixed --bundle, not a repository model")
        return self._repository

    async def load(self, name: str) -> None:
        """Load (or reload) ``name``: its policy's versions from its directory, retrying files that failed before."""
        repository = self._explicit(name, "load")
        async with self._registry.lock:
            entry = scan_model(repository, name, self._policy) if name in model_names(repository) else None
            if entry is None:
                raise ModelNotFound(f"no model named {name!r} in the model repository")
            errors = await self._registry.apply(entry, force=True)
        if errors:
            raise ModelLoadFailed(f"failed to load '{name}': {'; '.join(errors)}")

    async def unload(self, name: str) -> None:
        """Take every version of ``name`` out of service; each drains what it admitted, then is freed."""
        repository = self._explicit(name, "unload")
        async with self._registry.lock:
            if name not in self._registry.names() and name not in model_names(repository):
                raise ModelNotFound(f"no model named {name!r} in the model repository")
            self._registry.retire_model(name, "unloaded")

    # -- the index -----------------------------------------------------------------------------------------

    def index(self, ready_only: bool = False) -> list[ModelStatus]:
        """The registry's versions, plus the repository's models it never loaded (UNAVAILABLE "not loaded")."""
        rows = self._registry.index()
        if self._repository is not None and self._repository.is_dir():
            seen = {row.name for row in rows}
            unseen = [name for name in model_names(self._repository) if name not in seen]
            rows += [ModelStatus(name, "", UNAVAILABLE, "not loaded") for name in unseen]
            rows.sort(key=lambda row: row.name)  # stable: each model's own order is kept
        return [row for row in rows if row.state == READY] if ready_only else rows
