"""Data parallelism for ``torchrun --nproc_per_node N -m contrastkit train``.

Every process builds the same global batch (same generator) and embeds its own rows; the loss
is the library's with ``distributed=True`` (:mod:`contrastkit.distributed`, see
``docs/distributed.md``), which returns the global batch's loss on every process and sends each
process's embeddings ``world_size`` times their share of the one-process gradient.  Averaging the
parameter gradients over processes (:func:`average_gradients`, what DistributedDataParallel does)
then gives exactly the one-process gradient.  Losses without a ``distributed`` option see the
embeddings of the whole global batch (:func:`global_rows`), with the same gradient scaling.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn

from contrastkit import distributed as cdist


@dataclass
class Context:
    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, n: int) -> slice:
        """This process's rows of a global batch of ``n`` rows (``n`` divisible by the world)."""
        per = n // self.world_size
        return slice(self.rank * per, (self.rank + 1) * per)


def setup(device: torch.device) -> Context:
    """Join the process group that ``torchrun`` describes in the environment (gloo on CPU,
    NCCL on CUDA); a plain run is a group of one."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return Context(0, 1, device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    rank, world, device = cdist.init_process_group(backend)
    return Context(rank, world, device)


def teardown(ctx: Context) -> None:
    if ctx.world_size > 1:
        cdist.destroy_process_group()


def global_rows(*tensors: Tensor | None) -> tuple[Tensor | None, ...]:
    """Every process's rows of each tensor, in rank order (unchanged in a group of one).  The
    gather is differentiable: a tensor's rows receive the gradient of every process's use."""
    return tuple(None if t is None else cdist.all_gather(t) for t in tensors)


def average_gradients(module: nn.Module, ctx: Context) -> None:
    """All-reduce the mean of every gradient, as DistributedDataParallel does: encoder gradients
    arrive ``world_size`` times this process's share of the one-process gradient, so their mean
    is the one-process gradient; loss parameters (a learnable temperature) already hold the
    one-process gradient on every process, which the mean leaves unchanged."""
    if ctx.world_size == 1:
        return
    for p in module.parameters():
        if p.grad is not None:
            dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
            p.grad /= ctx.world_size


def broadcast_module(module: nn.Module, ctx: Context) -> None:
    """Start every process from process 0's parameters and buffers."""
    if ctx.world_size == 1:
        return
    for t in list(module.parameters()) + list(module.buffers()):
        dist.broadcast(t.data, src=0)
