"""A FIFO memory bank of keys, optionally with labels: MoCo's queue (He et al. 2020) and the
cross-batch memory of XBM (Wang et al. 2020)."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from contrastkit import distributed as cdist
from contrastkit._validation import check_embeddings, check_labels

__all__ = ["NegativeQueue", "QueueSnapshot"]


class QueueSnapshot(NamedTuple):
    """What the queue held *before* the current batch: ``negatives (M, D)``, oldest first, and
    their ``labels (M,)`` (``None`` for a queue without labels).

    Example:
        >>> import torch
        >>> queue = NegativeQueue(size=4, dim=2, labels=True)
        >>> _ = queue(torch.ones(3, 2), torch.tensor([5, 6, 7]))
        >>> negatives, labels = queue(torch.zeros(1, 2), torch.tensor([8]))
        >>> negatives.shape, labels.tolist()
        (torch.Size([3, 2]), [5, 6, 7])
    """

    negatives: Tensor
    labels: Tensor | None


class NegativeQueue(nn.Module):
    r"""A first-in first-out memory bank of ``size`` keys (MoCo, He et al. 2020), optionally with
    their labels (cross-batch memory, XBM; Wang et al. 2020).

    ``queue(keys, labels)`` returns what the queue held before this call (a
    :class:`QueueSnapshot`, detached, oldest first) and then enqueues ``keys``: the current
    batch's own keys are never offered as its negatives.  A batch that runs past the end wraps
    around to the start, overwriting the oldest entries; nothing of the batch is dropped unless it
    alone is larger than the queue (then its newest ``size`` rows are kept).

    Everything that defines the queue is a buffer in ``state_dict()`` — the keys, the labels, the
    write position ``ptr`` and the fill count ``count`` — so a checkpoint resumes it exactly.
    With ``distributed=True`` every rank enqueues the keys of *all* ranks, in rank order (an
    all-gather with uneven sizes allowed), so that every rank holds the same queue in the same
    order.

    Use with any loss: MoCo's loss (the positive and the queue, no in-batch negatives) is
    ``info_nce(q, k, negatives=neg, exclude=~torch.eye(B, dtype=torch.bool))``; in-batch plus
    queue negatives is ``info_nce(q, k, negatives=neg)``; with labels (XBM, SupCon-style
    memory), same-class entries become positives with ``info_nce(q, torch.cat([k, neg]),
    labels=y, key_labels=torch.cat([y, neg_labels]))``; the sigmoid loss takes the same
    concatenation.

    Args:
        size: capacity ``K`` (MoCo: 65536).
        dim: feature size ``D``.
        labels: also store one integer label per key.
        dtype: storage dtype of the keys (e.g. ``torch.bfloat16`` to halve memory).
        distributed: gather the keys of every ``torch.distributed`` rank before enqueuing.

    Example:
        >>> import torch
        >>> from contrastkit.functional import info_nce
        >>> queue = NegativeQueue(size=8, dim=4)
        >>> q, k = torch.randn(3, 4), torch.randn(3, 4)
        >>> neg, _ = queue(k)            # empty the first time: 0 negatives
        >>> neg.shape
        torch.Size([0, 4])
        >>> neg, _ = queue(torch.randn(3, 4))
        >>> loss = info_nce(q, k, negatives=neg)  # the 3 keys of the previous batch
        >>> neg.shape, len(queue)
        (torch.Size([3, 4]), 6)
    """

    keys: Tensor
    key_labels: Tensor
    ptr: Tensor
    count: Tensor

    def __init__(
        self,
        size: int,
        dim: int,
        *,
        labels: bool = False,
        dtype: torch.dtype = torch.float32,
        distributed: bool = False,
    ) -> None:
        super().__init__()
        for name, v in (("size", size), ("dim", dim)):
            if isinstance(v, bool) or not isinstance(v, int):
                raise TypeError(f"{name} must be an int, got {type(v).__name__}")
            if v < 1:
                raise ValueError(f"{name} must be >= 1, got {v}")
        if not dtype.is_floating_point:
            raise TypeError(f"dtype must be a floating-point dtype, got {dtype}")
        self.size, self.dim = size, dim
        self.with_labels = bool(labels)
        self.distributed = bool(distributed)
        self.register_buffer("keys", torch.zeros(size, dim, dtype=dtype))
        if self.with_labels:
            self.register_buffer("key_labels", torch.zeros(size, dtype=torch.int64))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.int64))
        self.register_buffer("count", torch.zeros((), dtype=torch.int64))

    def __len__(self) -> int:
        return int(self.count)

    def read(self) -> QueueSnapshot:
        """The current contents, oldest first, as new tensors (later writes do not change them)."""
        n, ptr = int(self.count), int(self.ptr)
        order = torch.arange(ptr, ptr + n, device=self.keys.device) % self.size
        if n < self.size:
            order = torch.arange(n, device=self.keys.device)
        labels = self.key_labels[order] if self.with_labels else None
        return QueueSnapshot(self.keys[order], labels)

    @torch.no_grad()
    def push(self, keys: Tensor, labels: Tensor | None = None) -> None:
        """Enqueue ``keys (B, D)`` (and ``labels (B,)``), detached; with ``distributed=True``
        the keys of every rank, in rank order."""
        error = None
        try:
            keys, labels = self._check(keys, labels)
        except (TypeError, ValueError) as err:
            if not self.distributed:
                raise
            error = f"{type(err).__name__}: {err}"  # raised on every rank by exchange_meta
        if self.distributed:
            sizes = [m["keys"][0][0] for m in cdist.exchange_meta(  # type: ignore[index]
                {"keys": None if error else keys, "labels": None if error else labels},
                same=("keys", "labels"), error=error, what="queue push",
            )]  # fmt: skip
            keys = cdist.all_gather(keys, sizes, what="queue keys")
            if labels is not None:
                labels = cdist.all_gather(labels, sizes, what="queue labels")
        if keys.shape[0] > self.size:  # a batch larger than the queue: its newest rows
            keys = keys[-self.size :]
            labels = None if labels is None else labels[-self.size :]
        n, ptr = keys.shape[0], int(self.ptr)
        idx = torch.arange(ptr, ptr + n, device=self.keys.device) % self.size
        self.keys[idx] = keys.to(device=self.keys.device, dtype=self.keys.dtype)
        if labels is not None:
            self.key_labels[idx] = labels.to(device=self.keys.device, dtype=torch.int64)
        self.ptr.fill_((ptr + n) % self.size)
        self.count.fill_(min(int(self.count) + n, self.size))

    def _check(self, keys: Tensor, labels: Tensor | None) -> tuple[Tensor, Tensor | None]:
        keys = check_embeddings("keys", keys)
        if keys.shape[1] != self.dim:
            raise ValueError(f"keys must have {self.dim} features, got shape {tuple(keys.shape)}")
        if self.with_labels:
            if labels is None:
                raise ValueError("this queue stores labels: pass labels= with the keys")
            labels = check_labels("labels", labels, keys.shape[0], keys.device)
        elif labels is not None:
            raise ValueError("labels= given to a queue created without labels=True")
        return keys.detach(), labels

    def forward(self, keys: Tensor, labels: Tensor | None = None) -> QueueSnapshot:
        """The contents before this batch, then enqueue the batch (see the class doc)."""
        snapshot = self.read()
        self.push(keys, labels)
        return snapshot

    def reset(self) -> None:
        """Empty the queue."""
        self.ptr.zero_()
        self.count.zero_()

    def extra_repr(self) -> str:
        return (
            f"size={self.size}, dim={self.dim}, labels={self.with_labels}, "
            f"dtype={self.keys.dtype}, distributed={self.distributed}"
        )
