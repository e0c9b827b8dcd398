"""One ZO-DARTS++ search over several processes or GPUs with Lightning DDP.

Each rank trains on its shard of every global batch. :class:`~nni_zodarts.module.ZODartsPPModule` averages across
ranks the weight gradients (of ``W`` and of the perturbed copies ``W'_k``) and the ZO estimate (a mean of per-rank
objective slopes, which are linear in the per-rank losses), and takes the ZO directions from rank 0. So ``alpha``,
``W`` and every ``W'_k`` stay identical on all ranks and follow a single process on the same global batches (up to
BatchNorm, whose batch statistics stay per rank as in any DDP run without SyncBatchNorm).

:class:`ZODartsDDP` is Lightning's ``DDPStrategy`` without torch's ``DistributedDataParallel`` wrapper, whose
reducer wants one backward per forward and every parameter used: a ZO-DARTS++ step runs up to three backward
passes and skips zero-weight candidates, so the module reduces its gradients itself.
"""
from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors
from pytorch_lightning.overrides.distributed import _sync_module_states
from pytorch_lightning.strategies import DDPStrategy

__all__ = ['ZODartsDDP', 'launched_rank', 'average_', 'broadcast_', 'rank_spread']


class ZODartsDDP(DDPStrategy):
    """``Trainer(strategy=ZODartsDDP(), devices=N)``: one search on N processes (gloo on CPU, NCCL on GPUs)."""

    strategy_name = 'zodarts_ddp'

    def configure_ddp(self) -> None:
        _sync_module_states(self.model)      # every rank starts from rank 0's weights, as the DDP wrapper would


def launched_rank() -> int:
    """This process's rank on this node, known before the process group exists: Lightning's launcher sets
    ``LOCAL_RANK`` (torchrun also ``RANK``) in the environment of every process but the first. One node only."""
    return int(os.environ.get('RANK', os.environ.get('LOCAL_RANK', 0)))


# Each takes the trainer's world size: a process group left over from an earlier fit must not be used.
def average_(tensors: list[torch.Tensor], world_size: int) -> None:
    """Replace each tensor, in place, by its mean over the ranks (one all-reduce for the lot)."""
    if world_size == 1 or not tensors:
        return
    flat = _flatten_dense_tensors(tensors)
    dist.all_reduce(flat)
    flat /= world_size
    for tensor, mean in zip(tensors, _unflatten_dense_tensors(flat, tensors)):
        tensor.copy_(mean)


def broadcast_(tensor: torch.Tensor, world_size: int, src: int = 0) -> torch.Tensor:
    """``tensor`` overwritten, in place, with rank ``src``'s copy."""
    if world_size > 1:
        dist.broadcast(tensor, src)
    return tensor


def rank_spread(tensors: list[torch.Tensor], world_size: int) -> float:
    """Largest absolute difference between any rank's copy of ``tensors`` and rank 0's (0.0 on one process)."""
    if world_size == 1:
        return 0.0
    flat = torch.cat([t.detach().reshape(-1) for t in tensors])
    reference = broadcast_(flat.clone(), world_size)
    spread = (flat - reference).abs().max()
    dist.all_reduce(spread, op=dist.ReduceOp.MAX)
    return float(spread)
