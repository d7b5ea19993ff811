r"""Retrieval metrics, streamed over key chunks: a ``Q x K`` score matrix is never materialised.

Every metric here derives from the **ranks of the relevant keys**.  For query :math:`i` with
relevant keys :math:`\mathcal R_i` and candidate keys :math:`\mathcal C_i` (every key, minus
key ``i`` when ``exclude_self``), the rank of relevant key :math:`r` is

.. math::  \rho_{ir} = \mathrm{pos}_{ir}
           + \#\{\, j \in \mathcal C_i \setminus \mathcal R_i : s_{ij} \ge s_{ir} \,\}

where :math:`\mathrm{pos}_{ir}` is :math:`r`'s place among the relevant keys sorted by score.
Ties with irrelevant keys count against the query (so collapsed embeddings cannot score well),
and scores within a few float ulps of :math:`s_{ir}` count as ties.  :func:`relevant_ranks`
computes all :math:`\rho_{ir}` in one pass: per block of queries and chunk of keys, one matmul
and one comparison with each relevant score, so memory is ``O(block x chunk + Q x R)``.

Relevance, the same keywords for every metric (``**relevance``):

- default: key ``i`` is query ``i``'s only relevant key (paired data, e.g. image <-> caption);
- ``labels=`` / ``key_labels=``: key ``j`` is relevant to query ``i`` iff their labels are equal;
- ``relevant=``: a ``(Q,)`` or ``(Q, R)`` long tensor of key indices (``-1`` pads), a
  sequence of ``Q`` index collections, or a dense ``(Q, K)`` bool mask / float grades (graded
  relevance, used as gains by :func:`ndcg`);
- ``exclude_self=True``: query ``i`` is key ``i`` (intra-modal retrieval); it is neither a
  candidate nor relevant to itself.

Queries without any relevant key are left out of every average.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from contrastkit._validation import (
    check_choice,
    check_embeddings,
    check_labels,
    check_same_dim,
    check_tensor,
)
from contrastkit.similarity import (
    SIMILARITIES,
    pairwise_similarity,
    prepare,
    rowwise_similarity,
    to_common_dtype,
)

__all__ = [
    "RelevantRanks",
    "relevant_ranks",
    "recall_at_k",
    "mean_reciprocal_rank",
    "mean_rank",
    "median_rank",
    "mean_average_precision",
    "map_at_r",
    "ndcg",
    "retrieval_auc",
    "roc_auc",
    "mean_rank_variance",
    "retrieval_metrics",
    "intra_inter_retrieval",
]


@dataclass(frozen=True)
class RelevantRanks:
    """The ranks of every query's relevant keys (see the module doc).

    Attributes:
        ranks: ``(Q, R)`` long, 1-based rank of each relevant key, in the order the relevance
            was given; ``0`` pads rows with fewer than ``R`` relevant keys.
        gains: ``(Q, R)`` relevance grades (1 for binary relevance), ``0`` on padding.
        num_candidates: ``(Q,)`` number of keys each query was ranked against.

    Example:
        >>> import torch
        >>> q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
        >>> k = torch.tensor([[0.0, 1.0], [1.0, 0.1], [1.0, 0.0]])
        >>> rr = relevant_ranks(q, k, relevant=[[2], [0, 1]])  # query 1: two relevant keys
        >>> rr.ranks.tolist(), rr.first().tolist()
        ([[1, 0], [1, 2]], [1, 1])
    """

    ranks: Tensor
    gains: Tensor
    num_candidates: Tensor

    @property
    def valid(self) -> Tensor:
        """``(Q, R)`` bool: which entries are relevant keys (not padding)."""
        return self.ranks > 0

    @property
    def num_relevant(self) -> Tensor:
        """``(Q,)`` number of relevant keys of each query."""
        return self.valid.sum(dim=1)

    def first(self) -> Tensor:
        """``(Q,)`` rank of the best-ranked relevant key (``0`` for queries without one)."""
        big = torch.iinfo(self.ranks.dtype).max
        first = self.ranks.masked_fill(~self.valid, big).amin(dim=1)
        return torch.where(self.num_relevant > 0, first, torch.zeros_like(first))

    def sorted(self) -> Tensor:
        """``(Q, R)`` ranks sorted ascending per row, padding last (as ``0``)."""
        big = torch.iinfo(self.ranks.dtype).max
        s = self.ranks.masked_fill(~self.valid, big).sort(dim=1).values
        return s.masked_fill(s == big, 0)


# -- relevance -------------------------------------------------------------------------------
def _pad_rows(rows: list[list[int]], device: torch.device) -> Tensor:
    width = max((len(r) for r in rows), default=0)
    out = torch.full((len(rows), max(width, 1)), -1, dtype=torch.long)
    for i, r in enumerate(rows):
        if r:
            out[i, : len(r)] = torch.as_tensor(r, dtype=torch.long)
    return out.to(device)


def _dense_to_index(m: Tensor) -> tuple[Tensor, Tensor]:
    rel = m > 0 if m.is_floating_point() else m
    count = rel.sum(dim=1)
    width = max(int(count.max()), 1)
    order = torch.argsort((~rel).to(torch.int8), dim=1, stable=True)[:, :width]
    valid = torch.arange(width, device=m.device)[None, :] < count[:, None]
    idx = torch.where(valid, order, torch.full_like(order, -1))
    if m.is_floating_point():
        gains = torch.where(valid, m.gather(1, order), torch.zeros((), dtype=m.dtype))
    else:
        gains = valid.to(torch.float32)
    return idx, gains


def _relevance(
    num_q: int,
    num_k: int,
    device: torch.device,
    relevant: Tensor | Sequence[Iterable[int]] | None,
    labels: Tensor | None,
    key_labels: Tensor | None,
    exclude_self: bool,
) -> tuple[Tensor, Tensor]:
    """``(Q, R)`` relevant key indices (``-1`` pads) and their gains."""
    if relevant is not None and (labels is not None or key_labels is not None):
        raise ValueError("pass either relevant= or labels=/key_labels=, not both")
    if exclude_self and num_k < num_q:
        raise ValueError(
            f"exclude_self=True means query i is key i, but there are {num_q} queries and only "
            f"{num_k} keys"
        )
    gains = None
    if labels is not None or key_labels is not None:
        if labels is None:
            raise ValueError("key_labels= needs labels= for the queries")
        labels = check_labels("labels", labels, num_q, device)
        if key_labels is None:
            if num_k != num_q:
                raise ValueError(
                    f"labels has {num_q} entries but there are {num_k} keys; pass key_labels="
                )
            key_labels = labels
        key_labels = check_labels("key_labels", key_labels, num_k, device)
        sorted_kl, order = torch.sort(key_labels, stable=True)
        start = torch.searchsorted(sorted_kl, labels)
        count = torch.searchsorted(sorted_kl, labels, right=True) - start
        width = max(int(count.max()), 1)
        j = torch.arange(width, device=device)
        pos = (start[:, None] + j[None, :]).clamp(max=num_k - 1)
        idx = torch.where(j[None, :] < count[:, None], order[pos], torch.full_like(pos, -1))
    elif relevant is None:
        if exclude_self:
            raise ValueError(
                "exclude_self=True removes key i, the default relevant key of query i: pass "
                "labels= or relevant="
            )
        if num_k < num_q:
            raise ValueError(
                f"query i's relevant key is key i by default, but there are {num_q} queries and "
                f"only {num_k} keys: pass labels= or relevant="
            )
        idx = torch.arange(num_q, device=device)[:, None]
    elif isinstance(relevant, Tensor):
        if relevant.dim() == 2 and (relevant.dtype == torch.bool or relevant.is_floating_point()):
            if tuple(relevant.shape) != (num_q, num_k):
                raise ValueError(
                    f"relevant (dense) must have shape ({num_q}, {num_k}), got "
                    f"{tuple(relevant.shape)}"
                )
            if relevant.is_floating_point() and (
                not bool(torch.isfinite(relevant).all()) or bool((relevant < 0).any())
            ):
                raise ValueError("relevant (graded) must be finite and >= 0")
            idx, gains = _dense_to_index(relevant.to(device))
        elif (
            relevant.dtype != torch.bool
            and not relevant.is_floating_point()
            and (relevant.dim() in (1, 2))
        ):
            idx = relevant.to(device, torch.long)
            idx = idx[:, None] if idx.dim() == 1 else idx
            if (
                tuple(idx.shape) == (num_q, num_k)
                and num_k > 2
                and bool(((idx == 0) | (idx == 1)).all())
                and bool(((idx == 0).sum(1) > 1).any())
            ):
                raise ValueError(
                    f"relevant is a ({num_q}, {num_k}) integer tensor of 0s and 1s with key 0 "
                    "repeated in a row: it looks like a 0/1 mask, but integer tensors are read "
                    "as key indices; pass relevant.bool() for a mask (or pad index lists "
                    "with -1)"
                )
            if idx.shape[0] != num_q:
                raise ValueError(
                    f"relevant must have {num_q} rows (one per query), got {idx.shape[0]}"
                )
            if idx.numel() and (int(idx.min()) < -1 or int(idx.max()) >= num_k):
                raise ValueError(f"relevant indices must lie in [0, {num_k}) (or -1 for padding)")
        else:
            raise ValueError(
                "relevant must be a (Q,) / (Q, R) long index tensor or a (Q, K) bool/float "
                f"matrix, got {relevant.dtype} {tuple(relevant.shape)}"
            )
    else:
        rows = [sorted(int(j) for j in r) for r in relevant]
        if len(rows) != num_q:
            raise ValueError(f"relevant must have {num_q} entries (one per query), got {len(rows)}")
        if any(j < 0 or j >= num_k for r in rows for j in r):
            raise ValueError(f"relevant indices must lie in [0, {num_k})")
        idx = _pad_rows(rows, device)
    if exclude_self:
        idx = idx.masked_fill(idx == torch.arange(num_q, device=device)[:, None], -1)
    # duplicates (kept in place, so the given order survives)
    if idx.shape[1] > 1:
        vals, perm = idx.sort(dim=1, stable=True)
        dup = (vals[:, 1:] == vals[:, :-1]) & (vals[:, 1:] >= 0)
        kill = torch.zeros_like(idx, dtype=torch.bool).scatter_(1, perm[:, 1:], dup)
        idx = idx.masked_fill(kill, -1)
    if gains is None:
        gains = (idx >= 0).to(torch.float32)
    else:
        gains = gains.masked_fill(idx < 0, 0.0)
    return idx, gains


# -- the streaming pass ----------------------------------------------------------------------
def relevant_ranks(
    query: Tensor,
    key: Tensor,
    *,
    relevant: Tensor | Sequence[Iterable[int]] | None = None,
    labels: Tensor | None = None,
    key_labels: Tensor | None = None,
    exclude_self: bool = False,
    similarity: str = "cosine",
    query_chunk_size: int = 4096,
    key_chunk_size: int = 4096,
) -> RelevantRanks:
    r"""The rank of every relevant key of every query, streaming over key chunks.

    Args:
        query: ``(Q, D)`` query embeddings.
        key: ``(K, D)`` key (gallery) embeddings.
        relevant, labels, key_labels, exclude_self: which keys are relevant (module doc).
        similarity: ``"cosine"``, ``"dot"`` or ``"neg_sq_euclidean"``.
        query_chunk_size, key_chunk_size: the block of the score matrix held at once.

    Returns:
        :class:`RelevantRanks`.

    Example:
        >>> import torch
        >>> q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
        >>> k = torch.tensor([[0.0, 1.0], [1.0, 0.1], [1.0, 0.0]])
        >>> relevant_ranks(q, k).ranks.flatten().tolist()    # key 0 for query 0, key 1 for 1
        [3, 2]
    """
    query = check_embeddings("query", query)
    key = check_embeddings("key", key)
    check_same_dim(("query", "key"), (query, key))
    check_choice("similarity", similarity, SIMILARITIES)
    for name, v in (("query_chunk_size", query_chunk_size), ("key_chunk_size", key_chunk_size)):
        if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 2**24:
            raise ValueError(f"{name} must be an int in [1, 2**24], got {v!r}")
    num_q, num_k = query.shape[0], key.shape[0]
    idx, gains = _relevance(num_q, num_k, query.device, relevant, labels, key_labels, exclude_self)
    valid = idx >= 0
    if not bool(valid.any()):
        raise ValueError("no query has a relevant key: check relevant= / labels= / exclude_self")
    with torch.no_grad():
        query, key = to_common_dtype(query, key)  # e.g. float32 vs float64 towers
        q = prepare(query, similarity)
        kk = prepare(key, similarity)
        rel_scores, thr = _relevant_scores(q, kk, idx, valid, similarity)
        irrelevant_ge = torch.zeros(idx.shape, dtype=torch.long, device=q.device)
        for r0 in range(0, num_q, query_chunk_size):
            r1 = min(num_q, r0 + query_chunk_size)
            irrelevant_ge[r0:r1] = _count_at_least(
                q[r0:r1], kk, thr[r0:r1], idx[r0:r1], r0, exclude_self, similarity, key_chunk_size
            )
        pos = torch.empty_like(irrelevant_ge)
        order = (
            rel_scores.masked_fill(~valid, -math.inf)
            .sort(dim=1, descending=True, stable=True)
            .indices
        )
        pos.scatter_(1, order, torch.arange(1, idx.shape[1] + 1, device=q.device).expand_as(idx))
        ranks = torch.where(valid, pos + irrelevant_ge, torch.zeros_like(pos))
    num_candidates = torch.full((num_q,), num_k - int(exclude_self), device=q.device)
    return RelevantRanks(ranks, gains.to(q.device), num_candidates)


def _relevant_scores(
    q: Tensor, kk: Tensor, idx: Tensor, valid: Tensor, similarity: str
) -> tuple[Tensor, Tensor]:
    """Scores of the relevant keys ``(Q, R)`` and the thresholds they set: the score minus a
    rounding tolerance (so near-ties count as ties), ``+inf`` on padding."""
    eps = torch.finfo(q.dtype).eps
    scores = torch.empty(idx.shape, dtype=q.dtype, device=q.device)
    thr = torch.empty_like(scores)
    step = max(1, (1 << 24) // (idx.shape[1] * q.shape[1]))
    for r0 in range(0, q.shape[0], step):
        qb, ib, vb = q[r0 : r0 + step], idx[r0 : r0 + step], valid[r0 : r0 + step]
        cand = kk[ib.clamp(min=0)]
        s = rowwise_similarity(qb, cand, similarity)
        scale = qb.norm(dim=1, keepdim=True) * cand.norm(dim=2)
        if similarity == "neg_sq_euclidean":
            scale = scale + qb.pow(2).sum(1, keepdim=True) + cand.pow(2).sum(2)
        scores[r0 : r0 + step] = s
        thr[r0 : r0 + step] = torch.where(vb, s - 32 * eps * scale, math.inf)
    return scores, thr


def _count_at_least(
    qb: Tensor,
    kk: Tensor,
    thr: Tensor,
    rel_idx: Tensor,
    r0: int,
    exclude_self: bool,
    similarity: str,
    chunk: int,
) -> Tensor:
    """``(Qb, R)``: candidate irrelevant keys scoring >= each threshold, over key chunks."""
    nq, width = thr.shape
    counts = torch.zeros(nq, width, dtype=torch.long, device=qb.device)
    rows = torch.arange(nq, device=qb.device)
    few = width <= 8  # one comparison pass per threshold; beyond, a sorted search
    if not few:
        sorted_thr, perm = thr.sort(dim=1)
    # reused buffers (no allocation per chunk): the score block, and the comparison written as
    # 0/1 floats, whose row sums are exact (chunk <= 2**24) and need no integer conversion
    score_buf = torch.empty(nq * min(chunk, kk.shape[0]), dtype=qb.dtype, device=qb.device)
    hit_buf = torch.empty_like(score_buf)
    for c0 in range(0, kk.shape[0], chunk):
        c1 = min(kk.shape[0], c0 + chunk)
        if similarity == "neg_sq_euclidean":
            s = pairwise_similarity(qb, kk[c0:c1], similarity)
        else:
            s = torch.mm(qb, kk[c0:c1].T, out=score_buf[: nq * (c1 - c0)].view(nq, c1 - c0))
        local = rel_idx - c0
        inside = (local >= 0) & (local < c1 - c0) & (rel_idx >= 0)
        s[rows[:, None].expand_as(local)[inside], local[inside]] = -math.inf
        if exclude_self:
            own = rows + r0 - c0
            keep = (own >= 0) & (own < c1 - c0)
            s[rows[keep], own[keep]] = -math.inf
        if few:
            hits = hit_buf[: s.numel()].view(s.shape)
            for j in range(width):
                torch.ge(s, thr[:, j : j + 1], out=hits)
                counts[:, j] += hits.sum(dim=1).long()
        else:
            below = torch.searchsorted(sorted_thr, s, right=True)  # thresholds <= each score
            hist = torch.zeros(nq, width + 1, dtype=torch.long, device=s.device)
            hist.scatter_add_(1, below, torch.ones_like(below))
            at_least = hist.flip(1).cumsum(1).flip(1)[:, 1:]
            counts.scatter_add_(1, perm, at_least)
    return counts


# -- metrics from ranks ----------------------------------------------------------------------
def _as_ranks(query: Tensor | RelevantRanks, key: Tensor | None, relevance: Any) -> RelevantRanks:
    if isinstance(query, RelevantRanks):
        if key is not None or relevance:
            raise ValueError("pass either RelevantRanks alone, or query and key (and relevance)")
        return query
    if key is None:
        raise ValueError("key is required when query is an embedding tensor")
    return relevant_ranks(query, key, **relevance)


def _rows(r: RelevantRanks) -> Tensor:
    return r.num_relevant > 0


def _ks(k: int | Sequence[int]) -> list[int]:
    ks = [k] if isinstance(k, int) and not isinstance(k, bool) else list(k)
    for v in ks:
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"k must be an int >= 1 (or a sequence of them), got {v!r}")
    return ks


def _check_k_candidates(ks: list[int], r: RelevantRanks) -> None:
    limit = int(r.num_candidates.max())
    if max(ks) > limit:
        raise ValueError(f"k={max(ks)} is larger than the number of candidate keys ({limit})")


def recall_at_k(
    query: Tensor | RelevantRanks,
    key: Tensor | None = None,
    k: int | Sequence[int] = 1,
    *,
    mode: str = "hit",
    **relevance: Any,
) -> Tensor:
    r"""Recall@K.

    ``mode="hit"`` (cross-modal retrieval's R@K): the fraction of queries with a relevant key in
    the top ``k``, :math:`\frac1Q\sum_i[\min_r \rho_{ir} \le k]`.  ``mode="fraction"``: the mean
    fraction of each query's relevant keys in its top ``k``.

    Args:
        query: ``(Q, D)`` embeddings, or precomputed :class:`RelevantRanks` (then no ``key``).
        key: ``(K, D)`` embeddings.
        k: an int or a sequence of ints (``<=`` the number of candidate keys).
        mode: ``"hit"`` or ``"fraction"``.
        relevance: keywords of :func:`relevant_ranks`.

    Returns:
        A scalar tensor, or ``(len(k),)`` for a sequence.

    Example:
        >>> import torch
        >>> x = torch.randn(100, 16)
        >>> float(recall_at_k(x, x + 0.01 * torch.randn(100, 16), k=1))
        1.0
    """
    check_choice("mode", mode, ("hit", "fraction"))
    r = _as_ranks(query, key, relevance)
    ks = _ks(k)
    _check_k_candidates(ks, r)
    rows = _rows(r)
    out = []
    for kk in ks:
        if mode == "hit":
            v = (r.first()[rows] <= kk).double().mean()
        else:
            hits = ((r.ranks <= kk) & r.valid).sum(dim=1)
            v = (hits[rows].double() / r.num_relevant[rows]).mean()
        out.append(v)
    res = torch.stack(out)
    return res[0] if isinstance(k, int) else res


def mean_reciprocal_rank(
    query: Tensor | RelevantRanks, key: Tensor | None = None, **relevance: Any
) -> Tensor:
    r"""MRR: :math:`\frac1Q\sum_i 1/\min_r \rho_{ir}` (Voorhees 1999).

    Example:
        >>> import torch
        >>> q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
        >>> k = torch.tensor([[0.0, 1.0], [1.0, 0.1], [1.0, 0.0]])
        >>> round(float(mean_reciprocal_rank(q, k)), 4)   # ranks 3 and 2
        0.4167
    """
    r = _as_ranks(query, key, relevance)
    return (1.0 / r.first()[_rows(r)].double()).mean()


def mean_rank(query: Tensor | RelevantRanks, key: Tensor | None = None, **relevance: Any) -> Tensor:
    """Mean rank of each query's best-ranked relevant key (MnR).

    Example:
        >>> import torch
        >>> q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
        >>> k = torch.tensor([[0.0, 1.0], [1.0, 0.1], [1.0, 0.0]])
        >>> float(mean_rank(q, k))
        2.5
    """
    r = _as_ranks(query, key, relevance)
    return r.first()[_rows(r)].double().mean()


def median_rank(
    query: Tensor | RelevantRanks, key: Tensor | None = None, **relevance: Any
) -> Tensor:
    """Median rank of each query's best-ranked relevant key (MedR; TMR reports it), the mean of
    the two middle values for an even number of queries (as ``numpy.median``).

    Example:
        >>> import torch
        >>> q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
        >>> k = torch.tensor([[0.0, 1.0], [1.0, 0.1], [1.0, 0.0]])
        >>> float(median_rank(q, k))
        2.5
    """
    r = _as_ranks(query, key, relevance)
    first = r.first()[_rows(r)].double().sort().values
    n = first.numel()
    return (first[(n - 1) // 2] + first[n // 2]) / 2


def _average_precision(r: RelevantRanks, at_r: bool) -> Tensor:
    ranks = r.sorted().double()
    n_rel = r.num_relevant
    j = torch.arange(1, ranks.shape[1] + 1, device=ranks.device, dtype=torch.float64)
    terms = torch.where(ranks > 0, j / ranks.clamp(min=1), torch.zeros_like(ranks))
    if at_r:
        terms = torch.where(ranks <= n_rel[:, None].double(), terms, torch.zeros_like(terms))
    rows = _rows(r)
    return (terms.sum(dim=1)[rows] / n_rel[rows].double()).mean()


def mean_average_precision(
    query: Tensor | RelevantRanks, key: Tensor | None = None, **relevance: Any
) -> Tensor:
    r"""mAP: the mean over queries of :math:`\mathrm{AP}_i = \frac{1}{R_i} \sum_{j=1}^{R_i}
    \frac{j}{\rho_{i(j)}}`, with :math:`\rho_{i(1)} < \rho_{i(2)} < \dots` the sorted ranks of
    the :math:`R_i` relevant keys (precision at each relevant key, averaged).

    Example:
        >>> import torch
        >>> x, y = torch.randn(20, 8), torch.arange(20) % 4
        >>> 0 < float(mean_average_precision(x, x, labels=y, exclude_self=True)) <= 1
        True
    """
    return _average_precision(_as_ranks(query, key, relevance), at_r=False)


def map_at_r(query: Tensor | RelevantRanks, key: Tensor | None = None, **relevance: Any) -> Tensor:
    r"""mAP@R (Musgrave et al. 2020, "A Metric Learning Reality Check"): average precision over
    the top :math:`R_i` results only, :math:`\frac{1}{R_i}\sum_{j:\,\rho_{i(j)} \le R_i}
    \frac{j}{\rho_{i(j)}}`.

    Example:
        >>> import torch
        >>> x, y = torch.randn(20, 8), torch.arange(20) % 4
        >>> 0 <= float(map_at_r(x, x, labels=y, exclude_self=True)) <= 1
        True
    """
    return _average_precision(_as_ranks(query, key, relevance), at_r=True)


def ndcg(
    query: Tensor | RelevantRanks,
    key: Tensor | None = None,
    k: int | None = None,
    **relevance: Any,
) -> Tensor:
    r"""nDCG@k (Järvelin & Kekäläinen 2002) with linear gains, as ``sklearn.metrics.ndcg_score``:

    .. math::  \mathrm{DCG}_i = \sum_{r:\,\rho_{ir} \le k} \frac{g_{ir}}{\log_2(\rho_{ir} + 1)},
               \qquad \mathrm{nDCG}_i = \mathrm{DCG}_i / \mathrm{IDCG}_i

    where :math:`\mathrm{IDCG}_i` places the gains in decreasing order at ranks ``1, 2, ...``.
    Gains are 1 unless ``relevant=`` is a float matrix of grades.  ``k=None``: all ranks.

    Example:
        >>> import torch
        >>> x = torch.randn(50, 16)
        >>> float(ndcg(x, x, k=10))
        1.0
    """
    r = _as_ranks(query, key, relevance)
    if k is not None:
        _check_k_candidates(_ks(k), r)
    ranks = r.ranks.double()
    cutoff = math.inf if k is None else k
    used = r.valid & (ranks <= cutoff)
    dcg = torch.where(used, r.gains.double() / torch.log2(ranks + 1), torch.zeros_like(ranks))
    ideal = r.gains.double().sort(dim=1, descending=True).values
    pos = torch.arange(1, ideal.shape[1] + 1, device=ideal.device, dtype=torch.float64)
    ideal = torch.where(pos <= cutoff, ideal / torch.log2(pos + 1), torch.zeros_like(ideal))
    idcg = ideal.sum(dim=1)
    rows = _rows(r) & (idcg > 0)
    return (dcg.sum(dim=1)[rows] / idcg[rows]).mean()


def retrieval_auc(
    query: Tensor | RelevantRanks, key: Tensor | None = None, **relevance: Any
) -> Tensor:
    r"""Mean per-query ROC-AUC: the fraction of (relevant, irrelevant) key pairs a query orders
    correctly, :math:`1 - \frac{1}{R_i (C_i - R_i)} \sum_j (\rho_{i(j)} - j)` (the Mann-Whitney
    statistic; ties count against the query).  For the AUC of one pooled set of positive and
    negative scores, see :func:`roc_auc`.

    Example:
        >>> import torch
        >>> x = torch.randn(30, 8)
        >>> float(retrieval_auc(x, x))
        1.0
    """
    r = _as_ranks(query, key, relevance)
    ranks = r.sorted().double()
    j = torch.arange(1, ranks.shape[1] + 1, device=ranks.device, dtype=torch.float64)
    above = torch.where(ranks > 0, ranks - j, torch.zeros_like(ranks)).sum(dim=1)
    n_rel = r.num_relevant.double()
    n_irr = r.num_candidates.double() - n_rel
    rows = _rows(r) & (n_irr > 0)
    if not bool(rows.any()):
        raise ValueError("no query has both a relevant and an irrelevant candidate key")
    return (1.0 - above[rows] / (n_rel[rows] * n_irr[rows])).mean()


def roc_auc(positive_scores: Tensor, negative_scores: Tensor) -> Tensor:
    r"""ROC-AUC of positive against negative scores, the Mann-Whitney U statistic normalised
    (the diagnostic that the MW-loss paper, "Optimizing What Matters: AUC-Driven Learning for
    Robust Neural Retrieval", advocates):

    .. math::  \mathrm{AUC} = \frac{1}{|P||N|} \sum_{p \in P}\sum_{n \in N}
               \big([s_p > s_n] + \tfrac12 [s_p = s_n]\big)

    computed exactly by sorting (``O((|P| + |N|) log |N|)``), equal to
    ``sklearn.metrics.roc_auc_score``.

    Example:
        >>> import torch
        >>> float(roc_auc(torch.tensor([0.9, 0.4]), torch.tensor([0.1, 0.4, 0.5])))
        0.75
    """
    pos = check_tensor("positive_scores", positive_scores).detach().flatten()
    neg = check_tensor("negative_scores", negative_scores).detach().flatten()
    for name, t in (("positive_scores", pos), ("negative_scores", neg)):
        if not t.is_floating_point():
            raise TypeError(f"{name} must be a floating-point tensor, got {t.dtype}")
        if t.numel() == 0:
            raise ValueError(f"{name} is empty")
        if not bool(torch.isfinite(t).all()):
            raise ValueError(f"{name} contains NaN or Inf values")
    dtype = torch.promote_types(torch.promote_types(pos.dtype, neg.dtype), torch.float64)
    neg_sorted = neg.to(dtype).sort().values
    pos = pos.to(dtype)
    below = torch.searchsorted(neg_sorted, pos, right=False)
    equal = torch.searchsorted(neg_sorted, pos, right=True) - below
    return (below.double() + 0.5 * equal.double()).sum() / (pos.numel() * neg.numel())


def mean_rank_variance(ranks: Tensor | RelevantRanks) -> Tensor:
    r"""Mean Rank Variance (MRV; Nie et al. 2024, "Improving the Consistency in Cross-Lingual
    Cross-Modal Retrieval with 1-to-K Contrastive Learning").

    For ``N`` instances each retrieved in ``K`` languages, with :math:`r_{ik}` the rank obtained
    in language ``k``,

    .. math::  \mathrm{MRV} = \frac1N \sum_i \frac1K \sum_k (r_{ik} - \bar r_i)^2 ,

    low when an instance ranks alike in every language (Recall@K cannot see this).

    Args:
        ranks: ``(N, K)`` ranks, e.g. ``relevant_ranks(text, image, ...).ranks.view(N, K)`` for
            ``N * K`` caption queries ordered instance-major, or a :class:`RelevantRanks` whose
            rows hold each instance's ``K`` relevant keys (every row complete).

    Example:
        >>> import torch
        >>> float(mean_rank_variance(torch.tensor([[1, 1, 1], [1, 2, 3]])))
        0.3333333333333333
    """
    if isinstance(ranks, RelevantRanks):
        if not bool(ranks.valid.all()):
            raise ValueError("every instance needs the same number K of relevant keys")
        ranks = ranks.ranks
    ranks = check_tensor("ranks", ranks)
    if ranks.dim() != 2 or ranks.shape[0] == 0 or ranks.shape[1] < 2:
        raise ValueError(f"ranks must have shape (N, K) with K >= 2, got {tuple(ranks.shape)}")
    r = ranks.double()
    if not bool(torch.isfinite(r).all()) or bool((r < 1).any()):
        raise ValueError("ranks must be finite 1-based ranks (>= 1), e.g. RelevantRanks.ranks")
    return r.var(dim=1, unbiased=False).mean()


def retrieval_metrics(
    query: Tensor,
    key: Tensor,
    *,
    ks: Sequence[int] = (1, 5, 10),
    **relevance: Any,
) -> dict[str, float]:
    """Every retrieval metric from one streaming pass: ``R@k`` for ``k`` in ``ks``, ``mrr``,
    ``mean_rank``, ``median_rank``, ``map``, ``map@r``, ``ndcg``, ``auc``.

    Example:
        >>> import torch
        >>> x = torch.randn(64, 16)
        >>> m = retrieval_metrics(x, x + 0.01 * torch.randn(64, 16))
        >>> m["R@1"], m["median_rank"]
        (1.0, 1.0)
    """
    r = relevant_ranks(query, key, **relevance)
    ks = _ks(list(ks))
    out = {f"R@{k}": float(v) for k, v in zip(ks, recall_at_k(r, k=ks), strict=True)}
    out["mrr"] = float(mean_reciprocal_rank(r))
    out["mean_rank"] = float(mean_rank(r))
    out["median_rank"] = float(median_rank(r))
    out["map"] = float(mean_average_precision(r))
    out["map@r"] = float(map_at_r(r))
    out["ndcg"] = float(ndcg(r))
    if bool((r.num_candidates > r.num_relevant).any()):
        out["auc"] = float(retrieval_auc(r))
    return out


def intra_inter_retrieval(
    x: Tensor,
    y: Tensor,
    labels: Tensor | None = None,
    *,
    ks: Sequence[int] = (1, 5, 10),
    similarity: str = "cosine",
) -> dict[str, dict[str, float]]:
    r"""Intra- vs inter-modal retrieval of paired embeddings (Cross the Gap, Mistretta et al.
    2025): CLIP-style training aligns ``x_i`` with ``y_i`` across modalities but constrains
    nothing within a modality, so ``x -> x`` retrieval can lag ``y -> x`` retrieval of the same
    targets.

    Returns the metrics of :func:`retrieval_metrics` for the four directions ``"x->x"``,
    ``"y->y"`` (self excluded), ``"x->y"`` and ``"y->x"``.  With ``labels`` (class of pair
    ``i``), every key of the query's class is relevant in all four; without, intra-modal
    directions have no relevant key other than the query itself, so only ``"x->y"`` and
    ``"y->x"`` (pair ``i`` <-> pair ``i``) are returned.

    Example:
        >>> import torch
        >>> x, y, c = torch.randn(40, 8), torch.randn(40, 8), torch.arange(40) % 4
        >>> sorted(intra_inter_retrieval(x, y, c))
        ['x->x', 'x->y', 'y->x', 'y->y']
    """
    x = check_embeddings("x", x)
    y = check_embeddings("y", y)
    if x.shape[0] != y.shape[0]:
        raise ValueError(
            f"x and y must hold the same pairs, got {x.shape[0]} and {y.shape[0]} rows"
        )
    kw: dict[str, Any] = {"ks": ks, "similarity": similarity}
    if labels is None:
        return {
            "x->y": retrieval_metrics(x, y, **kw),
            "y->x": retrieval_metrics(y, x, **kw),
        }
    return {
        "x->x": retrieval_metrics(x, x, labels=labels, exclude_self=True, **kw),
        "y->y": retrieval_metrics(y, y, labels=labels, exclude_self=True, **kw),
        "x->y": retrieval_metrics(x, y, labels=labels, **kw),
        "y->x": retrieval_metrics(y, x, labels=labels, **kw),
    }
