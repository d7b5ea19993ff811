"""Gradient accumulation that keeps its negatives (ContAccum; Kim, Lee & Kang 2024)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import torch
from torch import Tensor

from contrastkit._validation import check_embeddings, check_labels, check_same_dim
from contrastkit.negatives.queue import NegativeQueue

__all__ = ["ContAccum", "AccumulatedBatch"]


class AccumulatedBatch(NamedTuple):
    """The current micro-batch followed by the memory: ``query (B + M, D)``, ``key (B + M, D)``
    and ``labels (B + M,)`` (``None`` without labels).  Rows ``:B`` are the current ones (with
    their graph), rows ``B:`` the memory (detached); row ``i`` of ``query`` and of ``key`` are
    still a pair.

    Example:
        >>> import torch
        >>> acc = ContAccum()
        >>> _ = acc(torch.randn(4, 8), torch.randn(4, 8))
        >>> batch = acc(torch.randn(4, 8, requires_grad=True), torch.randn(4, 8))
        >>> batch.query.shape, batch.labels is None
        (torch.Size([8, 8]), True)
    """

    query: Tensor
    key: Tensor
    labels: Tensor | None


class ContAccum:
    r"""Gradient accumulation whose loss keeps the negatives of the earlier micro-steps
    (Contrastive Accumulation, Kim, Lee & Kang 2024).

    Plain gradient accumulation splits a batch of ``K x b`` pairs into ``K`` micro-steps, and each
    micro-step's InfoNCE sees only ``b`` keys: the negative pool shrinks ``K`` times.  ContAccum
    keeps a *dual* memory of the query and key embeddings of earlier micro-steps (detached) and
    contrasts the current micro-batch against them too: at micro-step ``m`` the similarity matrix
    is ``(b + M) x (b + M)`` over ``[current; memory]`` for both queries and keys, so that the
    symmetric loss has negatives in both directions and the gradients of the query and key
    encoders stay balanced (the paper's argument for the dual bank).

    ``acc(query, key, labels)`` returns the :class:`AccumulatedBatch` ``[current; memory]`` and then
    stores the current embeddings (detached).  Feed it to any loss: ``info_nce(*batch[:2],
    symmetric=True)`` (the paper's setting, every row an anchor), ``info_nce(q, batch.key)``
    (current queries against all keys), ``info_nce(batch.query, batch.key,
    labels=batch.labels)`` (SupCon-style), the sigmoid loss...; gradients reach only the current
    micro-batch.

    Args:
        memory_size: ``None`` (default): the memory holds every earlier micro-step of the current
            optimizer step — call :meth:`reset` after ``optimizer.step()``; an int ``M``: a FIFO of
            the newest ``M`` pairs kept across optimizer steps (the paper's ``N_memory``).
        labels: also keep the labels.

    Example:
        >>> import torch
        >>> from contrastkit.functional import info_nce
        >>> acc = ContAccum()
        >>> for step in range(4):                       # 4 micro-steps of 8 pairs
        ...     q, k = torch.randn(8, 16, requires_grad=True), torch.randn(8, 16)
        ...     batch = acc(q, k)
        ...     loss = info_nce(batch.query, batch.key, symmetric=True) / 4
        ...     loss.backward()
        >>> batch.key.shape                             # the last micro-step saw all 32 keys
        torch.Size([32, 16])
        >>> acc.reset()                                 # after optimizer.step()
    """

    def __init__(self, memory_size: int | None = None, *, labels: bool = False) -> None:
        if memory_size is not None:
            if isinstance(memory_size, bool) or not isinstance(memory_size, int):
                raise TypeError(f"memory_size must be an int or None, got {memory_size!r}")
            if memory_size < 1:
                raise ValueError(f"memory_size must be >= 1, got {memory_size}")
        self.memory_size = memory_size
        self.with_labels = bool(labels)
        self._queues: tuple[NegativeQueue, NegativeQueue] | None = None
        self._rows: list[tuple[Tensor, Tensor, Tensor | None]] = []

    def __len__(self) -> int:
        if self._queues is not None:
            return len(self._queues[0])
        return sum(q.shape[0] for q, _, _ in self._rows)

    def memory(self) -> AccumulatedBatch:
        """The stored (detached) queries, keys and labels, oldest first."""
        if self._queues is not None:
            (q, _), (k, labels) = self._queues[0].read(), self._queues[1].read()
            return AccumulatedBatch(q, k, labels)
        if not self._rows:
            return AccumulatedBatch(torch.empty(0), torch.empty(0), None)
        qs, ks, ls = zip(*self._rows, strict=True)
        labels = torch.cat(ls) if self.with_labels else None  # type: ignore[arg-type]
        return AccumulatedBatch(torch.cat(qs), torch.cat(ks), labels)

    def __call__(
        self, query: Tensor, key: Tensor, labels: Tensor | None = None
    ) -> AccumulatedBatch:
        query = check_embeddings("query", query)
        key = check_embeddings("key", key)
        check_same_dim(("query", "key"), (query, key))
        if query.shape[0] != key.shape[0]:
            raise ValueError(
                f"query and key must be pairs (same rows), got {query.shape[0]} and {key.shape[0]}"
            )
        if self.with_labels:
            if labels is None:
                raise ValueError("this ContAccum keeps labels: pass labels=")
            labels = check_labels("labels", labels, query.shape[0], query.device)
        elif labels is not None:
            raise ValueError("labels= given to a ContAccum created without labels=True")
        mem = self.memory()
        if len(self) > 0 and mem.query.shape[1] != query.shape[1]:
            raise ValueError(
                f"query and key have {query.shape[1]} features but the memory holds "
                f"{mem.query.shape[1]}: every micro-step must have the same feature size"
            )
        if len(self) > 0:
            dtype = query.dtype
            out = AccumulatedBatch(
                torch.cat([query, mem.query.to(device=query.device, dtype=dtype)]),
                torch.cat([key, mem.key.to(device=key.device, dtype=key.dtype)]),
                None if labels is None else torch.cat([labels, mem.labels.to(labels.device)]),  # type: ignore[union-attr]
            )
        else:
            out = AccumulatedBatch(query, key, labels)
        self._store(query.detach(), key.detach(), None if labels is None else labels.detach())
        return out

    def _store(self, query: Tensor, key: Tensor, labels: Tensor | None) -> None:
        if self.memory_size is None:
            self._rows.append((query, key, labels))
            return
        if self._queues is None:
            dim = query.shape[1]
            self._queues = (
                NegativeQueue(self.memory_size, dim, dtype=query.dtype).to(query.device),
                NegativeQueue(self.memory_size, dim, labels=self.with_labels, dtype=key.dtype).to(
                    key.device
                ),
            )
        self._queues[0].push(query)
        self._queues[1].push(key, labels)

    def state_dict(self) -> dict[str, Any]:
        """The memory (queries, keys, labels, oldest first; copies) and the settings, to save with a
        checkpoint: :meth:`load_state_dict` resumes the accumulation exactly (with an int
        ``memory_size`` the memory outlives optimizer steps, so it belongs in the checkpoint)."""
        mem = self.memory()
        return {
            "memory_size": self.memory_size,
            "labels": self.with_labels,
            "query": mem.query.clone(),
            "key": mem.key.clone(),
            "key_labels": None if mem.labels is None else mem.labels.clone(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore the memory saved by :meth:`state_dict` (same ``memory_size`` and ``labels``)."""
        for name, mine in (("memory_size", self.memory_size), ("labels", self.with_labels)):
            if name not in state or state[name] != mine:
                raise ValueError(
                    f"state was saved with {name}={state.get(name)!r}, but this ContAccum has "
                    f"{name}={mine!r}"
                )
        self._rows, self._queues = [], None
        if state["query"].numel():
            self._store(state["query"].clone(), state["key"].clone(), state["key_labels"])

    def reset(self) -> None:
        """Forget the memory (with ``memory_size=None``, call it after each optimizer step)."""
        self._rows = []
        if self._queues is not None:
            for q in self._queues:
                q.reset()
