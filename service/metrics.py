"""Prometheus metrics, defined once: ``yoloxpai_*`` histograms/counters plus Triton-named ``nv_inference_*``.

Names and labels follow the table in ``docs/contracts.md``. Event metrics (requests, durations, batch sizes,
rejections) are prometheus-client objects updated where the event happens. State metrics (queue depth, in-flight,
pending, readiness, load time) and the Triton series are read at scrape time from the engine (a
:class:`StateSource`), so they cannot drift from the truth. The Triton families are rendered by hand: Triton
exposes counters without the ``_total`` suffix prometheus-client would add, and dashboards/HPA rules match on
those exact names. Each server owns its own registry (no process globals), so tests can run several.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

from service.stats import StatsSnapshot

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0, 30.0)
_STAGE_BUCKETS_S = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


@dataclass(frozen=True)
class ModelState:
    """What the scrape-time collector reads about one model."""

    name: str
    version: str
    queue_depth: int  # waiting in the batcher
    inflight: int  # admitted and not yet answered (decode + queue + compute)
    pending: int  # admitted and not yet executing (Triton's pending count: decode + queue)
    load_seconds: float
    stats: StatsSnapshot
    oldest_batch_age_s: float = 0.0  # the oldest running runtime call (the watchdog's measure)


class StateSource(Protocol):
    """The engine, as seen by the metrics collector."""

    def model_states(self) -> list[ModelState]:
        """One entry per loaded model version, each model's default (newest served) version first."""
        ...

    def is_ready(self) -> bool:
        """Whether the server is ready to take traffic."""
        ...


class _StateCollector:
    """prometheus-client collector for the gauges read from the engine at scrape time. Their only label is the
    model: the versions of a model loaded side by side add up (queue, in flight), the default version's load time
    counts, and the oldest call of any version (the Triton families carry each version)."""

    def __init__(self, source: StateSource) -> None:
        self._source = source

    def collect(self) -> Iterable[GaugeMetricFamily]:
        queue = GaugeMetricFamily("yoloxpai_queue_depth", "Requests waiting in the batcher.", labels=["model"])
        inflight = GaugeMetricFamily(
            "yoloxpai_inflight_requests", "Requests admitted and not yet answered.", labels=["model"]
        )
        load = GaugeMetricFamily("yoloxpai_model_load_seconds", "Time to load and warm up a model.", labels=["model"])
        age = GaugeMetricFamily(
            "yoloxpai_oldest_batch_age_seconds", "How long the oldest running runtime call has run.", labels=["model"]
        )
        per_model: dict[str, list[ModelState]] = {}
        for state in self._source.model_states():
            per_model.setdefault(state.name, []).append(state)
        for name, states in per_model.items():
            queue.add_metric([name], sum(s.queue_depth for s in states))
            inflight.add_metric([name], sum(s.inflight for s in states))
            load.add_metric([name], states[0].load_seconds)
            age.add_metric([name], max(s.oldest_batch_age_s for s in states))
        ready = GaugeMetricFamily("yoloxpai_ready", "1 when the server is ready to take traffic.")
        ready.add_metric([], 1.0 if self._source.is_ready() else 0.0)
        return [queue, inflight, load, age, ready]


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def render_triton(states: list[ModelState]) -> str:
    """Triton's ``nv_inference_*`` families in text format, counters without a ``_total`` suffix."""
    families: list[tuple[str, str, str, list[tuple[str, float]]]] = [
        ("nv_inference_request_success", "counter", "Number of successful inference requests", []),
        ("nv_inference_request_failure", "counter", "Number of failed inference requests", []),
        ("nv_inference_count", "counter", "Number of inferences performed (a batch of n counts n)", []),
        ("nv_inference_exec_count", "counter", "Number of model executions performed", []),
        ("nv_inference_queue_duration_us", "counter", "Cumulative inference queuing duration in microseconds", []),
        (
            "nv_inference_compute_infer_duration_us",
            "counter",
            "Cumulative compute inference duration in microseconds",
            [],
        ),
        ("nv_inference_pending_request_count", "gauge", "Instantaneous number of pending requests", []),
    ]
    samples = {name: rows for name, _, _, rows in families}
    for state in states:
        labels = f'model="{_label(state.name)}",version="{_label(state.version)}"'
        s = state.stats
        samples["nv_inference_request_success"].append((labels, s.success_count))
        for reason, count in sorted(s.fail_count.items()):
            samples["nv_inference_request_failure"].append((f'{labels},reason="{reason}"', count))
        samples["nv_inference_count"].append((labels, s.inference_count))
        samples["nv_inference_exec_count"].append((labels, s.execution_count))
        samples["nv_inference_queue_duration_us"].append((labels, s.queue_ns // 1000))
        samples["nv_inference_compute_infer_duration_us"].append((labels, s.compute_infer_ns // 1000))
        samples["nv_inference_pending_request_count"].append((labels, state.pending))
    lines: list[str] = []
    for name, kind, help_text, rows in families:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")
        lines.extend(f"{name}{{{labels}}} {int(value)}" for labels, value in rows)
    return "\n".join(lines) + "\n"


class Metrics:
    """The server's metric objects and its registry; ``render()`` is the ``/metrics`` body. Front ends see it as
    the engine's ``telemetry`` (``service.engine.Telemetry``)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "yoloxpai_requests",
            "Requests by protocol, model and result code.",
            ["protocol", "model", "code"],
            registry=r,
        )
        self.request_duration = Histogram(
            "yoloxpai_request_duration_seconds",
            "End-to-end request latency.",
            ["protocol", "model"],
            buckets=_LATENCY_BUCKETS_S,
            registry=r,
        )
        self.queue_wait = Histogram(
            "yoloxpai_queue_wait_seconds",
            "Time from enqueue to batch start.",
            ["model"],
            buckets=_LATENCY_BUCKETS_S,
            registry=r,
        )
        self.decode = Histogram(
            "yoloxpai_decode_duration_seconds", "Image decode + preprocess time.", buckets=_STAGE_BUCKETS_S, registry=r
        )
        self.inference = Histogram(
            "yoloxpai_inference_duration_seconds",
            "Backend time per batch.",
            ["model"],
            buckets=_LATENCY_BUCKETS_S,
            registry=r,
        )
        self.postprocess = Histogram(
            "yoloxpai_postprocess_duration_seconds",
            "Postprocessing time per batch.",
            ["model"],
            buckets=_STAGE_BUCKETS_S,
            registry=r,
        )
        self.batch_size = Histogram(
            "yoloxpai_batch_size", "Images per executed batch.", ["model"], buckets=_BATCH_BUCKETS, registry=r
        )
        self.rejected = Counter("yoloxpai_rejected", "Requests refused at admission.", ["model", "reason"], registry=r)
        self.expired = Counter("yoloxpai_expired", "Requests whose deadline passed.", ["model"], registry=r)
        self.runtime_failures = Counter(
            "yoloxpai_runtime_failures",
            "Runtime calls (batches, direct runs, probes) that raised.",
            ["model"],
            registry=r,
        )
        self._source: StateSource | None = None

    def bind(self, source: StateSource) -> None:
        """Attach the engine whose state the scrape-time series read (once)."""
        if self._source is not None:
            raise RuntimeError("metrics are already bound to an engine")
        self._source = source
        self.registry.register(_StateCollector(source))

    def observe_request(self, protocol: str, model: str, code: str, duration_s: float) -> None:
        """One transport request finished with result ``code`` ("ok" or an error code)."""
        self.requests.labels(protocol, model, code).inc()
        self.request_duration.labels(protocol, model).observe(duration_s)

    def statistics(self, name: str, version: str | None = None) -> StatsSnapshot:
        """Triton-style statistics of the served model ``name`` at ``version`` (``None``: its default version;
        ``/v2/models/{m}/stats``, ``ModelStatistics``)."""
        states = self._source.model_states() if self._source is not None else []
        for state in states:
            if state.name == name and version in (None, state.version):
                return state.stats
        raise KeyError(f"no statistics for model {name!r} version {version}")

    def render(self) -> bytes:
        """The full exposition text: prometheus-client families, then the Triton families."""
        text = generate_latest(self.registry)
        if self._source is not None:
            text += render_triton(self._source.model_states()).encode()
        return text
