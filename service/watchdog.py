"""The watchdog: a runtime that hangs or keeps failing is noticed, and the server says so to its orchestrator.

Each model unit records its runtime calls (batches, direct runs, probes) in a :class:`RuntimeHealth`: when each
running call began and how many calls failed in a row. Every ``watchdog_interval_s`` the :class:`Watchdog` judges
each model:

- a call running longer than ``stalled_batch_s``, or ``unready_after_failures`` failures in a row: the model is
  unhealthy and the server reports **not ready** (traffic moves to other replicas);
- a call running longer than ``dead_batch_s``, or ``dead_after_failures`` failures in a row: the runtime is
  beyond repair in this process and the server reports **not live** (``/healthz`` 503: the kubelet restarts it).

A model failing in a row gets a probe run (one image of zeros on a free instance) each interval, since no traffic
reaches a not-ready server: a success heals it (ready and live again), a failure counts towards "not live". Exported as
``yoloxpai_oldest_batch_age_seconds`` and ``yoloxpai_runtime_failures_total``. Imports nothing from ``model``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client import Counter

from service.settings import Settings

log = logging.getLogger(__name__)


class RuntimeHealth:
    """One model's runtime calls: when each running one began, and the failures in a row. Thread-safe: calls are
    recorded on the worker threads that make them (so time queued behind another batch does not count)."""

    def __init__(self, failures: Counter) -> None:
        self._failures = failures  # this model's yoloxpai_runtime_failures_total series
        self._lock = threading.Lock()
        self._running: dict[int, float] = {}  # call -> time.monotonic() at its start
        self._ids = itertools.count()
        self.failures_in_a_row = 0

    @contextlib.contextmanager
    def call(self) -> Iterator[None]:
        """Around one runtime call: its start is recorded, and its end as a success or a failure (an exception)."""
        with self._lock:
            call = next(self._ids)
            self._running[call] = time.monotonic()
        ok = False
        try:
            yield
            ok = True
        finally:
            with self._lock:
                del self._running[call]
                self.failures_in_a_row = 0 if ok else self.failures_in_a_row + 1
            if not ok:
                self._failures.inc()

    def oldest_call_s(self) -> float:
        """How long the oldest running call has run (0 when none runs)."""
        with self._lock:
            oldest = min(self._running.values(), default=None)
        return 0.0 if oldest is None else time.monotonic() - oldest

    @property
    def running(self) -> int:
        """Calls running now."""
        return len(self._running)


@dataclass(frozen=True)
class Verdict:
    """One model's state: ready (take traffic) and live (worth keeping), and why not."""

    ready: bool = True
    live: bool = True
    reason: str = ""


def judge(health: RuntimeHealth, settings: Settings) -> Verdict:
    """The verdict for one model's runtime."""
    age, failures = health.oldest_call_s(), health.failures_in_a_row
    if age > settings.dead_batch_s:
        return Verdict(
            False, False, f"a runtime call has run for {age:.0f} s (hung; limit {settings.dead_batch_s:g} s)"
        )
    if failures >= settings.dead_after_failures:
        return Verdict(False, False, f"{failures} runtime failures in a row")
    if age > settings.stalled_batch_s:
        return Verdict(False, True, f"a runtime call has run for {age:.0f} s (limit {settings.stalled_batch_s:g} s)")
    if failures >= settings.unready_after_failures:
        return Verdict(False, True, f"{failures} runtime failures in a row")
    return Verdict()


class Watchdog:
    """Judges every model each interval and probes the ones that fail; ``ready`` / ``live`` for the engine."""

    def __init__(self, settings: Settings, models: Callable[[], dict]) -> None:
        self._settings = settings
        self._models = models  # (name, version) -> ModelUnit (health, probe): the served versions
        self.verdicts: dict[tuple[str, str], Verdict] = {}
        self._probes: dict[tuple[str, str], asyncio.Task] = {}

    @property
    def ready(self) -> bool:
        """No model is unhealthy."""
        return all(v.ready for v in self.verdicts.values())

    @property
    def live(self) -> bool:
        """No model's runtime is beyond repair."""
        return all(v.live for v in self.verdicts.values())

    def reasons(self) -> str:
        """Why the server is not ready / not live, model by model."""
        return "; ".join(f"model {k[0]!r} version {k[1]}: {v.reason}" for k, v in self.verdicts.items() if v.reason)

    async def run(self) -> None:
        """Check every interval until cancelled."""
        while True:
            await asyncio.sleep(self._settings.watchdog_interval_s)
            self.check()

    def check(self) -> None:
        """Judge each served model version once (an unloaded one is forgotten); start a probe where failures made
        a model unhealthy."""
        models = self._models()
        self.verdicts = {key: verdict for key, verdict in self.verdicts.items() if key in models}
        for key, unit in models.items():
            verdict = judge(unit.health, self._settings)
            before = self.verdicts.get(key, Verdict())
            if verdict != before and (verdict.reason or before.reason):
                log.warning("model %r version %s: %s", *key, verdict.reason or "healthy again")
            self.verdicts[key] = verdict
            failing = unit.health.failures_in_a_row >= self._settings.unready_after_failures
            if failing and key not in self._probes:
                task = asyncio.get_running_loop().create_task(unit.probe(), name=f"probe-{key[0]}-{key[1]}")
                self._probes[key] = task
                task.add_done_callback(lambda _t, k=key: self._probes.pop(k, None))

    def stop(self) -> None:
        """Cancel the probes still waiting (a probe's thread call itself cannot be interrupted)."""
        for task in list(self._probes.values()):
            task.cancel()
