"""Server settings: one pydantic-settings class, read from ``YOLOXPAI_*`` environment variables and CLI flags.

Every field is also a ``yoloxpai serve`` flag (``max_batch_size`` -> ``--max-batch-size``); the flag wins over
the environment. ``service.cli`` generates the flags from these fields (list fields become repeatable singular
flags: ``--bundle``, ``--api-key``), so flags and variables cannot drift. The field descriptions are the ``--help``
text. Deployment manifests reference these names; ``tests/deploy`` checks that they exist.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

Backend = Literal["auto", "torchscript", "onnxruntime", "openvino", "tensorrt"]


def _split_list(value: object) -> object:
    """Accept a comma-separated string (env friendly) as well as a list."""
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


class Settings(BaseSettings):
    """Everything the server can be told. Units are in the names."""

    model_config = SettingsConfigDict(env_prefix="YOLOXPAI_", extra="ignore", frozen=True)

    # What to serve. A bundle is `PATH` or `NAME=PATH`; none given -> the embedded default model.
    bundles: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="a bundle to serve, PATH or NAME=PATH (repeatable; env: comma-separated); "
        "none -> the embedded default model",
    )
    # A directory whose sub-directories are bundles (each served under its directory name), like a model repository.
    model_repository: Path | None = Field(
        None, description="a directory whose sub-directories are bundles, each served under its directory name"
    )
    default_model: str | None = Field(
        None, description="the model `/v1/detect` and an empty gRPC `model` use (default: the first one)"
    )
    # Model control (Triton's modes and names; service/repository.py, service/model_control.py).
    model_control: Literal["none", "poll", "explicit"] = Field(
        "none",
        description="how the repository's models change while serving: none = load every model at start, then "
        "never change; poll = also load new and changed versions and unload removed ones every "
        "--repository-poll-s; explicit = load only --load-model at start, then what `POST "
        "/v2/repository/models/{m}/load|unload` (or the gRPC RepositoryModelLoad/Unload) ask for",
    )
    repository_poll_s: float = Field(
        15.0, gt=0.0, description="with --model-control poll: how often the repository is scanned for changes"
    )
    load_models: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="with --model-control explicit: a repository model to load at start (repeatable; env: "
        "comma-separated; `*` = every model); none -> nothing is loaded until a load request",
    )
    version_policy: str = Field(
        "latest:1",
        pattern=r"^(all|latest:[1-9][0-9]*|specific:[1-9][0-9]*(,[1-9][0-9]*)*)$",
        description="which versions of a repository model are served, unless its `config.json` says otherwise: "
        "latest:N (the N newest), all, or specific:1,3 (Triton's version policies); requests without a version "
        "get the newest served one",
    )
    backend: Backend = Field(
        "auto",
        description="runtime for every bundle (auto = of the installed runtimes that can run one of the bundle's "
        "artifacts on the device, at fp32 or at a reduced precision that passed the export's accuracy gate, the "
        "fastest measured at load with the instances' own threads; see model.predictor.backend_candidates)",
    )
    precision: Literal["auto", "fp32", "fp16", "bf16", "int8"] = Field(
        "auto",
        description="with --backend auto: the precision to serve (auto = any that passed its accuracy gate, the "
        "fastest wins); an explicit --backend runs its artifact as exported",
    )
    device: str = Field("cpu", description="device(s), comma-separated: cpu, cuda:0, cuda:0,cuda:1")
    # Read by model.runtime.tensorrt_engine as $YOLOXPAI_ENGINE_CACHE (service.cli exports the flag's value there).
    engine_cache: Path | None = Field(
        None,
        description="directory of the TensorRT engines built at load, keyed by GPU model and TensorRT version "
        "(default $XDG_CACHE_HOME/yoloxpai/engines, else ~/.cache/yoloxpai/engines); on a volume that outlives the "
        "container, shared by the replicas, each new one skips the minutes-long build",
    )

    # Network.
    host: str = Field("0.0.0.0", description="address both servers bind")
    http_port: int = Field(8000, ge=0, le=65535, description="REST port (0 = any free port)")
    grpc_port: int = Field(8001, ge=0, le=65535, description="gRPC port (0 = any free port)")
    metrics_port: int | None = Field(
        None,
        ge=0,
        le=65535,
        description="serve `/metrics` alone on this port, in plain HTTP without API key even when TLS is on, and "
        "no longer on the REST port (0 = any free port); none -> `/metrics` on the REST port",
    )
    tls_cert_file: Path | None = Field(None, description="PEM certificate: serve HTTPS and gRPC over TLS")
    tls_key_file: Path | None = Field(None, description="PEM private key matching --tls-cert-file")
    api_keys: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="accepted API key (repeatable; env: comma-separated); REST `Authorization: Bearer KEY`, "
        "gRPC metadata `authorization: Bearer KEY`; none -> no authentication",
    )

    # Batching and concurrency.
    max_batch_size: int = Field(8, ge=1, le=256, description="largest batch (capped by the bundle's max_batch)")
    max_queue_delay_ms: float = Field(
        4.0, ge=0.0, description="longest time the oldest queued request waits for a batch to fill"
    )
    eager_dispatch: bool = Field(
        True,
        description="send a batch before the delay when no further admitted request is on its way "
        "(all are queued); off = strict full-or-delay batching",
    )
    direct_when_idle: bool = Field(
        True,
        description="an image arriving when its model has nothing else to do is decoded and run at once on the "
        "latency instance (or a free instance) in one hand-off, skipping the batcher (lower latency at low load; "
        "off = every image goes through the batcher)",
    )
    tune_batch_size: bool = Field(
        True,
        description="at warm-up, time each batch size and batch no larger than the fastest per image "
        "(on CPUs large batches are often slower per image)",
    )
    queue_capacity: int = Field(
        64, ge=1, description="admitted but not yet running requests per model; beyond -> 503 / UNAVAILABLE"
    )
    priority_levels: int = Field(
        1,
        ge=1,
        le=1000,
        description="request priority levels (Triton semantics: 1 is the most urgent; a batch takes urgent requests "
        "first); a request without a priority, or with one outside 1..levels, gets --default-priority-level. "
        "Default 1: off, because any client may name a priority and strict levels let it starve the others",
    )
    default_priority_level: int = Field(
        1, ge=1, description="the level of requests that name no (valid) priority; must be <= --priority-levels"
    )
    instances_per_device: int | None = Field(
        None,
        ge=1,
        description="model instances (sessions) per device and model, each running its own batches (default: on "
        "CPU one per core up to 4, sharing the cores; on an accelerator 1)",
    )
    inference_threads: int | None = Field(
        None,
        ge=1,
        description="CPU threads per instance's backend session (default: on CPU the available cores divided "
        "among the instances; on an accelerator the backend's choice)",
    )
    latency_instance: bool = Field(
        True,
        description="on CPU, one more session per model that uses every core with spinning threads and answers "
        "images arriving while the model is idle (lowest single-image latency); batches run on the instances",
    )
    inference_spin: bool = Field(
        False,
        description="the instances' runtime threads spin-wait between the parallel sections of a run (ONNX "
        "Runtime) instead of sleeping; off suits a busy server, where spinning threads waste the cores that "
        "decoding and the HTTP/gRPC threads need (the latency instance always spins)",
    )
    batches_per_instance: int | None = Field(
        None,
        ge=1,
        le=4,
        description="batches an instance holds at once: the running one plus those queued behind it on its "
        "thread, which start the moment it ends instead of after the event loop hands the next one over "
        "(default: 2 on CPU, where that hand-off idles busy instances; 1 on an accelerator, where a batch formed "
        "early would be smaller); a queued batch keeps its place, so an urgent request may wait behind it",
    )
    decode_threads: int = Field(2, ge=1, description="threads decoding and preprocessing images")
    decode_mode: Literal["auto", "pool", "batch", "device"] = Field(
        "auto",
        description="where images are decoded: pool = in the decode threads before queueing, overlapping "
        "inference (accelerators); batch = by the instance, for its whole batch, just before inferring (CPUs, "
        "where decoding and inference would contend for the same cores); device = the instance checks each "
        "image's header on the host, then decodes (nvJPEG on CUDA, full resolution) and letterboxes its batch on "
        "the model's device (TorchScript bundles only); auto = device when every device is CUDA and the "
        "instances run TorchScript, else batch on CPU, pool otherwise",
    )
    reduced_decode: bool = Field(
        True,
        description="decode a JPEG at 1/2, 1/4 or 1/8 resolution when the letterbox shrinks it by at least that much "
        "(libjpeg's DCT scaling: most of the decode skipped, boxes mapped back exactly; off: --no-reduced-decode)",
    )
    stream_window: int = Field(8, ge=1, description="frames in flight per gRPC stream (backpressure)")

    # Limits.
    request_timeout_ms: float = Field(
        30_000.0, gt=0.0, description="default deadline of a request (a shorter client deadline wins)"
    )
    max_request_bytes: int = Field(20 * 1024 * 1024, ge=1024, description="largest request body / gRPC message")
    max_image_pixels: int = Field(40_000_000, ge=1, description="largest image (width * height), checked pre-decode")
    max_images_per_request: int = Field(16, ge=1, description="images in one REST request")
    max_inflight_bytes: int = Field(
        256 * 1024 * 1024,
        ge=1024,
        description="encoded image bytes admitted and not yet answered, over all models (a byte budget beside the "
        "queue's image count: a few large images must not exhaust memory); beyond -> 503 / UNAVAILABLE",
    )
    body_timeout_s: float = Field(
        30.0, gt=0.0, description="longest time a client may take to send a request body; slower -> 408"
    )
    max_connections: int = Field(
        1024, ge=1, description="concurrent HTTP connections and requests; beyond -> 503 (uvicorn limit_concurrency)"
    )
    grpc_max_concurrent_streams: int = Field(
        256, ge=1, description="concurrent gRPC calls per connection (HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS)"
    )
    grpc_max_connection_age_s: float = Field(
        300.0,
        gt=0.0,
        description="a gRPC connection is closed gracefully after this long (clients reconnect, so replicas added "
        "by a scale-up get a share of long-lived clients' traffic)",
    )
    grpc_keepalive_s: float = Field(
        60.0, gt=0.0, description="gRPC keepalive ping interval (finds dead peers behind idle connections)"
    )
    retry_after_s: int = Field(1, ge=0, description="`Retry-After` seconds sent with 503 responses")

    # Health (the watchdog).
    watchdog_interval_s: float = Field(1.0, gt=0.0, description="how often the watchdog checks every model")
    stalled_batch_s: float = Field(
        60.0, gt=0.0, description="a batch running longer marks its model unhealthy: the server reports not ready"
    )
    dead_batch_s: float = Field(
        300.0,
        gt=0.0,
        description="a batch running longer means a hung runtime: /healthz fails so the orchestrator restarts us",
    )
    unready_after_failures: int = Field(
        5, ge=1, description="consecutive runtime failures of a model that mark it unhealthy (not ready)"
    )
    dead_after_failures: int = Field(
        20,
        ge=1,
        description="consecutive runtime failures (requests and the watchdog's probe runs) after which /healthz "
        "fails; a success in between heals the model",
    )
    # Lifecycle.
    shutdown_delay_s: float = Field(
        0.0,
        ge=0.0,
        description="after SIGTERM, report not-ready but keep serving this long (load balancers catch up)",
    )
    drain_timeout_s: float = Field(30.0, ge=0.0, description="longest wait for accepted work after SIGTERM")
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="log level")
    log_format: Literal["text", "json"] = Field("text", description="log lines as text or one JSON object each")
    access_log: bool = Field(True, description="one info line per HTTP request and gRPC call (off: --no-access-log)")
    ui: bool = Field(
        True,
        description="serve the demo page at `/` and `/ui` (pick a model, drop an image or open the webcam, see the "
        "boxes); it calls only the public API, with a strict Content-Security-Policy (off: --no-ui)",
    )

    @field_validator("bundles", "api_keys", mode="before")
    @classmethod
    def _lists(cls, value: object) -> object:
        return _split_list(value)

    @field_validator("load_models", mode="before")
    @classmethod
    def _load_models_list(cls, value: object) -> object:
        return _split_list(value)

    @model_validator(mode="after")
    def _tls_pair(self) -> Settings:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("tls_cert_file and tls_key_file must be given together")
        return self

    @model_validator(mode="after")
    def _watchdog_order(self) -> Settings:
        if self.dead_batch_s < self.stalled_batch_s or self.dead_after_failures < self.unready_after_failures:
            raise ValueError("the dead_* limits must not be below the stalled/unready ones")
        return self

    @model_validator(mode="after")
    def _priority_default(self) -> Settings:
        if not 1 <= self.default_priority_level <= self.priority_levels:
            raise ValueError(
                f"default_priority_level must be in [1, priority_levels={self.priority_levels}], "
                f"got {self.default_priority_level}"
            )
        return self

    @property
    def devices(self) -> tuple[str, ...]:
        """The ``device`` field split into one entry per device."""
        return tuple(d.strip() for d in self.device.split(",") if d.strip()) or ("cpu",)
