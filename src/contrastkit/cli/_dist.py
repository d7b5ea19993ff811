"""Data-parallel helpers for ``torchrun --nproc_per_node N -m contrastkit train``.

CLI-INTERNAL STAND-IN for :mod:`contrastkit.distributed`: plain ``torch.distributed`` with the
autograd-correct ``torch.distributed.nn.functional.all_gather``.  Every process builds the same
global batch, embeds its own slice, gathers the embeddings of all slices (with gradients) and
computes the loss of the whole global batch, so the loss equals the one-process loss; gradients
are then averaged over processes, which recovers the one-process gradient exactly (see
:func:`average_gradients`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn


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
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Context(0, 1, device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    rank = dist.get_rank()
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    return Context(rank, dist.get_world_size(), device)


def teardown(ctx: Context) -> None:
    if ctx.world_size > 1 and dist.is_initialized():
        dist.destroy_process_group()


def gather(x: Tensor, ctx: Context) -> Tensor:
    """Concatenate ``x`` of every process along dim 0, differentiably.

    Backward sums, over processes, the gradients that each process's (identical) loss sends to
    this slice, i.e. ``world_size`` times the one-process gradient."""
    if ctx.world_size == 1:
        return x
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(x.contiguous()), dim=0)


def gather_no_grad(x: Tensor, ctx: Context) -> Tensor:
    if ctx.world_size == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(ctx.world_size)]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts, dim=0)


def average_gradients(module: nn.Module, ctx: Context) -> None:
    """All-reduce the mean of every gradient.  Encoder gradients arrive ``world_size`` times the
    one-process gradient through :func:`gather` and from one slice each, so their mean is the sum
    of the slices' contributions (the one-process gradient); loss parameters (a learnable
    temperature) see the whole loss on every process, so their mean is their gradient."""
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


def barrier(ctx: Context) -> None:
    if ctx.world_size > 1:
        dist.barrier()
