"""Collectives for contrastive training on several processes (``torch.distributed``: NCCL on GPUs,
gloo on CPUs, launched by ``torchrun``).

The losses take ``distributed=True`` (see :mod:`contrastkit.engine.distributed` and
``docs/distributed.md``); this module holds the pieces they are built from, usable on their own:

- :func:`init_process_group` / :func:`destroy_process_group`: start and stop the process group
  from torchrun's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR/PORT``);
- :func:`all_gather`: concatenate every rank's rows in rank order, uneven row counts allowed, with
  the gradient of every rank's use of the result sent back to the rows' owner;
- :func:`all_reduce_sum`: a differentiable sum over ranks;
- :func:`sync_replicated`: marks a tensor that every rank holds the same copy of (a temperature, a
  bias) so that its gradient is made the same on every rank;
- :func:`exchange_meta`: one small collective that checks shapes and dtypes across ranks, so
  that a mismatch is a ``ValueError`` on every rank instead of a hang or a crash in the backend;
- :func:`ring_shift`: send tensors to the next rank, receive the previous rank's (ring engines).

Semantics of the gradients, in one sentence: when every rank calls ``backward()`` on the same
global loss ``L``, each rank's inputs receive ``world_size * dL/d(input)`` (the gradient of the
sum of the ``world_size`` copies of ``L``), so that DistributedDataParallel's averaging of
parameter gradients gives exactly ``dL/d(theta)``; tensors marked with :func:`sync_replicated`
receive ``dL/d(tensor)`` itself on every rank, right with or without DDP.

Every collective waits at most :func:`get_timeout` seconds (see :func:`set_timeout`); a collective
that fails or times out (a rank died, hung, or took another code path) raises
:class:`CollectiveError` naming the collective, the tensor and the rank.

Without an initialised process group every function acts as on a world of one process.
"""

from __future__ import annotations

import datetime
import math
import os
import time
from collections.abc import Mapping, Sequence

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = [
    "CollectiveError",
    "is_initialized",
    "get_rank",
    "get_world_size",
    "init_process_group",
    "destroy_process_group",
    "set_timeout",
    "get_timeout",
    "all_gather",
    "all_reduce_sum",
    "sync_replicated",
    "exchange_meta",
    "row_offset",
    "ring_shift",
]

_TIMEOUT: float | None = None
# Codes for dtypes in the metadata exchange (position in this tuple).
_DTYPES = (
    torch.float16,
    torch.bfloat16,
    torch.float32,
    torch.float64,
    torch.int64,
    torch.int32,
    torch.int16,
    torch.int8,
    torch.uint8,
    torch.bool,
)
_MAX_DIMS = 4
_ERROR_BYTES = 240


class CollectiveError(RuntimeError):
    """A collective failed or timed out: another rank died, hung, or took another code path.

    Example:
        >>> try:
        ...     raise CollectiveError("all_gather of keys: rank 1 of 2 did not answer in 60s")
        ... except RuntimeError as err:  # a RuntimeError, as torch.distributed's own failures
        ...     print(type(err).__name__)
        CollectiveError
    """


# -- process group -----------------------------------------------------------------------------
def is_initialized() -> bool:
    """Whether a default process group is up (``torch.distributed`` available and initialised).

    Example:
        >>> is_initialized()  # a plain `python` run: every function acts on a world of one
        False
    """
    return dist.is_available() and dist.is_initialized()


def get_world_size(group: dist.ProcessGroup | None = None) -> int:
    """Number of processes in ``group``; 1 without a process group.

    Example:
        >>> get_world_size()
        1
    """
    return dist.get_world_size(group) if is_initialized() else 1


def get_rank(group: dist.ProcessGroup | None = None) -> int:
    """This process's rank in ``group``; 0 without a process group.

    Example:
        >>> (is_initialized(), get_rank(), get_world_size())  # a plain `python` run
        (False, 0, 1)
    """
    return dist.get_rank(group) if is_initialized() else 0


def set_timeout(seconds: float | None) -> None:
    """Longest wait of any contrastkit collective, in seconds (``None``: the process group's
    own timeout, 30 minutes by default).  A rank that waits longer raises :class:`CollectiveError`.

    Example:
        >>> set_timeout(120)   # fail within two minutes when a rank dies
        >>> set_timeout(None)  # back to the process group's own timeout
    """
    global _TIMEOUT
    if seconds is not None:
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
            raise TypeError(f"seconds must be a number or None, got {type(seconds).__name__}")
        if not (seconds > 0 and math.isfinite(seconds)):
            raise ValueError(
                f"seconds must be > 0 and finite, got {seconds} (None: the process group's timeout)"
            )
    _TIMEOUT = None if seconds is None else float(seconds)


def get_timeout() -> float | None:
    """The timeout set by :func:`set_timeout` (``None``: the process group's).

    Example:
        >>> set_timeout(120); get_timeout()
        120.0
        >>> set_timeout(None); get_timeout() is None
        True
    """
    return _TIMEOUT


def init_process_group(
    backend: str | None = None,
    *,
    timeout: float = 600.0,
    init_method: str | None = None,
    rank: int | None = None,
    world_size: int | None = None,
) -> tuple[int, int, torch.device]:
    """Start the default process group and return ``(rank, world_size, device)``.

    Reads torchrun's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``; ``init_method``
    defaults to ``env://``, i.e. ``MASTER_ADDR``/``MASTER_PORT``) unless ``rank``/``world_size``
    are given.  ``backend`` defaults to ``"nccl"`` when CUDA is available and ``"gloo"``
    otherwise; with NCCL the process's GPU is ``cuda:LOCAL_RANK`` and is made current.
    ``timeout`` (seconds) is both the process group's timeout and :func:`set_timeout`'s.

    Under a plain ``python train.py`` — a world of one (``WORLD_SIZE`` unset or 1) with neither
    ``MASTER_ADDR`` nor ``init_method`` to meet at — it starts no process group and returns
    ``(0, 1, device)``: every function of this module then acts on a world of one, so the same
    script runs on one device (wrap the model in DistributedDataParallel only when
    ``world_size > 1``).

    Example:
        >>> rank, world, device = init_process_group()  # a plain `python` run: a world of one
        >>> (rank, world, is_initialized())
        (0, 1, False)
        >>> set_timeout(None)  # (the call also set the collectives' timeout)
    """
    if not dist.is_available():
        raise RuntimeError("torch.distributed is not available in this PyTorch build")
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    rank = int(os.environ.get("RANK", "0")) if rank is None else int(rank)
    world_size = int(os.environ.get("WORLD_SIZE", "1")) if world_size is None else int(world_size)
    local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
    device = torch.device("cpu")
    if backend == "nccl":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    set_timeout(timeout)
    alone = world_size == 1 and init_method is None and "MASTER_ADDR" not in os.environ
    if alone and not is_initialized():  # a plain `python` run: nothing to meet
        return 0, 1, device
    if not is_initialized():
        dist.init_process_group(
            backend,
            init_method=init_method or "env://",
            rank=rank,
            world_size=world_size,
            timeout=datetime.timedelta(seconds=timeout),
        )
    return dist.get_rank(), dist.get_world_size(), device


def destroy_process_group() -> None:
    """Tear down the default process group if one is up (a no-op otherwise).

    Example:
        >>> destroy_process_group()  # nothing to tear down in a plain run
        >>> is_initialized()
        False
    """
    if is_initialized():
        dist.destroy_process_group()


# -- waiting with a timeout and a clear error --------------------------------------------------
def _wait(work: dist.Work | None, op: str, what: str, group: dist.ProcessGroup | None) -> None:
    if work is None:
        return
    start = time.monotonic()
    try:
        if _TIMEOUT is None:
            work.wait()
        else:
            work.wait(timeout=datetime.timedelta(seconds=_TIMEOUT))
    except Exception as err:  # DistBackendError, RuntimeError("... timed out"), ...
        elapsed = time.monotonic() - start
        limit = "the process group's timeout" if _TIMEOUT is None else f"timeout {_TIMEOUT:g}s"
        raise CollectiveError(
            f"contrastkit.distributed: {op} of {what} failed on rank {get_rank(group)} of "
            f"{get_world_size(group)} after {elapsed:.1f}s ({limit}); another rank probably died, "
            f"hung, or did not make the same call. Backend error: {err}"
        ) from err


def _comm_device(group: dist.ProcessGroup | None, like: torch.device) -> torch.device:
    """Where tensors must live for ``group``'s backend (NCCL: the current GPU)."""
    if dist.get_backend(group) == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return like if like.type == "cpu" else torch.device("cpu")


# -- gathers -----------------------------------------------------------------------------------
def _gather_rows(x: Tensor, sizes: Sequence[int], group, what: str) -> Tensor:
    """Plain (no autograd) all-gather along dim 0 with per-rank row counts ``sizes``."""
    if len(sizes) == 1:
        return x
    is_bool = x.dtype == torch.bool
    y = x.to(torch.uint8) if is_bool else x
    most = max(sizes)
    if y.shape[0] < most:
        y = torch.cat([y, y.new_zeros((most - y.shape[0], *y.shape[1:]))])
    y = y.contiguous()
    bufs = [torch.empty_like(y) for _ in sizes]
    _wait(dist.all_gather(bufs, y, group=group, async_op=True), "all_gather", what, group)
    out = torch.cat([b[:n] for b, n in zip(bufs, sizes, strict=True)])
    return out.bool() if is_bool else out


class _AllGather(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, sizes, group, what):  # type: ignore[override]
        ctx.sizes, ctx.group, ctx.what = sizes, group, what
        ctx.rank = dist.get_rank(group)
        return _gather_rows(x.detach(), sizes, group, what)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        # Every rank's use of the gathered rows contributes to the owner's gradient: sum the
        # whole gathered gradient over ranks and keep this rank's slice.
        grad = grad.contiguous().clone()
        work = dist.all_reduce(grad, group=ctx.group, async_op=True)
        _wait(work, "all_reduce (backward of all_gather)", ctx.what, ctx.group)
        start = sum(ctx.sizes[: ctx.rank])
        return grad[start : start + ctx.sizes[ctx.rank]], None, None, None


def all_gather(
    x: Tensor,
    sizes: Sequence[int] | None = None,
    *,
    group: dist.ProcessGroup | None = None,
    what: str = "tensor",
) -> Tensor:
    """Concatenate every rank's ``x`` along dim 0, in rank order (row counts may differ).

    ``sizes`` (every rank's row count) saves one collective when known.  Without it, the ranks
    first exchange the shapes and dtypes of ``x``: a size of any dimension but the first or a
    dtype that differs across ranks is a ``ValueError`` on every rank (naming ``what``) instead
    of a crash in the backend.  When ``x`` requires grad, the backward sums the gradient of the
    gathered tensor over all ranks and returns each rank its own rows: the exact gradient of the
    sum of all ranks' uses.  Bool tensors travel as uint8.  Without a process group, returns
    ``x``.

    Example:
        >>> import torch
        >>> all_gather(torch.ones(2, 3)).shape  # one process: unchanged
        torch.Size([2, 3])
    """
    if not is_initialized() or get_world_size(group) == 1:
        return x
    if x.dim() == 0:
        raise ValueError(f"all_gather: {what} must have a batch dimension, got a 0-d tensor")
    if sizes is None:
        meta = x if x.dim() <= _MAX_DIMS else x.flatten(_MAX_DIMS - 1)
        metas = exchange_meta({what: meta}, same=(what,), group=group, what="all_gather")
        sizes = [m[what][0][0] for m in metas]  # type: ignore[index]
    sizes = [int(s) for s in sizes]
    rank, world = get_rank(group), get_world_size(group)
    if len(sizes) != world or sizes[rank] != x.shape[0]:
        raise ValueError(
            f"all_gather: sizes must hold every rank's row count ({world} numbers), with "
            f"{x.shape[0]} (the rows of {what}) at position {rank} on rank {rank}; got {sizes}"
        )
    if x.requires_grad and torch.is_grad_enabled():
        return _AllGather.apply(x, sizes, group, what)
    return _gather_rows(x, sizes, group, what)


class _AllReduceSum(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, group, what):  # type: ignore[override]
        ctx.group, ctx.what = group, what
        y = x.detach().contiguous().clone()
        _wait(dist.all_reduce(y, group=group, async_op=True), "all_reduce", what, group)
        return y

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        grad = grad.contiguous().clone()
        work = dist.all_reduce(grad, group=ctx.group, async_op=True)
        _wait(work, "all_reduce (backward of all_reduce)", ctx.what, ctx.group)
        return grad, None, None


def all_reduce_sum(
    x: Tensor, *, group: dist.ProcessGroup | None = None, what: str = "tensor"
) -> Tensor:
    """Sum of ``x`` over ranks, the same on every rank, differentiable.

    The gradient is that of the sum of every rank's copy of the result: each rank's ``x``
    receives the sum over ranks of the incoming gradients (``world_size * g`` when every rank
    back-propagates the same ``g``).

    Example:
        >>> import torch
        >>> all_reduce_sum(torch.tensor(2.0))  # one process: unchanged
        tensor(2.)
    """
    if not is_initialized() or get_world_size(group) == 1:
        return x
    return _AllReduceSum.apply(x, group, what)


class _SyncReplicated(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, group, what):  # type: ignore[override]
        ctx.group, ctx.what = group, what
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        grad = grad.contiguous().clone()
        work = dist.all_reduce(grad, group=ctx.group, async_op=True)
        _wait(work, "all_reduce (gradient of a replicated tensor)", ctx.what, ctx.group)
        return grad / dist.get_world_size(ctx.group), None, None


def sync_replicated(
    x: Tensor, *, group: dist.ProcessGroup | None = None, what: str = "replicated tensor"
) -> Tensor:
    """Identity forward for a tensor every rank holds the same copy of (a temperature, a
    bias); its backward averages the gradient over ranks.

    In a loss where each rank computes its own share and then applies ``world_size`` times
    (see the module doc), the average is the whole gradient ``dL/dx`` on every rank — so a
    learnable temperature outside the DDP-wrapped model stays identical on every rank, and one
    inside it is not changed by DDP's averaging.

    Example:
        >>> import torch
        >>> t = torch.tensor(0.07, requires_grad=True)
        >>> sync_replicated(t) is t  # one process: the tensor itself
        True
    """
    if not (is_initialized() and get_world_size(group) > 1 and x.requires_grad):
        return x
    if not torch.is_grad_enabled():
        return x
    return _SyncReplicated.apply(x, group, what)


# -- metadata ----------------------------------------------------------------------------------
def _encode_meta(tensors: Mapping[str, Tensor | None], error: str | None) -> list[int]:
    msg = (error or "").encode("utf-8")[:_ERROR_BYTES]
    row = [len(msg), *msg, *([0] * (_ERROR_BYTES - len(msg)))]
    for name, t in tensors.items():
        if t is None:
            row += [0] * (3 + _MAX_DIMS)
            continue
        if t.dim() > _MAX_DIMS:
            raise ValueError(f"{name} has {t.dim()} dims; at most {_MAX_DIMS} are supported")
        dims = list(t.shape) + [0] * (_MAX_DIMS - t.dim())
        code = _DTYPES.index(t.dtype) if t.dtype in _DTYPES else len(_DTYPES)
        row += [1, t.dim(), code, *dims]
    return row


def _decode_meta(row: list[int], names: Sequence[str]) -> tuple[str, dict]:
    n = row[0]
    error = bytes(row[1 : 1 + n]).decode("utf-8", errors="replace")
    out: dict[str, tuple[tuple[int, ...], torch.dtype | None] | None] = {}
    pos = 1 + _ERROR_BYTES
    for name in names:
        present, ndim, code = row[pos : pos + 3]
        dims = tuple(row[pos + 3 : pos + 3 + ndim])
        pos += 3 + _MAX_DIMS
        dtype = _DTYPES[code] if code < len(_DTYPES) else None
        out[name] = (dims, dtype) if present else None
    return error, out


def _describe(meta) -> str:
    if meta is None:
        return "None"
    dims, dtype = meta
    return f"shape {dims} {str(dtype).replace('torch.', '') if dtype else 'other dtype'}"


def exchange_meta(
    tensors: Mapping[str, Tensor | None],
    *,
    same: Sequence[str] = (),
    error: str | None = None,
    group: dist.ProcessGroup | None = None,
    what: str = "inputs",
) -> list[dict[str, tuple[tuple[int, ...], torch.dtype | None] | None]]:
    """Every rank's ``(shape, dtype)`` of ``tensors`` (``None`` where absent), in one collective.

    Raises ``ValueError`` on every rank (never a hang) when a rank passed ``error`` (a local
    validation message), when a tensor is given on some ranks and not on others, or when a tensor
    named in ``same`` differs across ranks in anything but its first (batch) dimension: feature
    size, number of dims, dtype.

    Example:
        >>> import torch
        >>> exchange_meta({"query": torch.zeros(4, 8)})[0]["query"]
        ((4, 8), torch.float32)
    """
    names = list(tensors)
    row = _encode_meta(tensors, error)
    if not is_initialized() or get_world_size(group) == 1:
        rows = [row]
    else:
        like = next((t.device for t in tensors.values() if t is not None), torch.device("cpu"))
        local = torch.tensor(row, dtype=torch.int64, device=_comm_device(group, like))
        gathered = _gather_rows(local[None], [1] * get_world_size(group), group, f"{what} shapes")
        rows = gathered.cpu().tolist()
    decoded = [_decode_meta(r, names) for r in rows]
    errors = [f"rank {r}: {e}" for r, (e, _) in enumerate(decoded) if e]
    if errors:
        raise ValueError(f"{what}: invalid input on some ranks; " + "; ".join(errors))
    metas = [m for _, m in decoded]
    for name in names:
        present = [m[name] is not None for m in metas]
        if any(present) and not all(present):
            ranks = [r for r, p in enumerate(present) if not p]
            raise ValueError(
                f"{what}: {name} is given on some ranks but is None on rank(s) {ranks}; every "
                "rank must pass the same arguments"
            )
    for name in same:
        if metas[0][name] is None:
            continue
        keys = [(m[name][0][1:], m[name][1]) for m in metas]  # type: ignore[index]
        if len(set(keys)) > 1:
            desc = ", ".join(f"rank {r}: {_describe(m[name])}" for r, m in enumerate(metas))
            raise ValueError(
                f"{what}: {name} differs across ranks ({desc}); every rank must pass the same "
                "feature size and dtype (only the batch dimension may differ)"
            )
    return metas


def row_offset(n: int, *, group: dist.ProcessGroup | None = None) -> tuple[int, int, list[int]]:
    """``(offset, total, sizes)``: where this rank's ``n`` rows start in the global batch (rank
    order), the global row count, and every rank's count.

    Example:
        >>> row_offset(5)
        (0, 5, [5])
    """
    if not is_initialized() or get_world_size(group) == 1:
        return 0, int(n), [int(n)]
    metas = exchange_meta({"rows": torch.empty(int(n), 0)}, group=group, what="row counts")
    sizes = [m["rows"][0][0] for m in metas]  # type: ignore[index]
    rank = get_rank(group)
    return sum(sizes[:rank]), sum(sizes), sizes


# -- ring --------------------------------------------------------------------------------------
class _PendingShift:
    def __init__(self, works, received, what, group):
        self.works, self.received, self.what, self.group = works, received, what, group

    def wait(self) -> list[Tensor]:
        for w in self.works:
            _wait(w, "ring send/recv", self.what, self.group)
        return self.received


def ring_shift(
    tensors: Sequence[Tensor],
    recv_shapes: Sequence[Sequence[int]],
    *,
    group: dist.ProcessGroup | None = None,
    what: str = "ring block",
    wait: bool = True,
) -> list[Tensor] | _PendingShift:
    """Send ``tensors`` to rank ``rank + 1`` and receive the previous rank's (shapes
    ``recv_shapes``, same dtypes) with point-to-point ops; ``wait=False`` returns a handle whose
    ``wait()`` gives the received tensors, so that the exchange overlaps computation.

    Example:
        >>> import torch
        >>> ring_shift([torch.ones(2)], [(2,)])  # one process: its own tensors back
        [tensor([1., 1.])]
    """
    world = get_world_size(group)
    if world == 1:
        received = [t for t in tensors]
        return received if wait else _PendingShift([], received, what, group)
    rank = get_rank(group)
    nxt = dist.get_global_rank(group, (rank + 1) % world) if group else (rank + 1) % world
    prv = dist.get_global_rank(group, (rank - 1) % world) if group else (rank - 1) % world
    received = [
        torch.empty(tuple(s), dtype=t.dtype, device=t.device)
        for t, s in zip(tensors, recv_shapes, strict=True)
    ]
    ops = []
    for t, r in zip(tensors, received, strict=True):
        ops.append(dist.P2POp(dist.isend, t.contiguous(), nxt, group))
        ops.append(dist.P2POp(dist.irecv, r, prv, group))
    pending = _PendingShift(dist.batch_isend_irecv(ops), received, what, group)
    return pending.wait() if wait else pending
