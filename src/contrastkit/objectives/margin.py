"""Margin and pairwise-ranking objectives (the MARGIN group).

=========================================  ==============================================
objective                                  paper
=========================================  ==============================================
:func:`nt_xent_am` / :class:`NTXentAM`     Lepage & Dehak 2022 (NT-Xent-AM, symmetric)
:func:`circle_loss` / :class:`CircleLoss`  Sun et al. 2020 (circle loss); ListConRanker
:func:`energy_hinge_loss`, :func:`promcse` Jiang et al. 2022 (PromCSE)
:func:`triplet_loss` / :class:`TripletLoss`    Schroff et al. 2015; Hermans et al. 2017
:func:`quadruplet_loss`                    Chen et al. 2017; CDMLMR (Zhang et al. 2017)
:func:`pair_contrastive_loss`              Hadsell, Chopra & LeCun 2006
:func:`corrupted_margin_loss`              CorefCL (Hwang et al. 2021)
=========================================  ==============================================

Distances (``distance=``) used by the metric-learning losses: ``"euclidean"`` ``|a - b|``,
``"sq_euclidean"`` ``|a - b|^2`` and ``"cosine"`` ``1 - cos(a, b)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from contrastkit._validation import (
    check_choice,
    check_embeddings,
    check_finite,
    check_finite_scalar,
    check_positive_scalar,
    check_same_dim,
    check_tensor,
    check_views,
)
from contrastkit.functional import REDUCTIONS, _reduce, build_pairing, info_nce
from contrastkit.objectives.infonce import masked_fill_value
from contrastkit.similarity import compute_dtype, pairwise_similarity, prepare, rowwise_similarity

__all__ = [
    "nt_xent_am",
    "circle_loss",
    "circle_loss_scores",
    "energy_hinge_loss",
    "promcse",
    "pairwise_distance",
    "triplet_loss",
    "quadruplet_loss",
    "pair_contrastive_loss",
    "sequence_log_likelihood",
    "corrupted_margin_loss",
    "NTXentAM",
    "CircleLoss",
    "PromCSELoss",
    "TripletLoss",
    "QuadrupletLoss",
    "PairContrastiveLoss",
    "CorruptedMarginLoss",
]

DISTANCES = ("euclidean", "sq_euclidean", "cosine")
TRIPLET_MINING = ("batch_hard", "semi_hard", "all")


def _check_nonneg(name: str, value: float) -> float:
    check_finite_scalar(name, value)
    if float(value) < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return float(value)


# ------------------------------------------------------------------------------------------
# NT-Xent-AM
# ------------------------------------------------------------------------------------------
def nt_xent_am(
    *views: Tensor,
    temperature: float | Tensor = 0.2,
    margin: float = 0.1,
    symmetric: bool = True,
    similarity: str = "cosine",
    engine: str = "auto",
) -> Tensor:
    r"""NT-Xent with an additive margin on the positive pair, NT-Xent-AM (Lepage & Dehak 2022).

    For anchor :math:`a` with positive :math:`p(a)` and cosine similarities :math:`s`::

        L_a = -log( e^{(s_{a,p(a)} - m)/tau}
                    / (e^{(s_{a,p(a)} - m)/tau} + sum_{b in N(a)} e^{s_{a,b}/tau}) )

    ``symmetric=True`` (the paper's symmetric loss): every embedding of every view is an anchor,
    its positives are the other views of its sample and :math:`N(a)` holds every view of every
    other sample (SimCLR's 2N anchors). ``symmetric=False``: only ``views[0]`` are anchors and
    only ``views[1]`` are keys (MoCo-style, ``N(a)`` = the other samples' second view).

    This is :func:`~contrastkit.functional.info_nce` with ``margin=m``; it tiles (per-row
    log-sum-exp) and runs on any engine.

    Args:
        views: two or more ``(N, D)`` tensors, row ``n`` of each is sample ``n``.
        temperature: :math:`\tau > 0`.
        margin: additive margin :math:`m` (the paper finds ``0.1`` to ``0.2`` best).
        symmetric: use all views as anchors (see above); needs exactly 2 views when False.

    Example:
        >>> import torch
        >>> z1, z2 = torch.randn(8, 16), torch.randn(8, 16)
        >>> nt_xent_am(z1, z2, temperature=0.2, margin=0.1).shape
        torch.Size([])
    """
    views = check_views("nt_xent_am", views)
    n = views[0].shape[0]
    check_finite_scalar("margin", margin)
    if not symmetric:
        if len(views) != 2:
            raise ValueError("symmetric=False needs exactly 2 views (anchors, keys)")
        return info_nce(
            views[0],
            views[1],
            temperature=temperature,
            margin=margin,
            similarity=similarity,
            engine=engine,
        )
    sample = torch.arange(n, device=views[0].device).repeat(len(views))
    return info_nce(
        torch.cat(views),
        labels=sample,
        temperature=temperature,
        margin=margin,
        similarity=similarity,
        engine=engine,
    )


# ------------------------------------------------------------------------------------------
# Circle loss
# ------------------------------------------------------------------------------------------
def circle_loss_scores(
    scores: Tensor,
    positives: Tensor,
    *,
    exclude: Tensor | None = None,
    margin: float = 0.25,
    gamma: float = 256.0,
    reduction: str = "mean",
) -> Tensor:
    r"""Circle loss (Sun et al. 2020) over rows of similarity scores in ``[-1, 1]``.

    For a row with positive scores :math:`s_p^i` and negative scores :math:`s_n^j`::

        L = log(1 + sum_j exp(gamma a_n^j (s_n^j - D_n)) * sum_i exp(-gamma a_p^i (s_p^i - D_p)))
          = softplus( LSE_j[gamma a_n^j (s_n^j - D_n)] + LSE_i[-gamma a_p^i (s_p^i - D_p)] )

    with :math:`a_p = [1 + m - s_p]_+`, :math:`a_n = [s_n + m]_+` (treated as constants, as in
    the paper's gradient analysis), :math:`D_p = 1 - m` and :math:`D_n = m`. Rows with no
    positive or no negative are left out of the mean. Both log-sum-exps are row reductions, so
    the loss tiles. ListConRanker (Liu et al. 2025) applies it to a query's listwise passage
    scores.

    Args:
        scores: ``(B, N)`` similarities (cosine-like, in ``[-1, 1]``).
        positives: ``(B, N)`` bool mask of positive pairs; every other pair not excluded is a
            negative.
        exclude: ``(B, N)`` bool mask of pairs that are neither.
        margin: relaxation :math:`m` (0.25 in the paper).
        gamma: scale :math:`\gamma` (256 for face recognition, 80 for fine-grained retrieval).
        reduction: ``"mean"`` (rows with both kinds of pairs), ``"sum"`` or ``"none"``.

    Example:
        >>> import torch
        >>> s = torch.rand(4, 6) * 2 - 1
        >>> pos = torch.zeros(4, 6, dtype=torch.bool); pos[:, 0] = True
        >>> circle_loss_scores(s, pos, margin=0.25, gamma=32.0).shape
        torch.Size([])
    """
    scores = check_finite("scores", check_tensor("scores", scores))
    if not scores.is_floating_point() or scores.dim() != 2:
        raise ValueError(f"scores must be a float (B, N) matrix, got {tuple(scores.shape)}")
    positives = _check_mask("positives", positives, scores.shape)
    if exclude is not None:
        exclude = _check_mask("exclude", exclude, scores.shape)
    check_choice("reduction", reduction, REDUCTIONS)
    check_finite_scalar("margin", margin)
    check_positive_scalar("gamma", gamma)
    s = scores.to(compute_dtype(scores.dtype))
    keep = torch.ones_like(positives) if exclude is None else ~exclude
    pos = positives & keep
    neg = ~positives & keep
    a_p = (1.0 + margin - s).clamp_min(0.0).detach()
    a_n = (s + margin).clamp_min(0.0).detach()
    fill = masked_fill_value(s.dtype)
    lse_p = torch.logsumexp((-gamma * a_p * (s - (1.0 - margin))).masked_fill(~pos, fill), dim=1)
    lse_n = torch.logsumexp((gamma * a_n * (s - margin)).masked_fill(~neg, fill), dim=1)
    valid = pos.any(dim=1) & neg.any(dim=1)
    zero = torch.zeros_like(lse_p)
    loss = F.softplus(torch.where(valid, lse_p, zero) + torch.where(valid, lse_n, zero))
    loss = torch.where(valid, loss, zero)
    return _reduce([(loss, valid)], reduction, "row")


def _check_mask(name: str, mask: object, shape: torch.Size) -> Tensor:
    mask = check_tensor(name, mask)
    if mask.dtype != torch.bool:
        raise TypeError(f"{name} must be a bool tensor, got dtype {mask.dtype}")
    if tuple(mask.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(mask.shape)}")
    return mask


def circle_loss(
    query: Tensor,
    key: Tensor | None = None,
    *,
    labels: Tensor | None = None,
    key_labels: Tensor | None = None,
    positives: Tensor | None = None,
    exclude: Tensor | None = None,
    margin: float = 0.25,
    gamma: float = 256.0,
    similarity: str = "cosine",
    reduction: str = "mean",
) -> Tensor:
    r"""Circle loss (Sun et al. 2020) on embeddings; the pairing is given as in
    :func:`~contrastkit.functional.info_nce` (diagonal, ``labels=`` or ``positives=``; with
    ``key=None`` the queries are contrasted with themselves, self-pairs excluded).

    See :func:`circle_loss_scores` for the equation. ``similarity`` is ``"cosine"`` (the paper)
    or ``"dot"`` (for embeddings already on the unit sphere).

    Example:
        >>> import torch
        >>> x, y = torch.randn(8, 16), torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
        >>> circle_loss(x, labels=y, gamma=80.0).shape
        torch.Size([])
    """
    query = check_embeddings("query", query)
    same = key is None
    key = query if same else check_embeddings("key", key)
    check_same_dim(("query", "key"), (query, key))
    check_choice("similarity", similarity, ("cosine", "dot"))
    pairing = build_pairing(
        query.shape[0],
        key.shape[0],
        query.device,
        labels=labels,
        key_labels=key_labels,
        positives=positives,
        exclude=exclude,
        exclude_self=same,
    )
    q, k = prepare(query, similarity), prepare(key, similarity)
    s = pairwise_similarity(q, k, similarity)
    w, ex = pairing.dense(dtype=s.dtype)
    return circle_loss_scores(s, w > 0, exclude=ex, margin=margin, gamma=gamma, reduction=reduction)


# ------------------------------------------------------------------------------------------
# PromCSE: energy-based hinge loss on the hardest negative
# ------------------------------------------------------------------------------------------
def energy_hinge_loss(
    query: Tensor,
    key: Tensor,
    negatives: Tensor | None = None,
    *,
    margin: float = 0.2,
    similarity: str = "cosine",
    reduction: str = "mean",
) -> Tensor:
    r"""Energy-based hinge loss on the hardest negative (PromCSE, Jiang et al. 2022).

    With energy :math:`E = -s` (similarity), positive pair :math:`(q_i, k_i)` and the hardest
    negative among the other keys and the extra hard negatives::

        L_i = max(0, m - s(q_i, k_i) + max_{n in N(i)} s(q_i, n))

    (PromCSE's ``MarginRankingLoss`` on cosine similarities, margin ``0.2``). A row maximum, so it
    tiles.

    Args:
        query, key: ``(B, D)`` and ``(N >= B, D)``; query ``i``'s positive is key ``i``.
        negatives: extra negatives, ``(B, K, D)`` per query or ``(M, D)`` shared by all queries
            (PromCSE's contradiction sentences of the whole batch).
        margin: :math:`m`.

    Example:
        >>> import torch
        >>> q, k, h = torch.randn(8, 16), torch.randn(8, 16), torch.randn(8, 16)
        >>> energy_hinge_loss(q, k, h, margin=0.2).shape
        torch.Size([])
    """
    query = check_embeddings("query", query)
    key = check_embeddings("key", key)
    check_same_dim(("query", "key"), (query, key))
    check_choice("similarity", similarity, ("cosine", "dot", "neg_sq_euclidean"))
    check_choice("reduction", reduction, REDUCTIONS)
    check_finite_scalar("margin", margin)
    b = query.shape[0]
    if key.shape[0] < b:
        raise ValueError(
            f"key needs at least {b} rows (one positive per query), got {key.shape[0]}"
        )
    q, k = prepare(query, similarity), prepare(key, similarity)
    s = pairwise_similarity(q, k, similarity)
    eye = torch.eye(b, key.shape[0], dtype=torch.bool, device=s.device)
    pos = s[eye]
    parts = [s.masked_fill(eye, masked_fill_value(s.dtype))]
    if negatives is not None:
        negatives = check_tensor("negatives", negatives)
        if negatives.dim() == 3:
            negatives = check_embeddings("negatives", negatives, ndim=3)
            if negatives.shape[0] != b:
                raise ValueError(f"negatives (B, K, D) must have B = {b}, got {negatives.shape[0]}")
            check_same_dim(("query", "negatives"), (query, negatives))
            parts.append(rowwise_similarity(q, prepare(negatives, similarity), similarity))
        else:
            negatives = check_embeddings("negatives", negatives)
            check_same_dim(("query", "negatives"), (query, negatives))
            parts.append(pairwise_similarity(q, prepare(negatives, similarity), similarity))
    elif key.shape[0] == 1:
        raise ValueError("energy_hinge_loss needs a negative: pass more keys or negatives=")
    hardest = torch.cat(parts, dim=1).max(dim=1).values
    loss = (margin - pos + hardest).clamp_min(0.0)
    return _reduce([(loss, torch.ones_like(loss, dtype=torch.bool))], reduction, "query")


def promcse(
    query: Tensor,
    key: Tensor,
    hard_negatives: Tensor | None = None,
    *,
    temperature: float | Tensor = 0.05,
    margin: float = 0.2,
    weight: float = 10.0,
    similarity: str = "cosine",
    engine: str = "auto",
) -> Tensor:
    r"""PromCSE's supervised objective (Jiang et al. 2022): NT-Xent with hard negatives plus
    ``weight`` times the energy-based hinge loss::

        L = InfoNCE(q, k; hard negatives) + lambda * mean_i max(0, m - s_ii + max_n s_in)

    Defaults are the paper's (``tau = 0.05``, ``m = 0.2``, ``lambda = 10``). ``hard_negatives``
    ``(B, D)`` are shared by every query, as in the reference code (each row's denominator holds
    all the batch's contradiction sentences). Both terms tile.

    Example:
        >>> import torch
        >>> q, k, h = torch.randn(8, 16), torch.randn(8, 16), torch.randn(8, 16)
        >>> promcse(q, k, h).shape
        torch.Size([])
    """
    check_finite_scalar("weight", weight)
    if hard_negatives is not None:
        hard_negatives = check_embeddings("hard_negatives", hard_negatives)
    nce = info_nce(
        query,
        key,
        negatives=hard_negatives,
        temperature=temperature,
        similarity=similarity,
        engine=engine,
    )
    hinge = energy_hinge_loss(query, key, hard_negatives, margin=margin, similarity=similarity)
    return nce + weight * hinge


# ------------------------------------------------------------------------------------------
# Distances, triplet, quadruplet, pair losses
# ------------------------------------------------------------------------------------------
def pairwise_distance(query: Tensor, key: Tensor, distance: str = "euclidean") -> Tensor:
    """``(B, D) x (N, D) -> (B, N)`` distances in the accumulation dtype (see module doc).

    ``"euclidean"`` is ``sqrt(max(|a-b|^2, 1e-12))`` so that coincident points keep a finite
    gradient.

    Example:
        >>> import torch
        >>> pairwise_distance(torch.zeros(1, 2), torch.tensor([[3.0, 4.0]]))
        tensor([[5.]])
    """
    check_choice("distance", distance, DISTANCES)
    if distance == "cosine":
        q, k = prepare(query, "cosine"), prepare(key, "cosine")
        return 1.0 - q @ k.T
    q, k = prepare(query, "dot"), prepare(key, "dot")
    sq = (-pairwise_similarity(q, k, "neg_sq_euclidean")).clamp_min(0.0)
    if distance == "sq_euclidean":
        return sq
    return sq.clamp_min(1e-12).sqrt()


def _metric_setup(
    query: Tensor,
    key: Tensor | None,
    labels: Tensor | None,
    key_labels: Tensor | None,
    distance: str,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Distances, positive mask, negative mask and the two label vectors of a labelled batch."""
    query = check_embeddings("query", query)
    same = key is None
    key = query if same else check_embeddings("key", key)
    check_same_dim(("query", "key"), (query, key))
    check_choice("distance", distance, DISTANCES)
    if labels is None:
        raise ValueError("labels= is required: it defines which pairs are positives")
    pairing = build_pairing(
        query.shape[0],
        key.shape[0],
        query.device,
        labels=labels,
        key_labels=key_labels,
        exclude_self=same,
    )
    d = pairwise_distance(query, key, distance)
    w, ex = pairing.dense(dtype=d.dtype)
    pos = w > 0
    neg = ~pos if ex is None else (~pos & ~ex)
    assert pairing.query_labels is not None and pairing.key_labels is not None
    return d, pos, neg, pairing.query_labels, pairing.key_labels


def triplet_loss(
    query: Tensor,
    key: Tensor | None = None,
    *,
    labels: Tensor | None = None,
    key_labels: Tensor | None = None,
    margin: float = 0.2,
    mining: str = "batch_hard",
    distance: str = "euclidean",
    reduction: str = "mean",
) -> Tensor:
    r"""Triplet ranking loss with in-batch triplet selection.

    For anchor :math:`a`, positive :math:`p` (same label) and negative :math:`n` (other label)::

        l(a, p, n) = max(0, m + d(a, p) - d(a, n))

    ``mining``:

    - ``"batch_hard"`` (Hermans et al. 2017): one term per anchor, with its farthest positive and
      its closest negative; mean over anchors having both (row max / min: tiles).
    - ``"semi_hard"`` (FaceNet, Schroff et al. 2015, as in ``tfa.losses.TripletSemiHardLoss``):
      one term per positive pair ``(a, p)``, with the closest negative farther than
      :math:`d(a, p)`; when none is, the farthest negative. Mean over positive pairs.
    - ``"all"``: mean of :math:`l` over every valid triplet.

    With ``key=None`` anchors, positives and negatives come from the same set (self excluded);
    otherwise anchors are queries and positives/negatives are keys (cross-modal).

    Args:
        labels: ``(B,)`` classes of the queries; ``key_labels`` ``(N,)`` those of the keys.
        margin: :math:`m`.
        distance: ``"euclidean"`` (Hermans), ``"sq_euclidean"`` (FaceNet) or ``"cosine"``.

    Example:
        >>> import torch
        >>> x, y = torch.randn(8, 16), torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
        >>> triplet_loss(x, labels=y, margin=0.2, mining="semi_hard").shape
        torch.Size([])
    """
    check_choice("mining", mining, TRIPLET_MINING)
    check_choice("reduction", reduction, REDUCTIONS)
    margin = _check_nonneg("margin", margin)
    d, pos, neg, _, _ = _metric_setup(query, key, labels, key_labels, distance)
    if mining == "batch_hard":
        d_ap = d.masked_fill(~pos, masked_fill_value(d.dtype)).max(dim=1).values
        d_an = d.masked_fill(~neg, torch.finfo(d.dtype).max).min(dim=1).values
        valid = pos.any(dim=1) & neg.any(dim=1)
        loss = torch.where(valid, (margin + d_ap - d_an).clamp_min(0.0), torch.zeros_like(d_ap))
        return _reduce([(loss, valid)], reduction, "anchor")
    # one term per (anchor, positive) pair: (B, N) for "semi_hard", (B, N, N) for "all"
    d_ap = d[:, :, None]
    d_an = d[:, None, :]
    triplet = pos[:, :, None] & neg[:, None, :]
    if mining == "all":
        terms = (margin + d_ap - d_an).clamp_min(0.0)
        loss = torch.where(triplet, terms, torch.zeros_like(terms)).flatten(1).sum(1)
        count = triplet.flatten(1).sum(1)
        valid = count > 0
        if reduction == "none":
            return loss / count.clamp_min(1)
        if int(count.sum()) == 0:
            raise ValueError("no anchor has both a positive and a negative: check labels")
        total = loss.sum()
        return total / count.sum() if reduction == "mean" else total
    big = torch.finfo(d.dtype).max
    outside = triplet & (d_an > d_ap)
    closest_outside = torch.where(outside, d_an, big).min(dim=2).values
    farthest = d.masked_fill(~neg, masked_fill_value(d.dtype)).max(dim=1).values[:, None]
    chosen = torch.where(outside.any(dim=2), closest_outside, farthest.expand_as(d))
    pair_valid = pos & neg.any(dim=1, keepdim=True)
    terms = torch.where(pair_valid, (margin + d - chosen).clamp_min(0.0), torch.zeros_like(d))
    if reduction == "none":
        return terms.sum(1) / pair_valid.sum(1).clamp_min(1)
    if not bool(pair_valid.any()):
        raise ValueError("no anchor has both a positive and a negative: check labels")
    total = terms.sum()
    return total / pair_valid.sum() if reduction == "mean" else total


def quadruplet_loss(
    query: Tensor,
    key: Tensor | None = None,
    *,
    labels: Tensor | None = None,
    key_labels: Tensor | None = None,
    margin: float = 1.0,
    margin2: float = 0.5,
    distance: str = "sq_euclidean",
    reduction: str = "mean",
) -> Tensor:
    r"""Quadruplet ranking loss (Chen et al. 2017, "Beyond triplet loss"; the cross-modal
    ranking term of CDMLMR, Zhang et al. 2017) with in-batch hardest selection.

    For anchor :math:`a`, positive :math:`p`, negative :math:`n` (label differs from
    :math:`a`'s) and a negative pair :math:`(l, k)` whose labels differ from each other and from
    :math:`a`'s::

        L_a = max(0, d(a,p) - d(a,n) + m1) + max(0, d(a,p) - d(l,k) + m2)

    with the hardest choices: the farthest positive, the closest negative and the closest
    negative pair (``l`` a query, ``k`` a key, both not :math:`a`'s class; for ``key=None``
    both come from the batch, ``l != k``). Mean over anchors that have all three.

    Args:
        margin, margin2: :math:`m_1 > m_2` (1 and 0.5 by default; the paper adapts them).
        distance: ``"sq_euclidean"`` (the paper), ``"euclidean"`` or ``"cosine"``.

    Example:
        >>> import torch
        >>> x, y = torch.randn(8, 16), torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
        >>> quadruplet_loss(x, labels=y).shape
        torch.Size([])
    """
    check_choice("reduction", reduction, REDUCTIONS)
    margin = _check_nonneg("margin", margin)
    margin2 = _check_nonneg("margin2", margin2)
    same = key is None
    d, pos, neg, lq, lk = _metric_setup(query, key, labels, key_labels, distance)
    big = torch.finfo(d.dtype).max
    d_ap = d.masked_fill(~pos, masked_fill_value(d.dtype)).max(dim=1).values
    d_an = d.masked_fill(~neg, big).min(dim=1).values
    pair_ok = lq[:, None] != lk[None, :]  # (l, k) with different labels
    if same:
        pair_ok = pair_ok & ~torch.eye(d.shape[0], dtype=torch.bool, device=d.device)
    # for anchor a: pairs whose labels both differ from a's label
    allowed = pair_ok[None] & (lq[None, :, None] != lq[:, None, None])
    allowed = allowed & (lk[None, None, :] != lq[:, None, None])
    d_lk = torch.where(allowed, d[None], big).flatten(1).min(dim=1).values
    has_triplet = pos.any(dim=1) & neg.any(dim=1)
    valid = has_triplet & allowed.flatten(1).any(dim=1)
    if bool(has_triplet.any()) and not bool(valid.any()):
        raise ValueError(
            "quadruplet_loss needs, for some anchor, a negative pair (l, k) whose labels differ "
            "from each other and from the anchor's: the batch needs at least 3 classes"
        )
    zero = torch.zeros_like(d_ap)
    loss = (d_ap - d_an + margin).clamp_min(0.0) + (d_ap - d_lk + margin2).clamp_min(0.0)
    loss = torch.where(valid, loss, zero)
    return _reduce([(loss, valid)], reduction, "anchor")


def pair_contrastive_loss(
    x1: Tensor,
    x2: Tensor | None = None,
    *,
    similar: Tensor | None = None,
    labels: Tensor | None = None,
    key_labels: Tensor | None = None,
    margin: float = 1.0,
    distance: str = "euclidean",
    reduction: str = "mean",
) -> Tensor:
    r"""The classic pair contrastive loss (Hadsell, Chopra & LeCun 2006).

    With distance :math:`D` and :math:`Y = 1` for a similar pair::

        L(x1, x2, Y) = Y * 1/2 D^2 + (1 - Y) * 1/2 max(0, m - D)^2

    Either ``similar=`` ``(B,)`` bool gives one pair per row ``(x1[i], x2[i])``, or ``labels=``
    makes every pair ``(x1[i], x2[j])`` a pair (similar iff labels match; ``x2=None`` pairs
    ``x1`` with itself, self-pairs excluded); the loss is the mean over pairs. A sum over pairs,
    so it tiles.

    Example:
        >>> import torch
        >>> a, b = torch.randn(6, 4), torch.randn(6, 4)
        >>> sim = torch.tensor([True, False, True, False, True, False])
        >>> pair_contrastive_loss(a, b, similar=sim, margin=1.0).shape
        torch.Size([])
    """
    check_choice("reduction", reduction, REDUCTIONS)
    margin = _check_nonneg("margin", margin)
    if (similar is None) == (labels is None):
        raise ValueError("pass exactly one of similar= (row pairs) or labels= (all pairs)")
    if similar is not None:
        x1 = check_embeddings("x1", x1)
        if x2 is None:
            raise ValueError("similar= pairs x1[i] with x2[i]: x2 is required")
        x2 = check_embeddings("x2", x2)
        check_same_dim(("x1", "x2"), (x1, x2))
        if x2.shape[0] != x1.shape[0]:
            raise ValueError(f"x1 and x2 must have as many rows, got {x1.shape[0]}, {x2.shape[0]}")
        similar = check_tensor("similar", similar)
        if similar.dtype != torch.bool or tuple(similar.shape) != (x1.shape[0],):
            raise ValueError(f"similar must be a bool tensor of shape ({x1.shape[0]},)")
        d = pairwise_distance(x1, x2, distance).diagonal()
        y = similar.to(d.dtype)
        terms = 0.5 * y * d**2 + 0.5 * (1 - y) * (margin - d).clamp_min(0.0) ** 2
        return _reduce([(terms, torch.ones_like(similar))], reduction, "pair")
    d, pos, neg, _, _ = _metric_setup(x1, x2, labels, key_labels, distance)
    y = pos.to(d.dtype)
    terms = 0.5 * y * d**2 + 0.5 * (1 - y) * (margin - d).clamp_min(0.0) ** 2
    pair = pos | neg
    terms = torch.where(pair, terms, torch.zeros_like(terms))
    if reduction == "none":
        return terms
    total = terms.sum()
    return total / pair.sum() if reduction == "mean" else total


# ------------------------------------------------------------------------------------------
# CorefCL: margin between the original and corrupted inputs
# ------------------------------------------------------------------------------------------
def sequence_log_likelihood(
    logits: Tensor,
    targets: Tensor,
    mask: Tensor | None = None,
    *,
    length_normalize: bool = False,
) -> Tensor:
    r"""``log p(y | x) = sum_t log softmax(logits_t)[y_t]`` per sequence, ``(B, T, V) -> (B,)``.

    ``mask`` ``(B, T)`` (bool) selects the target positions (padding excluded);
    ``length_normalize`` divides by the number of positions.

    Example:
        >>> import torch
        >>> sequence_log_likelihood(torch.zeros(2, 3, 4), torch.zeros(2, 3, dtype=torch.long))
        tensor([-4.1589, -4.1589])
    """
    logits = check_finite("logits", check_tensor("logits", logits))
    if logits.dim() != 3 or not logits.is_floating_point():
        raise ValueError(f"logits must be a float (B, T, V) tensor, got {tuple(logits.shape)}")
    targets = check_tensor("targets", targets)
    if targets.shape != logits.shape[:2] or targets.is_floating_point():
        raise ValueError(f"targets must be integer of shape {tuple(logits.shape[:2])}")
    if bool((targets < 0).any()) or bool((targets >= logits.shape[2]).any()):
        raise ValueError(f"targets must lie in [0, {logits.shape[2]}) (the vocabulary)")
    logp = torch.log_softmax(logits.to(compute_dtype(logits.dtype)), dim=-1)
    tok = logp.gather(-1, targets[..., None].long()).squeeze(-1)
    if mask is not None:
        mask = _check_mask("mask", mask, targets.shape)
        tok = tok.masked_fill(~mask, 0.0)
        count = mask.sum(1).clamp_min(1).to(tok.dtype)
    else:
        count = torch.full(tok.shape[:1], tok.shape[1], dtype=tok.dtype, device=tok.device)
    total = tok.sum(1)
    return total / count if length_normalize else total


def corrupted_margin_loss(
    original: Tensor,
    corrupted: Tensor,
    *,
    margin: float = 1.0,
    reduction: str = "mean",
) -> Tensor:
    r"""Margin between the score of the original input and of its corrupted versions (CorefCL,
    Hwang et al. 2021: the context with coreference mentions corrupted is a hard negative)::

        L_i = 1/K sum_k max(0, m - (s(y_i | x_i, c_i) - s(y_i | x_i, c~_ik)))

    where :math:`s` is typically the target log-likelihood (see :func:`sequence_log_likelihood`).

    Args:
        original: ``(B,)`` scores of the original inputs.
        corrupted: ``(B,)`` or ``(B, K)`` scores of ``K`` corruptions of each input.
        margin: :math:`m`.

    Example:
        >>> import torch
        >>> corrupted_margin_loss(torch.tensor([-3.0, -2.0]), torch.tensor([-2.5, -4.0]))
        tensor(0.7500)
    """
    original = check_finite("original", check_tensor("original", original))
    corrupted = check_finite("corrupted", check_tensor("corrupted", corrupted))
    check_choice("reduction", reduction, REDUCTIONS)
    margin = _check_nonneg("margin", margin)
    if original.dim() != 1 or not original.is_floating_point():
        raise ValueError(f"original must be a float (B,) tensor, got {tuple(original.shape)}")
    if corrupted.dim() == 1:
        corrupted = corrupted[:, None]
    if corrupted.dim() != 2 or corrupted.shape[0] != original.shape[0]:
        raise ValueError(
            f"corrupted must be ({original.shape[0]},) or ({original.shape[0]}, K), "
            f"got {tuple(corrupted.shape)}"
        )
    dtype = compute_dtype(original.dtype)
    gap = original.to(dtype)[:, None] - corrupted.to(dtype)
    loss = (margin - gap).clamp_min(0.0).mean(dim=1)
    return _reduce([(loss, torch.ones_like(loss, dtype=torch.bool))], reduction, "input")


# ------------------------------------------------------------------------------------------
# Modules
# ------------------------------------------------------------------------------------------
class NTXentAM(nn.Module):
    r"""NT-Xent with additive margin (Lepage & Dehak 2022); see :func:`nt_xent_am`.

    Example:
        >>> import torch
        >>> NTXentAM(temperature=0.2, margin=0.1)(torch.randn(8, 16), torch.randn(8, 16)).shape
        torch.Size([])
    """

    def __init__(
        self,
        temperature: float = 0.2,
        margin: float = 0.1,
        symmetric: bool = True,
        *,
        similarity: str = "cosine",
        engine: str = "auto",
    ) -> None:
        super().__init__()
        check_positive_scalar("temperature", temperature)
        check_finite_scalar("margin", margin)
        self.temperature, self.margin, self.symmetric = float(temperature), float(margin), symmetric
        self.similarity, self.engine = similarity, engine

    def forward(self, *views: Tensor) -> Tensor:
        return nt_xent_am(
            *views,
            temperature=self.temperature,
            margin=self.margin,
            symmetric=self.symmetric,
            similarity=self.similarity,
            engine=self.engine,
        )

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, margin={self.margin}, symmetric={self.symmetric}"


class CircleLoss(nn.Module):
    r"""Circle loss (Sun et al. 2020); see :func:`circle_loss`.

    Example:
        >>> import torch
        >>> x, y = torch.randn(8, 16), torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
        >>> CircleLoss(margin=0.25, gamma=80.0)(x, labels=y).shape
        torch.Size([])
    """

    def __init__(
        self, margin: float = 0.25, gamma: float = 256.0, *, similarity: str = "cosine"
    ) -> None:
        super().__init__()
        check_finite_scalar("margin", margin)
        check_positive_scalar("gamma", gamma)
        self.margin, self.gamma, self.similarity = float(margin), float(gamma), similarity

    def forward(
        self,
        query: Tensor,
        key: Tensor | None = None,
        *,
        labels: Tensor | None = None,
        key_labels: Tensor | None = None,
        positives: Tensor | None = None,
        exclude: Tensor | None = None,
    ) -> Tensor:
        return circle_loss(
            query,
            key,
            labels=labels,
            key_labels=key_labels,
            positives=positives,
            exclude=exclude,
            margin=self.margin,
            gamma=self.gamma,
            similarity=self.similarity,
        )

    def extra_repr(self) -> str:
        return f"margin={self.margin}, gamma={self.gamma}"


class PromCSELoss(nn.Module):
    r"""PromCSE's NT-Xent + energy-based hinge loss (Jiang et al. 2022); see :func:`promcse`.

    Example:
        >>> import torch
        >>> q, k, h = torch.randn(8, 16), torch.randn(8, 16), torch.randn(8, 16)
        >>> PromCSELoss()(q, k, h).shape
        torch.Size([])
    """

    def __init__(
        self, temperature: float = 0.05, margin: float = 0.2, weight: float = 10.0
    ) -> None:
        super().__init__()
        check_positive_scalar("temperature", temperature)
        self.temperature, self.margin, self.weight = float(temperature), float(margin), weight

    def forward(self, query: Tensor, key: Tensor, hard_negatives: Tensor | None = None) -> Tensor:
        return promcse(
            query,
            key,
            hard_negatives,
            temperature=self.temperature,
            margin=self.margin,
            weight=self.weight,
        )


class TripletLoss(nn.Module):
    r"""Triplet loss with in-batch mining (batch-hard, semi-hard or all); see
    :func:`triplet_loss`.

    Example:
        >>> import torch
        >>> x, y = torch.randn(8, 16), torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
        >>> TripletLoss(margin=0.3, mining="batch_hard")(x, labels=y).shape
        torch.Size([])
    """

    def __init__(
        self, margin: float = 0.2, mining: str = "batch_hard", distance: str = "euclidean"
    ) -> None:
        super().__init__()
        self.margin = _check_nonneg("margin", margin)
        self.mining = check_choice("mining", mining, TRIPLET_MINING)
        self.distance = check_choice("distance", distance, DISTANCES)

    def forward(
        self,
        query: Tensor,
        key: Tensor | None = None,
        *,
        labels: Tensor | None = None,
        key_labels: Tensor | None = None,
    ) -> Tensor:
        return triplet_loss(
            query,
            key,
            labels=labels,
            key_labels=key_labels,
            margin=self.margin,
            mining=self.mining,
            distance=self.distance,
        )

    def extra_repr(self) -> str:
        return f"margin={self.margin}, mining={self.mining!r}, distance={self.distance!r}"


class QuadrupletLoss(nn.Module):
    r"""Quadruplet loss with in-batch hardest selection; see :func:`quadruplet_loss`.

    Example:
        >>> import torch
        >>> x, y = torch.randn(8, 16), torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
        >>> QuadrupletLoss(margin=1.0, margin2=0.5)(x, labels=y).shape
        torch.Size([])
    """

    def __init__(
        self, margin: float = 1.0, margin2: float = 0.5, distance: str = "sq_euclidean"
    ) -> None:
        super().__init__()
        self.margin = _check_nonneg("margin", margin)
        self.margin2 = _check_nonneg("margin2", margin2)
        self.distance = check_choice("distance", distance, DISTANCES)

    def forward(
        self,
        query: Tensor,
        key: Tensor | None = None,
        *,
        labels: Tensor | None = None,
        key_labels: Tensor | None = None,
    ) -> Tensor:
        return quadruplet_loss(
            query,
            key,
            labels=labels,
            key_labels=key_labels,
            margin=self.margin,
            margin2=self.margin2,
            distance=self.distance,
        )


class PairContrastiveLoss(nn.Module):
    r"""Hadsell et al. 2006 pair contrastive loss; see :func:`pair_contrastive_loss`.

    Example:
        >>> import torch
        >>> a, b = torch.randn(4, 8), torch.randn(4, 8)
        >>> PairContrastiveLoss(margin=1.0)(a, b, similar=torch.tensor([1, 0, 1, 0]).bool()).shape
        torch.Size([])
    """

    def __init__(self, margin: float = 1.0, distance: str = "euclidean") -> None:
        super().__init__()
        self.margin = _check_nonneg("margin", margin)
        self.distance = check_choice("distance", distance, DISTANCES)

    def forward(
        self,
        x1: Tensor,
        x2: Tensor | None = None,
        *,
        similar: Tensor | None = None,
        labels: Tensor | None = None,
        key_labels: Tensor | None = None,
    ) -> Tensor:
        return pair_contrastive_loss(
            x1,
            x2,
            similar=similar,
            labels=labels,
            key_labels=key_labels,
            margin=self.margin,
            distance=self.distance,
        )


class CorruptedMarginLoss(nn.Module):
    r"""CorefCL's margin between original and corrupted inputs; see
    :func:`corrupted_margin_loss`.

    Example:
        >>> import torch
        >>> CorruptedMarginLoss(margin=1.0)(torch.tensor([-1.0]), torch.tensor([[-3.0, -1.5]]))
        tensor(0.2500)
    """

    def __init__(self, margin: float = 1.0) -> None:
        super().__init__()
        self.margin = _check_nonneg("margin", margin)

    def forward(self, original: Tensor, corrupted: Tensor) -> Tensor:
        return corrupted_margin_loss(original, corrupted, margin=self.margin)
