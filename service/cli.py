"""``yoloxpai serve``: flags generated from :class:`service.settings.Settings`, so flags and env vars never drift.

Each field ``foo_bar`` becomes ``--foo-bar`` (list fields: a repeatable singular flag, ``bundles`` ->
``--bundle``, ``api_keys`` -> ``--api-key``; booleans: ``--x`` / ``--no-x``). Only flags given on the command
line are passed to ``Settings``, where init values beat ``YOLOXPAI_*`` variables: a flag wins over the env.
Heavy imports (uvicorn, grpc, onnxruntime) happen inside ``run``.
"""

from __future__ import annotations

import argparse
import os
import sys
import typing
from pathlib import Path
from typing import Any

from service.logs import configure_logging
from service.settings import Settings


def _is_list(annotation: Any) -> bool:
    return any(typing.get_origin(arg) is list for arg in (annotation, *typing.get_args(annotation)))


def flag_name(field: str) -> str:
    """The CLI flag of a Settings field."""
    name = field[:-1] if _is_list(Settings.model_fields[field].annotation) and field.endswith("s") else field
    return "--" + name.replace("_", "-")


def _scalar_type(annotation: Any) -> tuple[type | None, tuple[Any, ...] | None]:
    # (converter, choices) for Optional/Literal/plain annotations.
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) is typing.Literal:
        return type(typing.get_args(annotation)[0]), typing.get_args(annotation)
    if args and annotation not in (int, float, str, bool, Path):
        return _scalar_type(args[0])
    return annotation if annotation in (int, float, str, Path) else str, None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per Settings field; defaults are SUPPRESS so only given flags reach Settings."""
    for field, info in Settings.model_fields.items():
        env = f"YOLOXPAI_{field.upper()}"
        default = info.get_default(call_default_factory=True)
        help_text = f"{info.description or field} (env {env}; default {default!r})"
        kwargs: dict[str, Any] = {"dest": field, "default": argparse.SUPPRESS, "help": help_text}
        if _is_list(info.annotation):
            parser.add_argument(flag_name(field), action="append", metavar="VALUE", **kwargs)
        elif info.annotation is bool:
            parser.add_argument(flag_name(field), action=argparse.BooleanOptionalAction, **kwargs)
        else:
            converter, choices = _scalar_type(info.annotation)
            parser.add_argument(flag_name(field), type=converter, choices=choices, metavar=field.upper(), **kwargs)


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Settings from the given flags, the environment and the defaults (in that order of precedence)."""
    given = {field: getattr(args, field) for field in Settings.model_fields if hasattr(args, field)}
    return Settings(**given)


def event_loop_factory():
    """uvloop's loop when installed (the ``serve`` extra brings it on Linux/macOS), else asyncio's default."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def visible_cuda_devices() -> tuple[int, str]:
    """How many CUDA GPUs this process sees, and when none, why: asked of the NVIDIA driver (``libcuda``) through
    ``ctypes``, which needs no runtime import. onnxruntime-gpu lists its CUDA provider whether or not a GPU is
    there (and falls back to the CPU when there is none); torch is not in the serving images."""
    import ctypes

    library = "nvcuda.dll" if sys.platform == "win32" else "libcuda.so.1"
    try:
        cuda = ctypes.CDLL(library)
    except OSError:
        return 0, f"{library}, the NVIDIA driver's library, cannot be loaded"
    count = ctypes.c_int(0)
    status = cuda.cuInit(0)
    if status == 0:
        status = cuda.cuDeviceGetCount(ctypes.byref(count))
    if status != 0:
        name = ctypes.c_char_p()
        cuda.cuGetErrorName(status, ctypes.byref(name))
        return 0, f"the CUDA driver reports {(name.value or b'error').decode()} ({status})"
    return count.value, ""


def check_devices(devices: tuple[str, ...], probe=visible_cuda_devices) -> None:
    """Refuse ``cuda`` devices the process cannot see, with one line naming the device (a ``ConfigError``),
    before anything loads: the runtimes would otherwise fail deep in a bundle load, or run on the CPU."""
    from service.bundles import ConfigError

    wanted = [d for d in devices if d == "cuda" or d.startswith("cuda:")]
    if not wanted:
        return
    count, reason = probe()
    for device in wanted:
        index = device.partition(":")[2] or "0"
        if not index.isdigit():
            raise ConfigError(f"device {device}: expected cuda or cuda:N")
        if count == 0:
            raise ConfigError(
                f"device {device} requested but no CUDA GPU is visible ({reason}): check nvidia-smi on the host, "
                "`docker run --gpus`, or the pod's nvidia.com/gpu limit and the NVIDIA device plugin"
            )
        if int(index) >= count:
            raise ConfigError(
                f"device {device} requested but only {count} CUDA GPU(s) are visible (cuda:0 to cuda:{count - 1})"
            )


def run(args: argparse.Namespace) -> int:
    """Serve until SIGTERM/SIGINT."""
    import asyncio

    # OpenVINO forks helper processes while it loads a model; with gRPC already running, grpc-core's fork handlers
    # then write "skipping fork() handlers" to stderr (a non-JSON line in JSON logs). The server never forks a
    # process that uses gRPC, so it needs none of them. Set before grpc loads; an explicit value is kept.
    os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "0")

    from pydantic import ValidationError

    try:
        settings = settings_from_args(args)
    except ValidationError as exc:
        print(f"yoloxpai serve: invalid settings:\n{exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_format)
    from service.bundles import ConfigError

    if settings.engine_cache is not None:  # the TensorRT engine cache reads the variable, whichever set it
        os.environ["YOLOXPAI_ENGINE_CACHE"] = str(settings.engine_cache)
    import cv2

    from service.server import serve

    # Decode failures are answered to the client; OpenCV's own stderr report of each would only be noise.
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_FATAL)
    # Images are decoded in parallel by the decode pool; OpenCV's own worker threads would only contend with the
    # inference runtime's threads for the same cores (its intra-op barriers stall on every preempted thread).
    cv2.setNumThreads(1)
    try:
        check_devices(settings.devices)  # before anything loads
        with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
            code = runner.run(serve(settings))
    except (ConfigError, OSError) as exc:  # OSError: port in use, unreadable TLS files, ...
        print(f"yoloxpai serve: {exc}", file=sys.stderr)
        return 2
    exit_past_hung_threads(code)
    return code


# Thread-name prefixes of the pools a runtime call can hang in (service.workers, the decode pool).
POOL_THREADS = ("infer-", "latency-", "decode")


def exit_past_hung_threads(code: int, grace_s: float = 2.0) -> None:
    """A runtime call that hangs keeps its worker thread alive, and Python joins pool threads at exit, for ever:
    give the server's pool threads ``grace_s`` to end, then leave without them (it has drained and closed)."""
    import logging
    import os
    import threading
    import time

    deadline = time.monotonic() + grace_s
    pools = [t for t in threading.enumerate() if t.name.startswith(POOL_THREADS)]
    for thread in pools:
        thread.join(max(deadline - time.monotonic(), 0.0))
    stuck = [t.name for t in pools if t.is_alive()]
    if stuck:
        logging.getLogger("yoloxpai.serve").warning("exiting past %d busy thread(s): %s", len(stuck), ", ".join(stuck))
        logging.shutdown()
        os._exit(code)
