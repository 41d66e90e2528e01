"""Per-model inference statistics kept by the engine, independent of any protocol.

These are the numbers Triton's statistics extension reports (success/failure counts, cumulative queue and compute
durations, per-batch-size execution counts and durations). The Prometheus ``nv_inference_*`` series are a view
on them (``service.metrics``), and ``/v2/models/{m}/stats`` / ``ModelStatistics`` are built from a snapshot
(``service.oip.descriptions``) without touching the engine. Durations are integer nanoseconds, as Triton reports them.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass

# Triton's failure reasons (nv_inference_request_failure{reason=...}).
REASON_REJECTED = "REJECTED"  # queue full, not ready, draining, deadline passed
REASON_CANCELED = "CANCELED"  # the client went away
REASON_BACKEND = "BACKEND"  # the batch raised
REASON_OTHER = "OTHER"  # invalid image or option


@dataclass(frozen=True)
class BatchStats:
    """Executions of one batch size: count and cumulative stage durations (ns)."""

    count: int = 0
    compute_input_ns: int = 0
    compute_infer_ns: int = 0
    compute_output_ns: int = 0


@dataclass(frozen=True)
class StatsSnapshot:
    """A consistent copy of one model's statistics."""

    success_count: int
    success_ns: int
    fail_count: dict[str, int]
    fail_ns: int
    queue_count: int
    queue_ns: int
    compute_input_ns: int
    compute_infer_ns: int
    compute_output_ns: int
    inference_count: int  # images inferred (a batch of n counts n)
    execution_count: int  # batches executed
    batch_stats: dict[int, BatchStats]
    last_inference_ms: int  # wall-clock ms since the epoch of the last execution, 0 if none


# The integer totals of a snapshot, kept by name so a snapshot is one copy of them.
_TOTALS = (
    "success_count", "success_ns", "fail_ns", "queue_count", "queue_ns", "compute_input_ns", "compute_infer_ns",
    "compute_output_ns", "inference_count", "execution_count", "last_inference_ms",
)  # fmt: skip


class ModelStatistics:
    """Mutable counters for one model; every method is thread-safe and O(1)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._totals = dict.fromkeys(_TOTALS, 0)
        self._fail: Counter = Counter()
        self._batches: dict[int, BatchStats] = {}

    def record_success(self, duration_ns: int) -> None:
        """One image answered successfully after ``duration_ns`` from admission."""
        with self._lock:
            self._totals["success_count"] += 1
            self._totals["success_ns"] += duration_ns

    def record_failure(self, reason: str, duration_ns: int = 0) -> None:
        """One admitted (or rejected) image failed for ``reason`` (a ``REASON_*`` value) after ``duration_ns``."""
        with self._lock:
            self._fail[reason] += 1
            self._totals["fail_ns"] += duration_ns

    def record_queue(self, wait_ns: int) -> None:
        """One image left the queue for a batch after waiting ``wait_ns``."""
        with self._lock:
            self._totals["queue_count"] += 1
            self._totals["queue_ns"] += wait_ns

    def record_execution(self, batch_size: int, input_ns: int, infer_ns: int, output_ns: int, wall_ms: int) -> None:
        """One batch executed: stacking (input), backend call (infer) and postprocessing (output)."""
        with self._lock:
            totals = self._totals
            totals["execution_count"] += 1
            totals["inference_count"] += batch_size
            totals["compute_input_ns"] += input_ns
            totals["compute_infer_ns"] += infer_ns
            totals["compute_output_ns"] += output_ns
            totals["last_inference_ms"] = wall_ms
            old = self._batches.get(batch_size, BatchStats())
            self._batches[batch_size] = BatchStats(
                old.count + 1,
                old.compute_input_ns + input_ns,
                old.compute_infer_ns + infer_ns,
                old.compute_output_ns + output_ns,
            )

    def snapshot(self) -> StatsSnapshot:
        """A consistent copy (one lock acquisition)."""
        with self._lock:
            return StatsSnapshot(fail_count=dict(self._fail), batch_stats=dict(self._batches), **self._totals)
