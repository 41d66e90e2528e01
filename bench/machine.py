"""One line that says which CPU a benchmark ran on (results from different machines must not be compared)."""

from __future__ import annotations

import os
import platform
from pathlib import Path

# The instruction-set features that change which kernels the CPU runtimes pick (bf16 is automatic on some).
FEATURES = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8")


def describe() -> str:
    """``"<model name>, N cores, avx2 avx512f ..."`` from /proc/cpuinfo (falls back to ``platform``)."""
    model, flags = platform.processor() or platform.machine(), set()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{model}, {cores} cores, {' '.join(f for f in FEATURES if f in flags) or 'no AVX2'}"
