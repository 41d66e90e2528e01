"""The training-only collectives: DDP wrapping, barriers, the multiscale size broadcast, BatchNorm statistics.

Process-group setup and ``DistContext`` live in ``model.distributed`` (shared with evaluation).
"""

from __future__ import annotations

import inspect

import torch
import torch.distributed as dist
from torch import nn

from model.distributed import DistContext
from model.train.ema import unwrap


def barrier(ctx: DistContext) -> None:
    """Wait for every rank."""
    if ctx.distributed:
        dist.barrier()


def broadcast_ints(values: list[int], ctx: DistContext) -> list[int]:
    """Rank 0's ``values`` on every rank (used for the multiscale size)."""
    if not ctx.distributed:
        return list(values)
    tensor = torch.tensor(values, dtype=torch.int64, device=ctx.device)
    dist.broadcast(tensor, src=0)
    return [int(v) for v in tensor.tolist()]


def all_reduce_norm_stats(model: nn.Module, ctx: DistContext) -> None:
    """Average BatchNorm running statistics over ranks (DDP runs with ``broadcast_buffers=False``, as Megvii)."""
    if not ctx.distributed:
        return
    for module in unwrap(model).modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.track_running_stats:
            for buf in (module.running_mean, module.running_var):
                dist.all_reduce(buf, op=dist.ReduceOp.SUM)
                buf.div_(ctx.world_size)


def wrap_model(model: nn.Module, ctx: DistContext) -> nn.Module:
    """DDP-wrap ``model`` (already on ``ctx.device``, SyncBN already converted if wanted) when distributed."""
    if not ctx.distributed:
        return model
    device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    # No buffer broadcast on every forward (Megvii: broadcast_buffers=False); BN statistics are averaged at epoch
    # ends instead. Newer torch spells it forward_sync_buffers (and still syncs once at init, which is fine).
    params = inspect.signature(nn.parallel.DistributedDataParallel.__init__).parameters
    no_sync = {"forward_sync_buffers": False} if "forward_sync_buffers" in params else {"broadcast_buffers": False}
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids, **no_sync)
