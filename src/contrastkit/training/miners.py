r"""Miners: which negatives a contrastive loss sees.

A miner is a plain function that returns either

- **indices** ``(B, k)`` into the keys.  Gather them, ``key[idx]``, into the ``(B, k, D)``
  ``negatives=`` of :func:`contrastkit.functional.info_nce` (or into a triplet loss), or restrict
  an in-batch loss to them with :func:`indices_to_mask` and :func:`keep_negatives`; or
- a **mask** ``(B, N)`` of (query, key) pairs to drop from the denominator.  Pass it, OR-ed with
  any mask of your own, as ``exclude=`` to any loss that takes one.

Positives are described as in the losses: query ``i`` <-> key ``i`` by default, ``labels`` /
``key_labels`` (equal labels are positives), or a ``(B, N)`` ``positives`` matrix.  No filter
ever drops a positive pair, and no selection miner ever returns one.

Across ranks: with local queries ``(B, D)`` against keys gathered from ``R`` ranks ``(R*B, D)``,
the positive of local query ``i`` on rank ``r`` is gathered key ``r*B + i``.  Say so with global
sample ids, ``labels=r*B + arange(B)`` and ``key_labels=arange(R*B)``: every miner then protects
the true positive wherever it sits in the gathered keys.

- :func:`topk_negatives` -> ``(B, k)`` indices: hardest negatives in a batch, or mined from
  an index far larger than the batch (Sample4Geo, Deuser et al. 2023), chunked, or with faiss.
- :func:`semi_hard_negatives` -> ``(B, N)`` selection (FaceNet, Schroff et al. 2015).
- :func:`hardest_positives` -> ``(B, k)`` indices (batch-hard, Hermans et al. 2017;
  Core-tuning, Zhang et al. 2021).
- :func:`neighbour_negatives` -> ``(M, k)`` indices from a given distance or adjacency
  (Sample4Geo's geographic neighbours).
- :func:`threshold_false_negatives` -> ``(B, N)`` exclude (TMR, Petrovich et al. 2023).
- :func:`guided_false_negatives` -> ``(B, N)`` exclude (GISTEmbed, Solatorio 2024).
- :func:`shared_id_false_negatives` -> ``(B, N)`` exclude: duplicates in a batch, same k-means
  cluster (data2vec-aqc, Lodagala et al. 2023; G-SimCLR, Chakraborty et al. 2020).
- :func:`kmeans` -> pseudo-labels and centroids (Lloyd 1982; k-means++, Arthur &
  Vassilvitskii 2007).
- :func:`indices_to_mask`, :func:`keep_negatives`: indices -> mask -> ``exclude=``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from contrastkit._validation import (
    check_choice,
    check_embeddings,
    check_finite,
    check_finite_scalar,
    check_same_dim,
    check_tensor,
)
from contrastkit.functional import build_pairing
from contrastkit.objectives.infonce import masked_fill_value
from contrastkit.pairing import Pairing
from contrastkit.similarity import SIMILARITIES, pairwise_similarity, prepare, to_common_dtype

__all__ = [
    "topk_negatives",
    "semi_hard_negatives",
    "hardest_positives",
    "neighbour_negatives",
    "indices_to_mask",
    "keep_negatives",
    "threshold_false_negatives",
    "guided_false_negatives",
    "shared_id_false_negatives",
    "kmeans",
]

BACKENDS = ("torch", "faiss")


# -- shared helpers ----------------------------------------------------------------------------
def _check_count(name: str, value: object, upper: int | None = None, what: str = "") -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    if upper is not None and value > upper:
        raise ValueError(f"{name}={value} is larger than {what} ({upper})")
    return value


def _embeddings(
    query: Tensor, key: Tensor | None, similarity: str, names: tuple[str, str]
) -> tuple[Tensor, Tensor, bool]:
    query = check_embeddings(names[0], query)
    same_set = key is None
    key = query if same_set else check_embeddings(names[1], key)
    check_same_dim(names, (query, key))
    check_choice("similarity", similarity, SIMILARITIES)
    query, key = to_common_dtype(query, key)  # e.g. float32 queries, float64 bank
    return query, key, same_set


def _pairing(
    num_queries: int,
    num_keys: int,
    device: torch.device,
    *,
    labels: Tensor | None,
    key_labels: Tensor | None,
    positives: Tensor | None,
    exclude: Tensor | None = None,
    same_set: bool = False,
) -> Pairing:
    """The losses' pairing; a set contrasted with itself without labels has no positives."""
    if same_set and labels is None and positives is None:
        labels = torch.arange(num_queries, device=device)
    return build_pairing(
        num_queries,
        num_keys,
        device,
        labels=labels,
        key_labels=key_labels,
        positives=positives,
        exclude=exclude,
        exclude_self=same_set,
    )


def _blocked_tile(pairing: Pairing, r0: int, r1: int, c0: int, c1: int) -> tuple[Tensor, Tensor]:
    """(positive, blocked) bool masks of a tile: blocked = positive or excluded or self."""
    w, ex = pairing.tile(r0, r1, c0, c1)
    positive = w > 0
    return positive, positive if ex is None else (positive | ex)


# -- selection miners --------------------------------------------------------------------------
def topk_negatives(
    query: Tensor,
    key: Tensor | None = None,
    k: int = 1,
    *,
    labels: Tensor | None = None,
    key_labels: Tensor | None = None,
    positives: Tensor | None = None,
    exclude: Tensor | None = None,
    similarity: str = "cosine",
    chunk_size: int = 16384,
    backend: str = "torch",
) -> Tensor:
    r"""The ``k`` most similar negatives of each query: hardest negatives in a batch, or hard
    negatives mined from an embedding index far larger than the batch (Sample4Geo, Deuser et al.
    2023, mines each sample's most similar references this way).

    .. math::  \mathrm{idx}_i = \operatorname{top-}k_{\,j \notin P(i) \cup E(i)}\; s(q_i, k_j)

    where :math:`P(i)` are the positives and :math:`E(i)` the excluded keys (and ``i`` itself
    when ``key`` is ``None``).  The keys are scanned in chunks of ``chunk_size`` with a running
    top-``k``, so memory is ``O(B * (k + chunk_size))`` whatever the index size.
    ``backend="faiss"`` (exact ``IndexFlat`` search, needs ``faiss-cpu``) supports the diagonal
    and label pairings without ``positives=`` or ``exclude=``.

    Args:
        query: ``(B, D)`` anchors.
        key: ``(N, D)`` candidates (a batch or a whole index); ``None``: the queries themselves.
        k: negatives per query, ``1 <= k``; each row needs ``k`` candidates.
        labels, key_labels, positives, exclude: which keys are positives / excluded, as in
            :func:`contrastkit.functional.info_nce`.
        similarity: ``"cosine"``, ``"dot"`` or ``"neg_sq_euclidean"``.
        chunk_size: keys per chunk.
        backend: ``"torch"`` or ``"faiss"``.

    Returns:
        ``(B, k)`` long indices into ``key``, most similar first.

    Example:
        >>> import torch
        >>> from contrastkit.functional import info_nce
        >>> q, bank = torch.randn(8, 16), torch.randn(1000, 16)
        >>> idx = topk_negatives(q, bank, k=4)          # bank holds no positives of q
        >>> loss = info_nce(q, torch.randn(8, 16), negatives=bank[idx])
        >>> idx.shape
        torch.Size([8, 4])
    """
    query, key, same_set = _embeddings(query, key, similarity, ("query", "key"))
    num_q, num_k = query.shape[0], key.shape[0]
    k = _check_count("k", k, num_k, "the number of keys")
    chunk_size = _check_count("chunk_size", chunk_size)
    check_choice("backend", backend, BACKENDS)
    pairing = _pairing(
        num_q,
        num_k,
        query.device,
        labels=labels,
        key_labels=key_labels,
        positives=positives,
        exclude=exclude,
        same_set=same_set,
    )
    with torch.no_grad():
        if backend == "faiss":
            return _topk_faiss(query, key, k, pairing, similarity)
        q = prepare(query, similarity)
        kk = prepare(key, similarity)
        fill = masked_fill_value(q.dtype)
        block = max(1, (1 << 24) // chunk_size)
        out = []
        for r0 in range(0, num_q, block):
            r1 = min(num_q, r0 + block)
            best_val = q.new_empty(r1 - r0, 0)
            best_idx = torch.empty(r1 - r0, 0, dtype=torch.long, device=q.device)
            count = torch.zeros(r1 - r0, dtype=torch.long, device=q.device)
            for c0 in range(0, num_k, chunk_size):
                c1 = min(num_k, c0 + chunk_size)
                s = pairwise_similarity(q[r0:r1], kk[c0:c1], similarity)
                _, blocked = _blocked_tile(pairing, r0, r1, c0, c1)
                s = s.masked_fill(blocked, fill)
                count += (~blocked).sum(dim=1)
                vals, idx = s.topk(min(k, c1 - c0), dim=1)
                best_val = torch.cat([best_val, vals], dim=1)
                best_idx = torch.cat([best_idx, idx + c0], dim=1)
                if best_val.shape[1] > k:
                    best_val, sel = best_val.topk(k, dim=1)
                    best_idx = best_idx.gather(1, sel)
            _check_enough(count, k, r0)
            out.append(best_idx)
        return torch.cat(out)


def _check_enough(count: Tensor, k: int, offset: int = 0) -> None:
    short = (count < k).nonzero()
    if short.numel():
        row = int(short[0, 0])
        raise ValueError(
            f"k={k} but query row {row + offset} has only {int(count[row])} candidate negatives "
            "(keys that are neither positives nor excluded)"
        )


def _topk_faiss(query: Tensor, key: Tensor, k: int, pairing: Pairing, similarity: str) -> Tensor:
    try:
        import faiss
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "backend='faiss' needs faiss: pip install faiss-cpu (or contrastkit[faiss])"
        ) from err
    if pairing.kind == "matrix" or pairing.exclude is not None:
        raise ValueError(
            "backend='faiss' supports the diagonal and labels pairings without exclude=; "
            "use backend='torch' for positives= or exclude="
        )
    num_q, num_k = pairing.num_queries, pairing.num_keys
    q = prepare(query, similarity).float().cpu().contiguous().numpy()
    kk = prepare(key, similarity).float().cpu().contiguous().numpy()
    index = (
        faiss.IndexFlatL2(kk.shape[1])
        if similarity == "neg_sq_euclidean"
        else faiss.IndexFlatIP(kk.shape[1])
    )
    index.add(kk)
    rows = torch.arange(num_q)[:, None]
    if pairing.kind == "labels":
        ql, kl = pairing.query_labels.cpu(), pairing.key_labels.cpu()
        uniq, counts = torch.unique(kl, return_counts=True)
        pos = torch.searchsorted(uniq, ql).clamp(max=len(uniq) - 1)
        per_row = torch.where(uniq[pos] == ql, counts[pos], 0)
        extra = int(per_row.max()) + int(pairing.exclude_self)
    else:
        extra = 1
    _, found = index.search(q, min(num_k, k + extra))
    found = torch.from_numpy(found).long()
    if pairing.kind == "labels":
        blocked = ql[rows] == kl[found]
    else:
        blocked = found == rows
    if pairing.exclude_self:
        blocked |= found == rows
    _check_enough((~blocked).sum(dim=1), k)
    order = torch.argsort(blocked.to(torch.int8), dim=1, stable=True)
    return found.gather(1, order[:, :k]).to(query.device)


def semi_hard_negatives(
    query: Tensor,
    key: Tensor | None = None,
    *,
    margin: float,
    labels: Tensor | None = None,
    key_labels: Tensor | None = None,
    positives: Tensor | None = None,
    exclude: Tensor | None = None,
    similarity: str = "cosine",
) -> Tensor:
    r"""Semi-hard negatives (FaceNet, Schroff et al. 2015): negatives less similar than the
    positive, but within ``margin`` of it.

    FaceNet's band :math:`d(a,p) < d(a,n) < d(a,p) + \alpha` in similarity form:

    .. math::  s(q_i, k_p) - m < s(q_i, k_j) < s(q_i, k_p)

    With ``similarity="neg_sq_euclidean"`` this is FaceNet's condition on squared distances.
    A row with several positives uses its least similar (hardest) positive; a row without a
    positive selects nothing.

    Returns:
        ``(B, N)`` bool mask of the selected negatives; :func:`keep_negatives` turns it into an
        ``exclude=`` mask that keeps only them (and the positives) in the denominator.

    Example:
        >>> import torch
        >>> q, k = torch.randn(6, 8), torch.randn(6, 8)
        >>> sel = semi_hard_negatives(q, k, margin=0.5)
        >>> bool(sel.diagonal().any())        # the positive pair is never selected
        False
    """
    query, key, same_set = _embeddings(query, key, similarity, ("query", "key"))
    check_finite_scalar("margin", margin)
    if margin <= 0:
        raise ValueError(f"margin must be > 0, got {margin}")
    pairing = _pairing(
        query.shape[0],
        key.shape[0],
        query.device,
        labels=labels,
        key_labels=key_labels,
        positives=positives,
        exclude=exclude,
        same_set=same_set,
    )
    with torch.no_grad():
        s = pairwise_similarity(prepare(query, similarity), prepare(key, similarity), similarity)
        positive, blocked = _blocked_tile(pairing, 0, pairing.num_queries, 0, pairing.num_keys)
        big = torch.finfo(s.dtype).max
        s_pos = s.masked_fill(~positive, big).amin(dim=1, keepdim=True)
        has_pos = positive.any(dim=1, keepdim=True)
        return (s < s_pos) & (s > s_pos - margin) & ~blocked & has_pos


def hardest_positives(
    query: Tensor,
    key: Tensor | None = None,
    k: int = 1,
    *,
    labels: Tensor | None = None,
    key_labels: Tensor | None = None,
    positives: Tensor | None = None,
    exclude: Tensor | None = None,
    similarity: str = "cosine",
) -> Tensor:
    r"""The ``k`` least similar positives of each query (batch-hard mining, Hermans et al. 2017;
    the hard positive pairs of Core-tuning, Zhang et al. 2021).

    .. math::  \mathrm{idx}_i = \operatorname{bottom-}k_{\,j \in P(i)}\; s(q_i, k_j)

    Returns:
        ``(B, k)`` long indices into ``key``, least similar first.  Every row needs ``k``
        positives (``ValueError`` otherwise).

    Example:
        >>> import torch
        >>> x, y = torch.randn(8, 16), torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
        >>> hardest_positives(x, labels=y).squeeze(1).tolist()
        [1, 0, 3, 2, 5, 4, 7, 6]
    """
    query, key, same_set = _embeddings(query, key, similarity, ("query", "key"))
    k = _check_count("k", k, key.shape[0], "the number of keys")
    pairing = _pairing(
        query.shape[0],
        key.shape[0],
        query.device,
        labels=labels,
        key_labels=key_labels,
        positives=positives,
        exclude=exclude,
        same_set=same_set,
    )
    with torch.no_grad():
        s = pairwise_similarity(prepare(query, similarity), prepare(key, similarity), similarity)
        positive, _ = _blocked_tile(pairing, 0, pairing.num_queries, 0, pairing.num_keys)
        count = positive.sum(dim=1)
        short = (count < k).nonzero()
        if short.numel():
            row = int(short[0, 0])
            raise ValueError(f"k={k} but query row {row} has only {int(count[row])} positives")
        s = s.masked_fill(~positive, torch.finfo(s.dtype).max)
        return s.topk(k, dim=1, largest=False).indices


def neighbour_negatives(
    k: int,
    *,
    distance: Tensor | None = None,
    adjacency: Tensor | None = None,
    min_distance: float = 0.0,
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""Negatives from a neighbourhood that is given, not learnt: Sample4Geo's geographic
    neighbours (Deuser et al. 2023), or any graph.

    - ``distance`` ``(M, N)`` (e.g. metres between GPS positions): the ``k`` nearest keys with
      :math:`d_{ij} > \text{min\_distance}`; the strict bound leaves out each anchor itself and
      any key at the very same place (a likely false negative).
    - ``adjacency`` ``(M, N)`` bool: ``k`` neighbours drawn uniformly without replacement.

    Returns:
        ``(M, k)`` long indices, nearest first for ``distance``.

    Example:
        >>> import torch
        >>> gps = torch.tensor([[0.0, 0.0], [0.0, 1.0], [0.0, 3.0], [0.0, 7.0]])
        >>> neighbour_negatives(2, distance=torch.cdist(gps, gps)).tolist()
        [[1, 2], [0, 2], [1, 0], [2, 1]]
    """
    if (distance is None) == (adjacency is None):
        raise ValueError("pass exactly one of distance= or adjacency=")
    if distance is not None:
        distance = check_tensor("distance", distance)
        if not distance.is_floating_point() or distance.dim() != 2:
            raise ValueError(
                f"distance must be a floating (M, N) matrix, got {distance.dtype} "
                f"shape {tuple(distance.shape)}"
            )
        if bool(torch.isnan(distance).any()):
            raise ValueError("distance contains NaN values")
        check_finite_scalar("min_distance", min_distance)
        k = _check_count("k", k, distance.shape[1], "the number of keys")
        eligible = distance > min_distance
        _check_enough(eligible.sum(dim=1), k)
        # nearest first among the eligible keys; ineligible keys sort last even when eligible
        # distances are infinite (unreachable nodes of a graph)
        order = distance.argsort(dim=1, stable=True)
        last = (~eligible.gather(1, order)).to(torch.int8)
        return order.gather(1, last.argsort(dim=1, stable=True)[:, :k])
    adjacency = check_tensor("adjacency", adjacency)
    if adjacency.dtype != torch.bool or adjacency.dim() != 2:
        raise ValueError(
            f"adjacency must be a bool (M, N) matrix, got {adjacency.dtype} "
            f"shape {tuple(adjacency.shape)}"
        )
    k = _check_count("k", k, adjacency.shape[1], "the number of keys")
    _check_enough(adjacency.sum(dim=1), k)
    noise = torch.rand(adjacency.shape, generator=generator, device=adjacency.device)
    return noise.masked_fill(~adjacency, -1.0).topk(k, dim=1).indices


def indices_to_mask(indices: Tensor, num_keys: int) -> Tensor:
    """``(B, k)`` key indices -> ``(B, num_keys)`` bool mask (True at the given keys).

    Example:
        >>> import torch
        >>> indices_to_mask(torch.tensor([[2], [0]]), 3).tolist()
        [[False, False, True], [True, False, False]]
    """
    indices = check_tensor("indices", indices)
    if indices.dtype != torch.long or indices.dim() != 2:
        raise ValueError(
            f"indices must be a (B, k) long tensor, got {indices.dtype} {tuple(indices.shape)}"
        )
    num_keys = _check_count("num_keys", num_keys)
    if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= num_keys):
        raise ValueError(f"indices must lie in [0, {num_keys}), got values outside")
    mask = torch.zeros(indices.shape[0], num_keys, dtype=torch.bool, device=indices.device)
    return mask.scatter_(1, indices, True)


def keep_negatives(
    selected: Tensor,
    *,
    labels: Tensor | None = None,
    key_labels: Tensor | None = None,
    positives: Tensor | None = None,
) -> Tensor:
    """The ``exclude=`` mask that keeps only the ``selected`` negatives (and every positive).

    ``exclude = ~(selected | positive)``.

    Args:
        selected: ``(B, N)`` bool mask of the negatives to keep (from a miner, or
            :func:`indices_to_mask`).
        labels, key_labels, positives: the pairing of the loss, as in
            :func:`contrastkit.functional.info_nce` (default: query ``i`` <-> key ``i``).

    Example:
        >>> import torch
        >>> from contrastkit.functional import info_nce
        >>> q, k = torch.randn(8, 16), torch.randn(8, 16)
        >>> keep = indices_to_mask(topk_negatives(q, k, k=2), 8)
        >>> loss = info_nce(q, k, exclude=keep_negatives(keep))   # 2 hardest + the positive
    """
    selected = check_tensor("selected", selected)
    if selected.dtype != torch.bool or selected.dim() != 2:
        raise ValueError(
            f"selected must be a (B, N) bool mask, got {selected.dtype} {tuple(selected.shape)}"
        )
    pairing = _pairing(
        selected.shape[0],
        selected.shape[1],
        selected.device,
        labels=labels,
        key_labels=key_labels,
        positives=positives,
    )
    positive, _ = _blocked_tile(pairing, 0, pairing.num_queries, 0, pairing.num_keys)
    return ~(selected | positive)


# -- false-negative filters --------------------------------------------------------------------
def _filter_pairing(
    num_q: int,
    num_k: int,
    device: torch.device,
    labels: Tensor | None,
    key_labels: Tensor | None,
    positives: Tensor | None,
) -> Tensor:
    pairing = _pairing(
        num_q, num_k, device, labels=labels, key_labels=key_labels, positives=positives
    )
    return _blocked_tile(pairing, 0, num_q, 0, num_k)[0]


def threshold_false_negatives(
    aux_query: Tensor,
    aux_key: Tensor | None = None,
    *,
    threshold: float = 0.8,
    unit_interval: bool = True,
    labels: Tensor | None = None,
    key_labels: Tensor | None = None,
    positives: Tensor | None = None,
    similarity: str = "cosine",
) -> Tensor:
    r"""Drop negatives that an auxiliary embedding finds too similar (TMR, Petrovich et al. 2023).

    TMR embeds every motion's *text description* with a frozen sentence encoder (MPNet) and
    removes from the contrastive denominator the pairs whose descriptions are near-duplicates:

    .. math::  \mathrm{drop}_{ij} = [\,\tilde s(a_i, a_j) > \theta\,] \wedge (i,j) \notin P,
       \qquad \tilde s = (1 + \cos)/2 \text{ when ``unit_interval``, else } s

    with :math:`\theta = 0.8` in the paper, on cosine similarities rescaled to ``[0, 1]``
    (so the cut is at :math:`\cos > 2\theta - 1 = 0.6`).

    Args:
        aux_query: ``(B, D')`` auxiliary embeddings of the queries' items.
        aux_key: ``(N, D')`` those of the keys; ``None``: the same as ``aux_query`` (row ``i`` of
            query and key describe the same item, as TMR's text-motion pairs do).
        threshold: :math:`\theta`.
        unit_interval: rescale cosine similarity to ``[0, 1]`` before comparing (TMR's scale).
        labels, key_labels, positives: the pairing of the loss; positives are never dropped.

    Returns:
        ``(B, N)`` bool mask for ``exclude=``.

    Example:
        >>> import torch
        >>> from contrastkit.functional import info_nce
        >>> text, motion, sent = torch.randn(8, 32), torch.randn(8, 32), torch.randn(8, 384)
        >>> ex = threshold_false_negatives(sent, threshold=0.8)
        >>> loss = info_nce(text, motion, exclude=ex, symmetric=True)
    """
    aux_query, aux_key, _ = _embeddings(aux_query, aux_key, similarity, ("aux_query", "aux_key"))
    check_finite_scalar("threshold", threshold)
    if unit_interval and similarity != "cosine":
        raise ValueError("unit_interval=True rescales cosine similarity; pass unit_interval=False")
    with torch.no_grad():
        s = pairwise_similarity(
            prepare(aux_query, similarity), prepare(aux_key, similarity), similarity
        )
        if unit_interval:
            s = (s + 1.0) / 2.0
        positive = _filter_pairing(s.shape[0], s.shape[1], s.device, labels, key_labels, positives)
        return (s > threshold) & ~positive


def guided_false_negatives(
    guide_query: Tensor,
    guide_key: Tensor | None = None,
    *,
    margin: float = 0.0,
    strategy: str = "absolute",
    positive_similarity: Tensor | None = None,
    labels: Tensor | None = None,
    key_labels: Tensor | None = None,
    positives: Tensor | None = None,
    similarity: str = "cosine",
) -> Tensor:
    r"""Drop negatives that a guide model ranks above the positive (GISTEmbed, Solatorio 2024).

    With guide similarities :math:`g_{ij}` and the guide similarity :math:`g_i^+` of query
    ``i``'s positive::

        absolute:  drop_ij = g_ij > g_i^+ - margin
        relative:  drop_ij = g_ij > g_i^+ * (1 - margin)

    and the positive pairs themselves are never dropped.  GISTEmbed applies the same rule, with
    the same :math:`g_i^+`, to the anchor-anchor and positive-positive blocks: pass those blocks'
    guide embeddings and ``positive_similarity=`` the anchor-positive :math:`g_i^+`.

    Args:
        guide_query: ``(B, D')`` guide embeddings of the queries.
        guide_key: ``(N, D')`` guide embeddings of the keys (``None``: ``guide_query``).
        margin: the margin (0 in GISTEmbed).
        strategy: ``"absolute"`` or ``"relative"``.
        positive_similarity: ``(B,)`` :math:`g_i^+`; by default the guide similarity of the row's
            positive (the least similar one when a row has several; rows without a positive
            drop nothing).
        labels, key_labels, positives: the pairing of the loss.

    Returns:
        ``(B, N)`` bool mask for ``exclude=``.

    Example:
        >>> import torch
        >>> from contrastkit.functional import info_nce
        >>> a, p = torch.randn(8, 32), torch.randn(8, 32)            # model embeddings
        >>> ga, gp = torch.randn(8, 64), torch.randn(8, 64)          # guide embeddings
        >>> loss = info_nce(a, p, exclude=guided_false_negatives(ga, gp), temperature=0.01)
    """
    guide_query, guide_key, _ = _embeddings(
        guide_query, guide_key, similarity, ("guide_query", "guide_key")
    )
    check_finite_scalar("margin", margin)
    check_choice("strategy", strategy, ("absolute", "relative"))
    with torch.no_grad():
        g = pairwise_similarity(
            prepare(guide_query, similarity), prepare(guide_key, similarity), similarity
        )
        positive = _filter_pairing(g.shape[0], g.shape[1], g.device, labels, key_labels, positives)
        if positive_similarity is None:
            big = torch.finfo(g.dtype).max
            g_pos = g.masked_fill(~positive, big).amin(dim=1)
        else:
            positive_similarity = check_finite(
                "positive_similarity", check_tensor("positive_similarity", positive_similarity)
            )
            if tuple(positive_similarity.shape) != (g.shape[0],):
                raise ValueError(
                    f"positive_similarity must have shape ({g.shape[0]},), "
                    f"got {tuple(positive_similarity.shape)}"
                )
            g_pos = positive_similarity.to(g.dtype)
        bound = g_pos - margin if strategy == "absolute" else g_pos * (1.0 - margin)
        drop = (g > bound[:, None]) & ~positive
        if positive_similarity is None:  # a row without a positive has no bound: drop nothing
            drop &= positive.any(dim=1, keepdim=True)
        return drop


def shared_id_false_negatives(
    query_ids: Tensor,
    key_ids: Tensor | None = None,
    *,
    labels: Tensor | None = None,
    key_labels: Tensor | None = None,
    positives: Tensor | None = None,
) -> Tensor:
    r"""Drop negatives that share an id with the query: duplicates and same-cluster items.

    .. math::  \mathrm{drop}_{ij} = [\,\mathrm{qid}_i = \mathrm{kid}_j\,] \wedge (i,j) \notin P

    - Duplicates in a batch: ``query_ids`` = the item id of each query's positive (e.g. the
      caption id), ``key_ids`` = the keys' item ids: another copy of the positive is not a
      negative.
    - Same-cluster exclusion (data2vec-aqc, Lodagala et al. 2023; G-SimCLR, Chakraborty et al.
      2020): ids are k-means pseudo-labels (:func:`kmeans`).

    Args:
        query_ids: ``(B,)`` integer ids.
        key_ids: ``(N,)`` integer ids (``None``: ``query_ids``).
        labels, key_labels, positives: the pairing of the loss; positives are never dropped.

    Example:
        >>> import torch
        >>> caption_id = torch.tensor([10, 11, 10, 12])     # rows 0 and 2 hold one caption
        >>> shared_id_false_negatives(caption_id).int().tolist()
        [[0, 0, 1, 0], [0, 0, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]]
    """
    query_ids = check_tensor("query_ids", query_ids)
    key_ids = query_ids if key_ids is None else check_tensor("key_ids", key_ids)
    for name, ids in (("query_ids", query_ids), ("key_ids", key_ids)):
        if ids.is_floating_point() or ids.is_complex() or ids.dim() != 1:
            raise ValueError(
                f"{name} must be a 1-D integer tensor, got {ids.dtype} {tuple(ids.shape)}"
            )
    if key_ids.device != query_ids.device:
        raise ValueError(f"key_ids is on {key_ids.device} but query_ids on {query_ids.device}")
    positive = _filter_pairing(
        len(query_ids), len(key_ids), query_ids.device, labels, key_labels, positives
    )
    return (query_ids[:, None] == key_ids[None, :]) & ~positive


# -- clustering --------------------------------------------------------------------------------
def kmeans(
    x: Tensor,
    num_clusters: int,
    *,
    iters: int = 100,
    init: Tensor | None = None,
    spherical: bool = False,
    generator: torch.Generator | None = None,
    chunk_size: int = 65536,
) -> tuple[Tensor, Tensor]:
    r"""k-means pseudo-labels (Lloyd 1982; k-means++ seeding, Arthur & Vassilvitskii 2007).

    Alternates :math:`c_i = \arg\min_c \|x_i - \mu_c\|^2` and :math:`\mu_c = \mathrm{mean}
    \{x_i : c_i = c\}` until no assignment changes (at most ``iters`` rounds).  An emptied
    cluster restarts at the point farthest from its centroid.  ``spherical=True`` clusters the
    L2-normalised points and renormalises the centroids (cosine k-means).

    Args:
        x: ``(N, D)`` points.
        num_clusters: ``1 <= C <= N``.
        iters: maximum Lloyd rounds.
        init: ``(C, D)`` initial centroids (default: k-means++ with ``generator``).
        chunk_size: points per distance block.

    Returns:
        ``(assignments (N,) long, centroids (C, D))``.

    Example:
        >>> import torch
        >>> _ = torch.manual_seed(0)
        >>> x = torch.cat([torch.randn(20, 2) - 5, torch.randn(20, 2) + 5])
        >>> labels, centroids = kmeans(x, 2, generator=torch.Generator().manual_seed(0))
        >>> len(set(labels[:20].tolist())), len(set(labels[20:].tolist()))
        (1, 1)
    """
    x = check_embeddings("x", x)
    n = x.shape[0]
    num_clusters = _check_count("num_clusters", num_clusters, n, "the number of points")
    iters = _check_count("iters", iters)
    chunk_size = _check_count("chunk_size", chunk_size)
    with torch.no_grad():
        pts = x.to(torch.promote_types(x.dtype, torch.float32))
        if spherical:
            pts = torch.nn.functional.normalize(pts, dim=1)
        if init is None:
            centroids = _kmeans_pp(pts, num_clusters, generator)
        else:
            init = check_embeddings("init", init)
            if tuple(init.shape) != (num_clusters, x.shape[1]):
                raise ValueError(
                    f"init must have shape ({num_clusters}, {x.shape[1]}), got {tuple(init.shape)}"
                )
            centroids = init.to(device=pts.device, dtype=pts.dtype).clone()
            if spherical:  # the first assignment compares unit points with unit centroids
                centroids = torch.nn.functional.normalize(centroids, dim=1)
        assign = None
        for _ in range(iters):
            new_assign, dist = _nearest(pts, centroids, chunk_size)
            if assign is not None and bool((new_assign == assign).all()):
                break
            assign = new_assign
            sums = torch.zeros_like(centroids).index_add_(0, assign, pts)
            counts = torch.bincount(assign, minlength=num_clusters)
            empty = (counts == 0).nonzero().flatten()
            centroids = sums / counts.clamp(min=1)[:, None].to(pts.dtype)
            if empty.numel():
                far = dist.topk(empty.numel()).indices
                centroids[empty] = pts[far]
            if spherical:
                centroids = torch.nn.functional.normalize(centroids, dim=1)
        assign, _ = _nearest(pts, centroids, chunk_size)
        return assign, centroids


def _nearest(pts: Tensor, centroids: Tensor, chunk_size: int) -> tuple[Tensor, Tensor]:
    idx, dist = [], []
    c_sq = (centroids * centroids).sum(1)
    for r0 in range(0, pts.shape[0], chunk_size):
        p = pts[r0 : r0 + chunk_size]
        d = (p * p).sum(1, keepdim=True) + c_sq[None, :] - 2.0 * (p @ centroids.T)
        v, i = d.min(dim=1)
        idx.append(i)
        dist.append(v)
    return torch.cat(idx), torch.cat(dist)


def _kmeans_pp(pts: Tensor, num_clusters: int, generator: torch.Generator | None) -> Tensor:
    n = pts.shape[0]
    first = int(torch.randint(n, (1,), generator=generator, device=pts.device))
    chosen = [first]
    d2 = ((pts - pts[first]) ** 2).sum(1)
    for _ in range(1, num_clusters):
        total = d2.sum()
        if float(total) <= 0:
            nxt = int(torch.randint(n, (1,), generator=generator, device=pts.device))
        else:
            nxt = int(torch.multinomial(d2 / total, 1, generator=generator))
        chosen.append(nxt)
        d2 = torch.minimum(d2, ((pts - pts[nxt]) ** 2).sum(1))
    return pts[chosen].clone()
