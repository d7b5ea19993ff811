"""Which (query, key) pairs are positives, with what weight, and which leave the denominator.

A :class:`Pairing` is computable tile by tile: :meth:`Pairing.tile` returns the positive weights
and the exclusion mask of any rectangle ``rows r0:r1 x keys c0:c1``.  Diagonal and label pairings
build the tile from indices and labels, never from a ``B x N`` matrix; an explicit matrix is the
fallback and is sliced.

Kinds:

- ``diagonal``: query ``i`` and key ``i`` are the positive pair (CLIP, InfoNCE with paired views).
- ``labels``: query ``i`` and key ``j`` are positive iff ``query_labels[i] == key_labels[j]``.
- ``matrix``: an explicit ``(B, N)`` boolean mask or non-negative float weights (soft positives).

Independently of the kind, ``exclude`` (boolean ``(B, N)``) drops pairs from both the positives
and the denominator, and ``exclude_self`` drops the pairs ``(i, i)`` (set when the queries and the
keys are the same set of embeddings, as in SimCLR or SupCon).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor

from contrastkit._validation import check_labels, check_matrix, check_tensor

PAIRING_KINDS = ("diagonal", "labels", "matrix")


@dataclass(frozen=True)
class Pairing:
    """Positive weights and exclusions for a ``num_queries x num_keys`` grid (see module doc).

    Example:
        >>> import torch
        >>> p = Pairing.from_labels(torch.tensor([0, 1, 0]), exclude_self=True)
        >>> w, ex = p.tile(0, 3, 0, 3, dtype=torch.float32)
        >>> w
        tensor([[0., 0., 1.],
                [0., 0., 0.],
                [1., 0., 0.]])
    """

    num_queries: int
    num_keys: int
    kind: str
    query_labels: Tensor | None = None
    key_labels: Tensor | None = None
    weights: Tensor | None = None
    exclude: Tensor | None = None
    exclude_self: bool = False
    device: torch.device = torch.device("cpu")

    # -- constructors -------------------------------------------------------------------------
    @staticmethod
    def diagonal(
        num_queries: int,
        num_keys: int | None = None,
        *,
        exclude: Tensor | None = None,
        device: torch.device | str = "cpu",
    ) -> Pairing:
        """Query ``i`` <-> key ``i``; keys past ``num_queries`` are negatives for every query."""
        num_keys = num_queries if num_keys is None else num_keys
        if num_keys < num_queries:
            raise ValueError(
                f"diagonal pairing needs at least as many keys as queries, got {num_queries} "
                f"queries and {num_keys} keys; pass labels= or positives= instead"
            )
        return Pairing(
            num_queries, num_keys, "diagonal", exclude=exclude, device=torch.device(device)
        )

    @staticmethod
    def from_labels(
        query_labels: Tensor,
        key_labels: Tensor | None = None,
        *,
        exclude: Tensor | None = None,
        exclude_self: bool = False,
    ) -> Pairing:
        """Query ``i`` and key ``j`` are positives iff their labels are equal."""
        query_labels = check_tensor("labels", query_labels)
        n = query_labels.shape[0] if query_labels.dim() == 1 else 0
        query_labels = check_labels("labels", query_labels, n, query_labels.device)
        key_labels = query_labels if key_labels is None else key_labels
        key_labels = check_labels("key_labels", key_labels, len(key_labels), query_labels.device)
        if exclude_self and len(key_labels) != len(query_labels):
            raise ValueError("exclude_self needs as many keys as queries")
        return Pairing(
            len(query_labels),
            len(key_labels),
            "labels",
            query_labels=query_labels,
            key_labels=key_labels,
            exclude=exclude,
            exclude_self=exclude_self,
            device=query_labels.device,
        )

    @staticmethod
    def from_matrix(
        positives: Tensor,
        *,
        exclude: Tensor | None = None,
        exclude_self: bool = False,
    ) -> Pairing:
        """An explicit ``(B, N)`` positive mask (bool) or soft weights (float, >= 0)."""
        positives = check_tensor("positives", positives)
        if positives.dim() != 2:
            raise ValueError(
                f"positives must be a (num_queries, num_keys) matrix, got {tuple(positives.shape)}"
            )
        if positives.dtype != torch.bool:
            if not positives.is_floating_point():
                raise TypeError(
                    f"positives must be a bool mask or float weights, got dtype {positives.dtype}"
                )
            if not bool(torch.isfinite(positives).all()) or bool((positives < 0).any()):
                raise ValueError("positives (float weights) must be finite and >= 0")
        return Pairing(
            positives.shape[0],
            positives.shape[1],
            "matrix",
            weights=positives,
            exclude=exclude,
            exclude_self=exclude_self,
            device=positives.device,
        )

    # -- validation ---------------------------------------------------------------------------
    def validated(self, device: torch.device) -> Pairing:
        """Check the exclusion mask's shape, dtype and device; return self."""
        if self.exclude is not None:
            ex = check_matrix("exclude", self.exclude, (self.num_queries, self.num_keys), device)
            if ex.dtype != torch.bool:
                raise TypeError(f"exclude must be a bool tensor, got dtype {ex.dtype}")
        if self.weights is not None:
            check_matrix("positives", self.weights, (self.num_queries, self.num_keys), device)
        return self

    # -- per-tile evaluation ------------------------------------------------------------------
    def tile(
        self, r0: int, r1: int, c0: int, c1: int, dtype: torch.dtype = torch.float32
    ) -> tuple[Tensor, Tensor | None]:
        """Positive weights ``(r1-r0, c1-c0)`` in ``dtype`` (0 where excluded) and the bool
        exclusion mask of the tile (``None`` when nothing in the tile is excluded)."""
        device = self.device
        excl = self._exclude_tile(r0, r1, c0, c1, device)
        if self.kind == "diagonal":
            rows = torch.arange(r0, r1, device=device)
            cols = torch.arange(c0, c1, device=device)
            w = (rows[:, None] == cols[None, :]).to(dtype)
        elif self.kind == "labels":
            assert self.query_labels is not None and self.key_labels is not None
            w = (self.query_labels[r0:r1, None] == self.key_labels[None, c0:c1]).to(dtype)
        else:
            assert self.weights is not None
            w = self.weights[r0:r1, c0:c1].to(dtype)
        if excl is not None:
            w = w.masked_fill(excl, 0.0)
        return w, excl

    def _exclude_tile(
        self, r0: int, r1: int, c0: int, c1: int, device: torch.device
    ) -> Tensor | None:
        excl = None
        if self.exclude is not None:
            excl = self.exclude[r0:r1, c0:c1]
        if self.exclude_self and max(r0, c0) < min(r1, c1):
            rows = torch.arange(r0, r1, device=device)
            cols = torch.arange(c0, c1, device=device)
            eye = rows[:, None] == cols[None, :]
            excl = eye if excl is None else (excl | eye)
        return excl

    def on(self, device: torch.device) -> Pairing:
        """The same pairing with its tensors moved to (and its tiles built on) ``device``."""
        moved = {
            name: (getattr(self, name).to(device) if getattr(self, name) is not None else None)
            for name in ("query_labels", "key_labels", "weights", "exclude")
        }
        return replace(self, device=torch.device(device), **moved)

    def transpose(self) -> Pairing:
        """The pairing of the reverse direction (keys as queries), for symmetric losses."""
        return replace(
            self,
            num_queries=self.num_keys,
            num_keys=self.num_queries,
            query_labels=self.key_labels,
            key_labels=self.query_labels,
            weights=None if self.weights is None else self.weights.T,
            exclude=None if self.exclude is None else self.exclude.T,
        )

    def dense(self, dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor | None]:
        """The whole grid as one tile (for the dense engine and for reading)."""
        return self.tile(0, self.num_queries, 0, self.num_keys, dtype)
