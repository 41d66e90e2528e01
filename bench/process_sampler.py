"""A server process's resident memory, open file descriptors and threads, read from ``/proc`` on a timer (Linux).

Used by ``bench/soak.py`` to tell a leak (growth that keeps going under steady load) from warm-up (caches, lazily
started thread pools). Imports nothing from the project.
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ProcessSample:
    """One reading of a process: seconds since the sampler started, VmRSS (KiB), open fds, threads."""

    t_s: float
    rss_kib: int
    fds: int
    threads: int


def read_process(pid: int, t_s: float = 0.0) -> ProcessSample | None:
    """``/proc/<pid>/status`` VmRSS and Threads plus the entries of ``/proc/<pid>/fd``; None once it has exited
    (a zombie has no VmRSS)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    if "VmRSS" not in fields:
        return None
    return ProcessSample(t_s, int(fields["VmRSS"].split()[0]), fds, int(fields["Threads"]))


class ProcessSampler:
    """Reads a process every ``interval_s`` in a daemon thread (so a busy event loop does not delay the readings)
    from :meth:`start` until :meth:`stop` or the process exits."""

    def __init__(self, pid: int, interval_s: float) -> None:
        if interval_s <= 0:
            raise ValueError(f"interval_s must be > 0, got {interval_s}")
        self.pid, self.interval_s = pid, interval_s
        self.samples: list[ProcessSample] = []
        self._t0 = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="process-sampler", daemon=True)

    def start(self) -> ProcessSampler:
        """Take the first sample now, then one every ``interval_s``."""
        self._t0 = time.monotonic()
        self._thread.start()
        return self

    def now_s(self) -> float:
        """Seconds on the samples' clock."""
        return time.monotonic() - self._t0

    def take(self) -> ProcessSample | None:
        """One sample now (also recorded)."""
        sample = read_process(self.pid, self.now_s())
        if sample is not None:
            self.samples.append(sample)
        return sample

    def _run(self) -> None:
        while self.take() is not None and not self._stop.wait(self.interval_s):
            pass

    def stop(self) -> None:
        """Stop sampling (the samples stay)."""
        self._stop.set()
        self._thread.join()

    def window(self, from_s: float = 0.0, to_s: float = float("inf")) -> list[ProcessSample]:
        """The samples taken in ``[from_s, to_s)``."""
        return [s for s in self.samples if from_s <= s.t_s < to_s]


def growth(samples: list[ProcessSample], field: str, edge: int = 3) -> dict[str, float]:
    """``first``, ``peak`` and ``last`` of one field over ``samples``; ``base`` and ``end`` are the medians of the
    first and last ``edge`` samples (one noisy reading does not make a leak), ``growth`` = end - base and
    ``peak_growth`` = peak - base."""
    if not samples:
        nan = float("nan")
        return dict.fromkeys(("first", "base", "peak", "end", "last", "growth", "peak_growth"), nan)
    values = [getattr(s, field) for s in samples]
    base, end = statistics.median(values[:edge]), statistics.median(values[-edge:])
    return {
        "first": values[0],
        "base": base,
        "peak": max(values),
        "end": end,
        "last": values[-1],
        "growth": end - base,
        "peak_growth": max(values) - base,
    }
