"""Gathers across processes with correct global offsets, for the contrastive losses.

Every helper works unchanged in a single process (``torch.distributed`` not initialised): the gathers are
the identity and the rank is 0. Under DDP the local batches must all have the **same size** (use
``drop_last=True`` for training loaders), because the gathered matrix is laid out as rank 0's rows, then
rank 1's rows, and so on, and the positive of local row ``i`` on rank ``r`` is global row ``r * B + i``.
(The published AMiF code put it at column ``i`` on every rank, which is wrong for ranks > 0.)
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = ["gather_no_grad", "gather_with_grad", "is_distributed", "positive_index", "world_info"]


def is_distributed() -> bool:
    """True when ``torch.distributed`` is available and a default process group is initialised."""
    return dist.is_available() and dist.is_initialized()


def world_info() -> tuple[int, int]:
    """``(rank, world_size)`` of the default process group, ``(0, 1)`` without one."""
    if not is_distributed():
        return 0, 1
    return dist.get_rank(), dist.get_world_size()


def gather_with_grad(x: Tensor) -> Tensor:
    """All-gather ``x`` along dim 0 (``[B, ...] -> [world_size * B, ...]``), keeping the gradient.

    The backward pass sums, over all ranks, the gradients that reach each rank's slice and hands the
    total back to the rank that owns it. With DDP's gradient averaging this gives exactly the gradient
    of the mean of the per-rank losses, i.e. of the single-process loss over the whole global batch.
    Identity without a process group. All ranks must call it, with equal shapes.
    """
    rank, world = world_info()
    if world == 1:
        return x
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(x.contiguous()), dim=0)


@torch.no_grad()
def gather_no_grad(x: Tensor) -> Tensor:
    """All-gather ``x`` along dim 0 with no gradient (teacher features, hard-negative tokens).

    Identity (detached) without a process group. All ranks must call it, with equal shapes.
    """
    rank, world = world_info()
    x = x.detach()
    if world == 1:
        return x
    x = x.contiguous()
    out = [torch.empty_like(x) for _ in range(world)]
    dist.all_gather(out, x)
    return torch.cat(out, dim=0)


def positive_index(local_batch: int, device: torch.device | str | None = None) -> Tensor:
    """Column of each local sample's positive in a gathered ``[B, world_size * B]`` matrix.

    Returns the LongTensor ``rank * local_batch + arange(local_batch)`` on ``device``. Assumes every rank
    has ``local_batch`` samples (drop_last).
    """
    if local_batch < 1:
        raise ValueError(f"local_batch must be >= 1, got {local_batch}")
    rank, _ = world_info()
    return torch.arange(local_batch, device=device, dtype=torch.long) + rank * local_batch
