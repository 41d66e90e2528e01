"""How many model instances a device gets, how many threads each uses, and whether an idle-latency session exists.

Measured on 2 cores with the shipped nano (docs/benchmarks.md): one 2-thread session answers a lone image fastest
when its threads spin (4.5 ms vs 6.8 ms sleeping) but loses throughput under load, when spinning threads waste the
cores that HTTP, gRPC and decoding need; one single-threaded session per core, each decoding and inferring its own
batches, gives the most images/s. So on a CPU the default is both: instances of ``cores / instances`` threads for
batches, plus one *latency instance* using every core with spinning threads for images that arrive while the model
is idle. Accelerators get one instance per device and no latency instance (threads do not set their latency).
TorchScript's thread count is one setting for the whole process (``torch.set_num_threads``), so sessions cannot
divide the cores: with ``--backend torchscript`` a CPU gets one instance and no latency instance. OpenVINO
parallelises one inference across the cores better than two single-thread sessions share them (2 vCPUs, images/s
of one 2-thread session vs two 1-thread ones: yolox-s fp32 7.4 vs 4.0, int8 19 vs 10.5, nano bf16 114 vs 64), so
an OpenVINO model gets one instance with every core, and no latency instance.
On a CPU each instance also holds a second batch queued behind its running one (``depth`` 2), so a busy instance
goes straight on to it; on an accelerator a batch formed that early would be smaller, so ``depth`` stays 1.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

from service.settings import Settings

MAX_AUTO_CPU_INSTANCES = 4  # more sessions cost memory and batch less; 4 covers the core counts we measured


@dataclass(frozen=True)
class InstancePlan:
    """The sessions of one model on one device."""

    instances: int  # batch instances in the worker pool
    threads: int | None  # runtime threads per batch instance (None = the backend's choice)
    spin: bool  # batch instances' threads spin-wait
    latency_instance: bool  # one more session (all cores, spinning) for the idle direct path
    latency_threads: int | None
    depth: int = 1  # batches each instance holds (running + queued behind it on its thread)


def available_cpus(cgroup_root: Path = Path("/sys/fs/cgroup")) -> int:
    """CPUs this process may use: its affinity mask, capped by a cgroup v2 CPU quota (a Kubernetes limit)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        quota, period = (cgroup_root / "cpu.max").read_text().split()[:2]
        if quota != "max":
            cpus = min(cpus, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass  # no cgroup v2 quota visible: the affinity mask is the limit
    return max(1, cpus)


def plan_instances(
    settings: Settings, device: str, cpus: int | None = None, backend: str | None = None
) -> InstancePlan:
    """Apply the defaults above to what the settings leave open (``None``); ``backend``: the runtime the instances
    run (default: the setting's; ``auto`` plans as ONNX Runtime until the choice is made)."""
    depth = settings.batches_per_instance or (2 if device == "cpu" else 1)
    backend = backend or settings.backend
    if device != "cpu" or backend == "torchscript":
        return InstancePlan(
            instances=settings.instances_per_device or 1,
            threads=settings.inference_threads,
            spin=settings.inference_spin,
            latency_instance=False,
            latency_threads=None,
            depth=depth,
        )
    cpus = cpus or available_cpus()
    instances = settings.instances_per_device
    if instances is None and backend == "openvino":
        instances = 1
    if instances is None:
        instances = max(1, min(cpus // (settings.inference_threads or 1), MAX_AUTO_CPU_INSTANCES))
    threads = settings.inference_threads or max(1, cpus // instances)
    # A latency instance helps only when it can use more threads than a batch instance has.
    latency = settings.latency_instance and cpus > threads
    return InstancePlan(instances, threads, settings.inference_spin, latency, cpus if latency else None, depth)
