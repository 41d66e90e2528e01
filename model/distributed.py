"""Process-group setup and the collectives both training and evaluation need (``torchrun`` single- or multi-node).

The launcher's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``/``PORT``) decides: without
it the run is a single process. Backend: NCCL on CUDA, gloo on CPU. Every helper is a no-op for one process.
Lives below ``model.train`` and ``model.evaluate`` so evaluation never imports training code; the training-only
collectives (DDP wrapping, BatchNorm statistics) are in ``model.train.distributed``.
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistContext:
    """Where this process sits: rank, world size, its device and the backend (``None`` when alone)."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str | None

    @property
    def is_main(self) -> bool:
        """Rank 0 logs, evaluates the gathered detections and writes checkpoints."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """More than one process."""
        return self.world_size > 1


def resolve_device(device: str, local_rank: int = 0) -> torch.device:
    """``auto`` -> the local rank's GPU when CUDA exists, else CPU; bare ``cuda`` -> ``cuda:local_rank``."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        device = f"cuda:{local_rank}"
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} requested but CUDA is not available")
    return resolved


def init_distributed(device: str = "auto") -> DistContext:
    """Join the process group described by the environment (torchrun), or return a single-process context."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    resolved = resolve_device(device, local_rank)
    if world_size == 1:
        return DistContext(0, 1, 0, resolved, None)
    backend = "nccl" if resolved.type == "cuda" else "gloo"
    if resolved.type == "cuda":
        torch.cuda.set_device(resolved)
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, rank=rank, world_size=world_size)
    return DistContext(rank, world_size, local_rank, resolved, backend)


def shutdown_distributed() -> None:
    """Leave the process group if one was joined."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def broadcast_object(obj: object, ctx: DistContext) -> object:
    """Rank 0's picklable ``obj`` on every rank."""
    if not ctx.distributed:
        return obj
    holder = [obj]
    dist.broadcast_object_list(holder, src=0, device=ctx.device if ctx.backend == "nccl" else None)
    return holder[0]


def gather_to_main(obj: object, ctx: DistContext) -> list[object] | None:
    """Every rank's ``obj`` in rank order on rank 0 (``None`` elsewhere)."""
    if not ctx.distributed:
        return [obj]
    payload = pickle.dumps(obj)
    gathered: list[bytes | None] = [None] * ctx.world_size
    dist.all_gather_object(gathered, payload)  # all_gather: gloo has no gather_object on every build
    return [pickle.loads(p) for p in gathered] if ctx.is_main else None
