"""Hardness control: how strongly hard pairs count (the HARD group).

==================================================  ===============================================
objective                                           paper
==================================================  ===============================================
:func:`focal_info_nce` / :class:`FocalInfoNCE`      focal ITC (Park & Han 2023, text-driven soft
                                                    masks); focal loss (Lin et al. 2017)
:func:`focal_sigmoid_loss`                          RO-ViT (Kim et al. 2023)
:func:`hard_negative_info_nce`                      HCL (Robinson et al. 2021); CoCo (Liu et al.)
:func:`negative_weighted_info_nce`                  MEOW / AdaMEOW (Yu et al. 2024)
:func:`topk_negatives_info_nce`                     MoCo with hard-negative filtering (dual view)
:func:`cacr` / :class:`CACR`                        Zheng et al. 2021
:func:`macl` / :class:`MACL`                        Huang et al. 2023
:func:`relative_penalties`                          Wang & Liu 2021 (behaviour of contrastive loss)
:func:`isogclr` / :class:`ISogCLR`                  Qiu et al. 2023 (iSogCLR)
==================================================  ===============================================
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from contrastkit._validation import (
    check_choice,
    check_embeddings,
    check_finite_scalar,
    check_positive_scalar,
    check_same_dim,
    check_tensor,
    check_views,
)
from contrastkit.functional import (
    REDUCTIONS,
    _reduce,
    _scale_from_temperature,
    build_pairing,
    info_nce,
)
from contrastkit.objectives.infonce import masked_fill_value
from contrastkit.similarity import SIMILARITIES, pairwise_similarity, prepare

__all__ = [
    "focal_info_nce",
    "focal_sigmoid_loss",
    "hard_negative_info_nce",
    "negative_weighted_info_nce",
    "topk_hard_negatives",
    "topk_negatives_info_nce",
    "cacr",
    "macl",
    "relative_penalties",
    "isogclr",
    "ISogCLROutput",
    "FocalInfoNCE",
    "FocalSigmoidLoss",
    "HardNegativeInfoNCE",
    "NegativeWeightedInfoNCE",
    "TopKNegativesInfoNCE",
    "CACR",
    "MACL",
    "ISogCLR",
]


def _check_nonneg(name: str, value: float) -> float:
    check_finite_scalar(name, value)
    if float(value) < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return float(value)


def _mean_of_means(rows: list[Tensor]) -> Tensor:
    return torch.stack([r.mean() for r in rows]).mean()


# ------------------------------------------------------------------------------------------
# Focal weighting
# ------------------------------------------------------------------------------------------
def focal_info_nce(
    query: Tensor,
    key: Tensor,
    *,
    gamma: float = 2.0,
    temperature: float | Tensor = 0.07,
    symmetric: bool = False,
    negatives: Tensor | None = None,
    similarity: str = "cosine",
    engine: str = "auto",
) -> Tensor:
    r"""Focal image-text contrastive loss (Park & Han 2023; focal loss of Lin et al. 2017 applied
    to the InfoNCE softmax).

    With :math:`p_i = e^{l_{ii}} / \sum_{a \in A(i)} e^{l_{ia}}` the softmax probability of query
    :math:`i`'s positive key::

        L = 1/B sum_i -(1 - p_i)^gamma log p_i

    ``symmetric=True`` averages it with the key->query direction (then ``key`` must have ``B``
    rows). The per-row cross-entropy :math:`-\log p_i` is :func:`info_nce`'s row loss, so this
    runs on every engine (it tiles); the focal factor is applied to the row results and is
    differentiated, as in focal loss. ``gamma = 0`` is InfoNCE.

    Example:
        >>> import torch
        >>> q, k = torch.randn(8, 16), torch.randn(8, 16)
        >>> focal_info_nce(q, k, gamma=2.0, symmetric=True).shape
        torch.Size([])
    """
    gamma = _check_nonneg("gamma", gamma)
    if symmetric and isinstance(key, Tensor) and isinstance(query, Tensor):
        if key.shape[0] != query.shape[0]:
            raise ValueError("symmetric=True needs as many keys as queries")
    rows = info_nce(
        query,
        key,
        negatives=negatives,
        temperature=temperature,
        symmetric=symmetric,
        similarity=similarity,
        reduction="none",
        engine=engine,
    )
    focal = (-torch.expm1(-rows)).clamp_min(0.0) ** gamma * rows
    return _mean_of_means(list(focal.split(query.shape[0])))


def focal_sigmoid_loss(
    query: Tensor,
    key: Tensor,
    *,
    gamma: float = 2.0,
    alpha: float | None = None,
    temperature: float | Tensor = 0.07,
    bias: float | Tensor = 0.0,
    labels: Tensor | None = None,
    key_labels: Tensor | None = None,
    positives: Tensor | None = None,
    exclude: Tensor | None = None,
    similarity: str = "cosine",
) -> Tensor:
    r"""Focal loss over every (query, key) pair, as RO-ViT uses instead of the softmax
    cross-entropy (Kim et al. 2023; sigmoid focal loss of Lin et al. 2017).

    With :math:`x_{ij} = s_{ij}/\tau + b`, :math:`p_{ij} = \sigma(x_{ij})` for positive pairs
    and :math:`1 - \sigma(x_{ij})` for negatives::

        L = -1/B sum_i sum_j alpha_ij (1 - p_ij)^gamma log p_ij

    with :math:`\alpha_{ij} = \alpha` on positives and :math:`1-\alpha` on negatives when
    ``alpha`` is given (1 otherwise). A per-row sum over keys: it tiles like SigLIP.

    Example:
        >>> import torch
        >>> focal_sigmoid_loss(torch.randn(8, 16), torch.randn(8, 16), gamma=2.0).shape
        torch.Size([])
    """
    query = check_embeddings("query", query)
    key = check_embeddings("key", key)
    check_same_dim(("query", "key"), (query, key))
    check_choice("similarity", similarity, SIMILARITIES)
    gamma = _check_nonneg("gamma", gamma)
    check_finite_scalar("bias", bias)
    if alpha is not None:
        check_finite_scalar("alpha", alpha)
        if not 0 <= float(alpha) <= 1:
            raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    scale = _scale_from_temperature(temperature)
    pairing = build_pairing(
        query.shape[0],
        key.shape[0],
        query.device,
        labels=labels,
        key_labels=key_labels,
        positives=positives,
        exclude=exclude,
    )
    s = pairwise_similarity(prepare(query, similarity), prepare(key, similarity), similarity)
    w, ex = pairing.dense(dtype=s.dtype)
    z = torch.where(w > 0, 1.0, -1.0).to(s.dtype)
    x = z * (s * scale + bias)
    terms = -(torch.sigmoid(-x) ** gamma) * F.logsigmoid(x)
    if alpha is not None:
        terms = terms * torch.where(w > 0, float(alpha), 1.0 - float(alpha)).to(s.dtype)
    if ex is not None:
        terms = terms.masked_fill(ex, 0.0)
    return terms.sum() / query.shape[0]


# ------------------------------------------------------------------------------------------
# Weighted negatives (HCL, MEOW)
# ------------------------------------------------------------------------------------------
def _pairs_setup(
    query: Tensor,
    key: Tensor | None,
    labels: Tensor | None,
    key_labels: Tensor | None,
    positives: Tensor | None,
    exclude: Tensor | None,
    temperature: float | Tensor,
    similarity: str,
) -> tuple[Tensor, Tensor, Tensor, Tensor, float | Tensor]:
    """Logits, positive mask, negative mask, similarities and the scale of a pairing."""
    query = check_embeddings("query", query)
    same = key is None
    key = query if same else check_embeddings("key", key)
    check_same_dim(("query", "key"), (query, key))
    check_choice("similarity", similarity, SIMILARITIES)
    scale = _scale_from_temperature(temperature)
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
    s = pairwise_similarity(prepare(query, similarity), prepare(key, similarity), similarity)
    w, ex = pairing.dense(dtype=s.dtype)
    pos = w > 0
    neg = ~pos if ex is None else (~pos & ~ex)
    return s * scale, pos, neg, s, scale


def _positive_vs_mass(
    logits: Tensor, pos: Tensor, neg: Tensor, log_mass: Tensor, reduction: str
) -> Tensor:
    """Mean over a row's positives of ``-l_ip + log(e^{l_ip} + M_ip)`` with ``log M`` given."""
    terms = torch.logaddexp(logits, log_mass) - logits
    terms = torch.where(pos, terms, torch.zeros_like(terms))
    count = pos.sum(dim=1)
    valid = (count > 0) & neg.any(dim=1)
    loss = torch.where(valid, terms.sum(dim=1) / count.clamp_min(1), torch.zeros_like(terms[:, 0]))
    return _reduce([(loss, valid)], reduction, "query")


def hard_negative_info_nce(
    query: Tensor,
    key: Tensor | None = None,
    *,
    labels: Tensor | None = None,
    key_labels: Tensor | None = None,
    positives: Tensor | None = None,
    exclude: Tensor | None = None,
    beta: float = 1.0,
    tau_plus: float = 0.0,
    temperature: float | Tensor = 0.5,
    similarity: str = "cosine",
    reduction: str = "mean",
) -> Tensor:
    r"""Contrastive loss with hard negative sampling (HCL, Robinson et al. 2021): negatives are
    importance-weighted by :math:`e^{\beta l}`, so harder (more similar) negatives count more.

    For query :math:`i`, positive :math:`p`, logits :math:`l = s/\tau` and its :math:`N`
    negatives :math:`n`::

        w_n = e^{beta l_in} / (1/N sum_n' e^{beta l_in'})       (importance weights, mean 1)
        Ng  = max( (sum_n w_n e^{l_in} - tau+ N e^{l_ip}) / (1 - tau+),  N e^{-1/tau} )
        L_ip = -log( e^{l_ip} / (e^{l_ip} + Ng) )

    averaged over a row's positives, then over rows. ``tau_plus`` :math:`\tau^+` is the class
    prior of the debiased estimator (0 turns debiasing and the clamp off); the clamp
    :math:`N e^{-1/\tau}` assumes cosine similarity. ``beta = 0, tau_plus = 0`` is InfoNCE with
    the positive kept out of the other positives' denominators. The weights are differentiated, as
    in the reference code. Both sums are row log-sum-exps (:math:`\log\sum e^{(1+\beta)l}` and
    :math:`\log\sum e^{\beta l}`): the loss tiles.

    The pairing is given as in :func:`info_nce`; SimCLR's layout is ``key=None`` with
    ``labels`` = sample ids of the concatenated views.

    Example:
        >>> import torch
        >>> z = torch.randn(16, 32); ids = torch.arange(8).repeat(2)
        >>> hard_negative_info_nce(z, labels=ids, beta=1.0, tau_plus=0.1).shape
        torch.Size([])
    """
    check_choice("reduction", reduction, REDUCTIONS)
    beta = _check_nonneg("beta", beta)
    check_finite_scalar("tau_plus", tau_plus)
    if not 0 <= float(tau_plus) < 1:
        raise ValueError(f"tau_plus must lie in [0, 1), got {tau_plus}")
    logits, pos, neg, _, scale = _pairs_setup(
        query, key, labels, key_labels, positives, exclude, temperature, similarity
    )
    fill = masked_fill_value(logits.dtype)
    n_neg = neg.sum(dim=1, keepdim=True).clamp_min(1).to(logits.dtype)
    log_reweighted = torch.logsumexp(((1 + beta) * logits).masked_fill(~neg, fill), 1, True)
    log_imp = torch.logsumexp((beta * logits).masked_fill(~neg, fill), 1, True)
    log_mass = n_neg.log() + log_reweighted - log_imp
    if tau_plus > 0:
        log_debias = math.log(tau_plus) + n_neg.log() + logits
        diff = -torch.expm1(log_debias - log_mass)
        tiny = torch.finfo(logits.dtype).tiny
        debiased = log_mass + diff.clamp_min(tiny).log() - math.log(1 - tau_plus)
        debiased = torch.where(diff > 0, debiased, fill)
        lower = n_neg.log() - scale
        log_mass = torch.maximum(debiased, lower.expand_as(debiased))
    return _positive_vs_mass(logits, pos, neg, log_mass.expand_as(logits), reduction)


def negative_weighted_info_nce(
    query: Tensor,
    key: Tensor | None = None,
    *,
    negative_weights: Tensor,
    labels: Tensor | None = None,
    key_labels: Tensor | None = None,
    positives: Tensor | None = None,
    exclude: Tensor | None = None,
    temperature: float | Tensor = 0.07,
    similarity: str = "cosine",
    reduction: str = "mean",
) -> Tensor:
    r"""InfoNCE with a weight on every negative (MEOW / AdaMEOW, Yu et al. 2024: hard 0/1 weights
    from clustering, or learned soft weights)::

        L_ip = -log( e^{l_ip} / (e^{l_ip} + sum_n w_in e^{l_in}) )

    averaged over a row's positives, then over rows. ``negative_weights`` ``(B, N)`` (>= 0, may
    require grad) is read on the negative pairs only. ``w = 1`` is InfoNCE (one positive per
    row). The weighted sum is a log-sum-exp of :math:`l + \log w`: it tiles.

    Example:
        >>> import torch
        >>> q, k = torch.randn(6, 8), torch.randn(6, 8)
        >>> w = torch.rand(6, 6)
        >>> negative_weighted_info_nce(q, k, negative_weights=w).shape
        torch.Size([])
    """
    check_choice("reduction", reduction, REDUCTIONS)
    logits, pos, neg, _, _ = _pairs_setup(
        query, key, labels, key_labels, positives, exclude, temperature, similarity
    )
    w = check_tensor("negative_weights", negative_weights)
    if tuple(w.shape) != tuple(logits.shape) or not w.is_floating_point():
        raise ValueError(
            f"negative_weights must be a float tensor of shape {tuple(logits.shape)}, "
            f"got {tuple(w.shape)}"
        )
    if bool((w.detach() < 0).any()) or not bool(torch.isfinite(w.detach()).all()):
        raise ValueError("negative_weights must be finite and >= 0")
    w = w.to(logits.dtype)
    tiny = torch.finfo(logits.dtype).tiny
    keep = neg & (w > 0)
    weighted = torch.where(keep, logits + w.clamp_min(tiny).log(), masked_fill_value(logits.dtype))
    log_mass = torch.logsumexp(weighted, dim=1, keepdim=True)
    return _positive_vs_mass(logits, pos, neg, log_mass.expand_as(logits), reduction)


# ------------------------------------------------------------------------------------------
# Top-k hard negatives from a queue (MoCo with hard-negative filtering)
# ------------------------------------------------------------------------------------------
def topk_hard_negatives(query: Tensor, bank: Tensor, k: int, similarity: str = "cosine") -> Tensor:
    """The ``k`` most similar rows of ``bank`` ``(M, D)`` for every query: ``(B, k, D)``.

    The selection is not differentiated; the gathered rows carry ``bank``'s gradient.

    Example:
        >>> import torch
        >>> topk_hard_negatives(torch.randn(4, 8), torch.randn(32, 8), k=5).shape
        torch.Size([4, 5, 8])
    """
    query = check_embeddings("query", query)
    bank = check_embeddings("bank", bank)
    check_same_dim(("query", "bank"), (query, bank))
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= bank.shape[0]:
        raise ValueError(f"k must be an int in [1, {bank.shape[0]}] (the bank size), got {k}")
    with torch.no_grad():
        s = pairwise_similarity(prepare(query, similarity), prepare(bank, similarity), similarity)
        idx = s.topk(k, dim=1).indices
    return bank[idx]


def topk_negatives_info_nce(
    query: Tensor,
    key: Tensor,
    queue: Tensor,
    *,
    k: int,
    temperature: float | Tensor = 0.07,
    symmetric: bool = True,
    similarity: str = "cosine",
    engine: str = "auto",
) -> Tensor:
    r"""MoCo loss keeping only the ``k`` hardest queue negatives of each query (by cosine), with
    the dual-view loss that also takes the keys as anchors (MoCo with hard-negative filtering)::

        L(q, k) = 1/B sum_i -log( e^{l_ii} / (e^{l_ii} + sum_{n in top_k(q_i)} e^{q_i.n/tau}) )
        L = (L(q, k) + L(k, q)) / 2          (symmetric; L(q, k) otherwise)

    In-batch keys other than the positive are not negatives (as in MoCo). It is
    :func:`info_nce` with ``exclude`` = off-diagonal and per-query ``negatives``: it tiles.

    Example:
        >>> import torch
        >>> q, k, queue = torch.randn(8, 16), torch.randn(8, 16), torch.randn(64, 16)
        >>> topk_negatives_info_nce(q, k, queue, k=10).shape
        torch.Size([])
    """
    query = check_embeddings("query", query)
    key = check_embeddings("key", key)
    queue = check_embeddings("queue", queue)
    check_same_dim(("query", "key", "queue"), (query, key, queue))
    if key.shape[0] != query.shape[0]:
        raise ValueError(f"key must have {query.shape[0]} rows (one per query)")
    off = ~torch.eye(query.shape[0], dtype=torch.bool, device=query.device)
    directions = [(query, key)] + ([(key, query)] if symmetric else [])
    losses = [
        info_nce(
            a,
            b,
            exclude=off,
            negatives=topk_hard_negatives(a, queue, k, similarity),
            temperature=temperature,
            similarity=similarity,
            engine=engine,
        )
        for a, b in directions
    ]
    return torch.stack(losses).mean()


# ------------------------------------------------------------------------------------------
# CACR
# ------------------------------------------------------------------------------------------
def cacr(
    *views: Tensor,
    alpha: float = 1.0,
    beta: float = 1.0,
    tau_pos: float = 1.0,
    tau_neg: float = 1.0,
    normalize: bool = True,
) -> Tensor:
    r"""Contrastive attraction and contrastive repulsion (CACR, Zheng et al. 2021).

    With squared distances :math:`d(x, y) = |f(x) - f(y)|^2` between (L2-normalised when
    ``normalize``) embeddings, the positives of an embedding are the other views of its sample
    and its negatives are the other samples of another view::

        attraction: sum_{x+} pi+(x+|x) alpha d(x, x+),  pi+ = softmax_{x+}( tau+ d(x, x+))
        repulsion:  sum_{x-} pi-(x-|x) (-beta d(x, x-)), pi- = softmax_{x-}(-tau- d(x, x-))
        L = mean over views and rows of attraction + mean over view pairs and rows of repulsion

    Distant positives and close negatives get the larger weights. The conditional weights are
    differentiated (as in the reference code). Softmax-weighted row sums: the repulsion tiles.

    Example:
        >>> import torch
        >>> cacr(torch.randn(8, 16), torch.randn(8, 16), torch.randn(8, 16)).shape
        torch.Size([])
    """
    views = check_views("cacr", views)
    n = views[0].shape[0]
    if n < 2:
        raise ValueError("cacr needs at least 2 samples (negatives are the other samples)")
    for name, value in (
        ("alpha", alpha),
        ("beta", beta),
        ("tau_pos", tau_pos),
        ("tau_neg", tau_neg),
    ):
        _check_nonneg(name, value)
    z = [prepare(v, "cosine" if normalize else "dot") for v in views]
    m = len(z)
    stacked = torch.stack(z)  # (M, N, D)
    attraction = []
    for x in range(m):
        others = torch.cat([stacked[:x], stacked[x + 1 :]])  # (M-1, N, D)
        d = ((z[x][None] - others) ** 2).sum(-1).T  # (N, M-1)
        attraction.append((torch.softmax(tau_pos * d, dim=1) * alpha * d).sum(1).mean())
    repulsion = []
    eye = torch.eye(n, dtype=torch.bool, device=stacked.device)
    for x in range(m):
        for y in range(x + 1, m):
            d = -pairwise_similarity(z[x], z[y], "neg_sq_euclidean")
            d = d.masked_select(~eye).view(n, n - 1)
            weights = torch.softmax(-tau_neg * d, dim=1)
            repulsion.append((weights * (-beta) * d).sum(1).mean())
    return torch.stack(attraction).mean() + torch.stack(repulsion).mean()


# ------------------------------------------------------------------------------------------
# MACL
# ------------------------------------------------------------------------------------------
def macl(
    view1: Tensor,
    view2: Tensor,
    *,
    temperature: float = 0.1,
    alpha: float = 0.5,
    a0: float = 0.0,
    two_view: bool = True,
    reweight: bool = True,
    similarity: str = "cosine",
    engine: str = "auto",
) -> Tensor:
    r"""Model-aware contrastive learning (MACL, Huang et al. 2023): a temperature adapted to the
    alignment magnitude, and a gradient reweighting.

    With :math:`A = \frac1N\sum_i s(v^1_i, v^2_i)` (not differentiated)::

        tau_A = tau_0 (1 + alpha (A - A_0))
        L_i   = -V_i log P_i,   P_i = e^{s_ip/tau_A} / sum_{a in A(i)} e^{s_ia/tau_A},
        V_i   = 1 / (1 - P_i)  (not differentiated; V = 1 when reweight=False)

    ``two_view=True``: SimCLR's 2N anchors (positive = the other view, denominator = every other
    embedding); otherwise ``view1`` are queries against ``view2`` keys. Every row has one
    positive, so with :math:`x_i = \log \sum_{n} e^{l_in} - l_ip` (:func:`info_nce`'s decoupled
    row loss, which tiles and runs on every engine) :math:`-\log P_i = \mathrm{softplus}(x_i)`
    and :math:`1 - P_i = \sigma(x_i)`; the reweighted row's gradient is exactly
    :math:`\nabla x_i`, which stays finite when :math:`P_i` rounds to 1 (low temperatures).

    Example:
        >>> import torch
        >>> macl(torch.randn(8, 16), torch.randn(8, 16), temperature=0.1, alpha=0.5).shape
        torch.Size([])
    """
    view1 = check_embeddings("view1", view1)
    view2 = check_embeddings("view2", view2)
    if view1.shape != view2.shape:
        raise ValueError(
            f"view1 and view2 must have one shape, got {tuple(view1.shape)}, {tuple(view2.shape)}"
        )
    check_positive_scalar("temperature", temperature)
    check_finite_scalar("alpha", alpha)
    check_finite_scalar("a0", a0)
    check_choice("similarity", similarity, SIMILARITIES)
    with torch.no_grad():
        a = (prepare(view1, similarity) * prepare(view2, similarity)).sum(-1)
        if similarity == "neg_sq_euclidean":
            a = -((prepare(view1, "dot") - prepare(view2, "dot")) ** 2).sum(-1)
        factor = 1.0 + alpha * (a.mean() - a0)
    if not float(factor) > 0:
        raise ValueError(
            f"the adapted temperature tau0 * (1 + alpha (A - a0)) is not positive "
            f"(A = {float(a.mean()):.4g}): lower alpha or a0"
        )
    tau = temperature * factor
    n = view1.shape[0]
    if n < 2:
        raise ValueError("macl needs at least 2 samples (negatives are the other samples)")
    kwargs = dict(
        temperature=tau, similarity=similarity, decoupled=True, reduction="none", engine=engine
    )
    if two_view:
        ids = torch.arange(n, device=view1.device).repeat(2)
        x = info_nce(torch.cat([view1, view2]), labels=ids, **kwargs)
    else:
        x = info_nce(view1, view2, **kwargs)
    # x = log(negative mass / positive term): -log P = softplus(x), 1 - P = sigmoid(x)
    if not reweight:
        return F.softplus(x).mean()
    with torch.no_grad():
        # value of V (-log P) = softplus(x) / sigmoid(x) = (1 + e^-x) log(1 + e^x), -> 1 as
        # x -> -inf; with t = e^x <= 1 it is (1 + t) log1p(t) / t
        t = torch.exp(x.clamp_max(0.0))
        small = (1 + t) * torch.where(t > 1e-30, torch.log1p(t) / t.clamp_min(1e-30), 1.0)
        value = torch.where(x > 0, F.softplus(x) * (1 + torch.exp(-x.clamp_min(0.0))), small)
    # d/dx [V softplus(x)] with V = 1/sigmoid(x) held fixed is exactly 1
    return (value + x - x.detach()).mean()


def relative_penalties(
    query: Tensor,
    key: Tensor,
    *,
    temperature: float | Tensor = 0.07,
    similarity: str = "cosine",
) -> Tensor:
    r"""The relative penalty InfoNCE puts on each negative (Wang & Liu 2021, "Understanding the
    behaviour of contrastive loss"): with query ``i``'s positive key ``i``::

        r_ij = |dL_i/ds_ij| / |dL_i/ds_ii| = e^{s_ij/tau} / sum_{k != i} e^{s_ik/tau}   (j != i)

    a Boltzmann distribution over the negatives whose concentration on the hardest ones grows as
    :math:`\tau` shrinks (the temperature is a hardness knob). Returns ``(B, N)`` with 0 on the
    positives.

    Example:
        >>> import torch
        >>> r = relative_penalties(torch.randn(4, 8), torch.randn(4, 8), temperature=0.1)
        >>> torch.allclose(r.sum(1), torch.ones(4))
        True
    """
    query = check_embeddings("query", query)
    key = check_embeddings("key", key)
    check_same_dim(("query", "key"), (query, key))
    if key.shape[0] < query.shape[0]:
        raise ValueError("key needs at least as many rows as query (key i is query i's positive)")
    scale = _scale_from_temperature(temperature)
    s = pairwise_similarity(prepare(query, similarity), prepare(key, similarity), similarity)
    eye = torch.eye(*s.shape, dtype=torch.bool, device=s.device)
    return torch.softmax((s * scale).masked_fill(eye, masked_fill_value(s.dtype)), dim=1)


# ------------------------------------------------------------------------------------------
# iSogCLR: per-sample temperatures with a stochastic estimator
# ------------------------------------------------------------------------------------------
class ISogCLROutput(NamedTuple):
    """What :func:`isogclr` returns: the loss and the state updates (all but ``loss`` detached).

    ``log_u_*``: the new log moving averages ``log u_i`` of the batch rows; ``tau_grad_*``: the
    estimator of :math:`\\partial F / \\partial \\tau_i`.

    Example:
        >>> import torch
        >>> q, k = torch.randn(4, 8), torch.randn(4, 8)
        >>> tau, log_u = torch.full((4,), 0.1), torch.zeros(4)
        >>> out = isogclr(q, k, tau, tau, log_u, log_u)
        >>> out.loss.shape, out.log_u_query.shape, out.tau_grad_key.shape
        (torch.Size([]), torch.Size([4]), torch.Size([4]))
    """

    loss: Tensor
    log_u_query: Tensor
    log_u_key: Tensor
    tau_grad_query: Tensor
    tau_grad_key: Tensor


def _isogclr_direction(
    sim: Tensor, tau: Tensor, log_u: Tensor, gamma: float, rho: float
) -> tuple[Tensor, Tensor, Tensor]:
    """One direction, rows = anchors: (loss rows, new log u, tau gradient estimate)."""
    b = sim.shape[0]
    eye = torch.eye(b, dtype=torch.bool, device=sim.device)
    h = sim - sim.diagonal()[:, None]  # h_i(z) = s(x_i, z) - s(x_i, x_i+)
    z = (h / tau[:, None]).masked_fill(eye, masked_fill_value(sim.dtype))
    log_g = torch.logsumexp(z, dim=1) - math.log(b - 1)  # log( 1/(B-1) sum_{z != i} e^{h/tau} )
    with torch.no_grad():
        first = torch.isneginf(log_u)
        moved = torch.logaddexp(math.log1p(-gamma) + log_u, math.log(gamma) + log_g)
        new_log_u = torch.where(first, log_g, moved)
        weights = torch.exp(z - math.log(b - 1) - new_log_u[:, None])  # e^{h/tau} / ((B-1) u)
        tau_grad = new_log_u + rho - (weights * z.masked_fill(eye, 0.0)).sum(1)
    # value tau_i (log u_i + rho); gradient tau_i / u_i * grad g_i (the paper's estimator)
    surrogate = tau * torch.exp(log_g - new_log_u)
    loss = tau * (new_log_u + rho) + surrogate - surrogate.detach()
    return loss, new_log_u, tau_grad


def isogclr(
    query: Tensor,
    key: Tensor,
    tau_query: Tensor,
    tau_key: Tensor,
    log_u_query: Tensor,
    log_u_key: Tensor,
    *,
    gamma: float = 0.8,
    rho: float = 6.0,
    similarity: str = "cosine",
) -> ISogCLROutput:
    r"""The robust contrastive loss with individual temperatures of iSogCLR (Qiu et al. 2023)
    and its stochastic estimator, for paired ``query`` / ``key`` rows (image / text, or two views).

    For anchor :math:`x_i` with temperature :math:`\tau_i`, its positive :math:`x_i^+` and the
    other rows' keys :math:`z` as negatives, :math:`h_i(z) = s(x_i, z) - s(x_i, x_i^+)`::

        F(w, tau) = 1/B sum_i tau_i ( log g_i(w, tau_i) + rho ),
        g_i = 1/(B-1) sum_{z != x_i+} exp(h_i(z) / tau_i)

    (the DRO form: :math:`\tau_i` is the per-sample Lagrange multiplier of a KL ball of radius
    :math:`\rho`). The estimator keeps a moving average :math:`u_i \leftarrow (1-\gamma) u_i +
    \gamma g_i` per sample (``u_i = g_i`` on a sample's first visit, marked by
    ``log_u = -inf``) and uses::

        grad_w   = 1/B sum_i tau_i / u_i  grad_w g_i
        grad_tau_i = log u_i + rho - 1/u_i * 1/(B-1) sum_z exp(h_i(z)/tau_i) h_i(z)/tau_i

    The returned loss has value :math:`\frac1B\sum_i \tau_i(\log u_i + \rho)` and exactly the
    gradient ``grad_w`` above; the key side (texts as anchors, their own :math:`\tau'`) is added
    (the paper's :math:`F_I + F_T`). Temperatures are not differentiated: use ``tau_grad_*``
    (see :class:`ISogCLR`, which keeps the state). Row log-sum-exps: it tiles.

    Args:
        query, key: ``(B, D)``, row ``i`` of each is one pair.
        tau_query, tau_key: ``(B,)`` the rows' current temperatures.
        log_u_query, log_u_key: ``(B,)`` the rows' stored ``log u`` (``-inf`` = never seen).
        gamma: moving-average rate :math:`\gamma \in (0, 1]`.
        rho: the DRO radius :math:`\rho`.

    Example:
        >>> import torch
        >>> q, k = torch.randn(8, 16), torch.randn(8, 16)
        >>> tau, log_u = torch.full((8,), 0.07), torch.full((8,), float("-inf"))
        >>> out = isogclr(q, k, tau, tau, log_u, log_u)
        >>> out.loss.shape, out.tau_grad_query.shape
        (torch.Size([]), torch.Size([8]))
    """
    query = check_embeddings("query", query)
    key = check_embeddings("key", key)
    check_same_dim(("query", "key"), (query, key))
    check_choice("similarity", similarity, SIMILARITIES)
    b = query.shape[0]
    if key.shape[0] != b or b < 2:
        raise ValueError(
            f"query and key must have the same number (>= 2) of rows, got {b}, {key.shape[0]}"
        )
    check_finite_scalar("gamma", gamma)
    if not 0 < gamma <= 1:
        raise ValueError(f"gamma must lie in (0, 1], got {gamma}")
    check_finite_scalar("rho", rho)
    s = pairwise_similarity(prepare(query, similarity), prepare(key, similarity), similarity)
    state = []
    for name, t in (("tau_query", tau_query), ("tau_key", tau_key)):
        t = check_tensor(name, t)
        if tuple(t.shape) != (b,) or not bool((t > 0).all()):
            raise ValueError(f"{name} must be a ({b},) tensor of positive temperatures")
        state.append(t.detach().to(s.dtype))
    for name, u in (("log_u_query", log_u_query), ("log_u_key", log_u_key)):
        u = check_tensor(name, u)
        if tuple(u.shape) != (b,):
            raise ValueError(f"{name} must have shape ({b},), got {tuple(u.shape)}")
        state.append(u.detach().to(s.dtype))
    tq, tk, uq, uk = state
    loss_q, new_uq, grad_q = _isogclr_direction(s, tq, uq, gamma, rho)
    loss_k, new_uk, grad_k = _isogclr_direction(s.T, tk, uk, gamma, rho)
    return ISogCLROutput(loss_q.mean() + loss_k.mean(), new_uq, new_uk, grad_q, grad_k)


# ------------------------------------------------------------------------------------------
# Modules
# ------------------------------------------------------------------------------------------
class FocalInfoNCE(nn.Module):
    r"""Focal InfoNCE; see :func:`focal_info_nce`.

    Example:
        >>> import torch
        >>> FocalInfoNCE(gamma=2.0, symmetric=True)(torch.randn(8, 16), torch.randn(8, 16)).shape
        torch.Size([])
    """

    def __init__(
        self,
        gamma: float = 2.0,
        temperature: float = 0.07,
        symmetric: bool = False,
        *,
        similarity: str = "cosine",
        engine: str = "auto",
    ) -> None:
        super().__init__()
        self.gamma = _check_nonneg("gamma", gamma)
        check_positive_scalar("temperature", temperature)
        self.temperature, self.symmetric = float(temperature), bool(symmetric)
        self.similarity, self.engine = similarity, engine

    def forward(self, query: Tensor, key: Tensor, negatives: Tensor | None = None) -> Tensor:
        return focal_info_nce(
            query,
            key,
            gamma=self.gamma,
            temperature=self.temperature,
            symmetric=self.symmetric,
            negatives=negatives,
            similarity=self.similarity,
            engine=self.engine,
        )


class FocalSigmoidLoss(nn.Module):
    r"""RO-ViT's focal loss over all pairs with a learnable temperature; see
    :func:`focal_sigmoid_loss`.

    Example:
        >>> import torch
        >>> loss = FocalSigmoidLoss()(torch.randn(8, 16), torch.randn(8, 16))
        >>> loss.shape
        torch.Size([])
    """

    def __init__(
        self,
        gamma: float = 2.0,
        temperature: float = 0.07,
        alpha: float | None = None,
        learnable_temperature: bool = True,
    ) -> None:
        super().__init__()
        self.gamma = _check_nonneg("gamma", gamma)
        check_positive_scalar("temperature", temperature)
        self.alpha = alpha
        log_t = torch.tensor(math.log(temperature))
        if learnable_temperature:
            self.log_temperature = nn.Parameter(log_t)
        else:
            self.register_buffer("log_temperature", log_t)

    def forward(self, query: Tensor, key: Tensor, *, labels: Tensor | None = None) -> Tensor:
        return focal_sigmoid_loss(
            query,
            key,
            gamma=self.gamma,
            alpha=self.alpha,
            temperature=self.log_temperature.exp(),
            labels=labels,
        )


class HardNegativeInfoNCE(nn.Module):
    r"""HCL hardness-weighted negatives; see :func:`hard_negative_info_nce`.

    Example:
        >>> import torch
        >>> z, ids = torch.randn(16, 32), torch.arange(8).repeat(2)
        >>> HardNegativeInfoNCE(beta=1.0, tau_plus=0.1)(z, labels=ids).shape
        torch.Size([])
    """

    def __init__(
        self,
        beta: float = 1.0,
        tau_plus: float = 0.0,
        temperature: float = 0.5,
        *,
        similarity: str = "cosine",
    ) -> None:
        super().__init__()
        self.beta = _check_nonneg("beta", beta)
        self.tau_plus, self.temperature, self.similarity = tau_plus, temperature, similarity

    def forward(
        self,
        query: Tensor,
        key: Tensor | None = None,
        *,
        labels: Tensor | None = None,
        key_labels: Tensor | None = None,
        positives: Tensor | None = None,
    ) -> Tensor:
        return hard_negative_info_nce(
            query,
            key,
            labels=labels,
            key_labels=key_labels,
            positives=positives,
            beta=self.beta,
            tau_plus=self.tau_plus,
            temperature=self.temperature,
            similarity=self.similarity,
        )


class NegativeWeightedInfoNCE(nn.Module):
    r"""InfoNCE with per-negative weights (MEOW / AdaMEOW); see
    :func:`negative_weighted_info_nce`.

    Example:
        >>> import torch
        >>> q, k, w = torch.randn(6, 8), torch.randn(6, 8), torch.rand(6, 6)
        >>> NegativeWeightedInfoNCE(temperature=0.2)(q, k, negative_weights=w).shape
        torch.Size([])
    """

    def __init__(self, temperature: float = 0.07, *, similarity: str = "cosine") -> None:
        super().__init__()
        check_positive_scalar("temperature", temperature)
        self.temperature, self.similarity = float(temperature), similarity

    def forward(
        self,
        query: Tensor,
        key: Tensor | None = None,
        *,
        negative_weights: Tensor,
        labels: Tensor | None = None,
        positives: Tensor | None = None,
    ) -> Tensor:
        return negative_weighted_info_nce(
            query,
            key,
            negative_weights=negative_weights,
            labels=labels,
            positives=positives,
            temperature=self.temperature,
            similarity=self.similarity,
        )


class TopKNegativesInfoNCE(nn.Module):
    r"""Dual-view MoCo loss with top-k hard queue negatives; see
    :func:`topk_negatives_info_nce`.

    Example:
        >>> import torch
        >>> q, k, queue = torch.randn(8, 16), torch.randn(8, 16), torch.randn(64, 16)
        >>> TopKNegativesInfoNCE(k=16)(q, k, queue).shape
        torch.Size([])
    """

    def __init__(self, k: int, temperature: float = 0.07, symmetric: bool = True) -> None:
        super().__init__()
        if not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be a positive int, got {k}")
        check_positive_scalar("temperature", temperature)
        self.k, self.temperature, self.symmetric = k, float(temperature), bool(symmetric)

    def forward(self, query: Tensor, key: Tensor, queue: Tensor) -> Tensor:
        return topk_negatives_info_nce(
            query, key, queue, k=self.k, temperature=self.temperature, symmetric=self.symmetric
        )


class CACR(nn.Module):
    r"""Contrastive attraction and repulsion; see :func:`cacr`.

    Example:
        >>> import torch
        >>> CACR(tau_pos=1.0, tau_neg=2.0)(torch.randn(8, 16), torch.randn(8, 16)).shape
        torch.Size([])
    """

    def __init__(
        self,
        alpha: float = 1.0,
        beta: float = 1.0,
        tau_pos: float = 1.0,
        tau_neg: float = 1.0,
        normalize: bool = True,
    ) -> None:
        super().__init__()
        self.alpha, self.beta = _check_nonneg("alpha", alpha), _check_nonneg("beta", beta)
        self.tau_pos = _check_nonneg("tau_pos", tau_pos)
        self.tau_neg = _check_nonneg("tau_neg", tau_neg)
        self.normalize = bool(normalize)

    def forward(self, *views: Tensor) -> Tensor:
        return cacr(
            *views,
            alpha=self.alpha,
            beta=self.beta,
            tau_pos=self.tau_pos,
            tau_neg=self.tau_neg,
            normalize=self.normalize,
        )


class MACL(nn.Module):
    r"""Model-aware contrastive loss; see :func:`macl`.

    Example:
        >>> import torch
        >>> MACL(temperature=0.1, alpha=0.5)(torch.randn(8, 16), torch.randn(8, 16)).shape
        torch.Size([])
    """

    def __init__(
        self,
        temperature: float = 0.1,
        alpha: float = 0.5,
        a0: float = 0.0,
        two_view: bool = True,
        reweight: bool = True,
    ) -> None:
        super().__init__()
        check_positive_scalar("temperature", temperature)
        self.temperature, self.alpha, self.a0 = float(temperature), float(alpha), float(a0)
        self.two_view, self.reweight = bool(two_view), bool(reweight)

    def forward(self, view1: Tensor, view2: Tensor) -> Tensor:
        return macl(
            view1,
            view2,
            temperature=self.temperature,
            alpha=self.alpha,
            a0=self.a0,
            two_view=self.two_view,
            reweight=self.reweight,
        )


class ISogCLR(nn.Module):
    r"""iSogCLR (Qiu et al. 2023) with its per-sample state: one learned temperature and one
    moving average per training sample and side, kept as buffers (they are in ``state_dict``
    and survive a checkpoint).

    ``forward(query, key, index)`` returns :func:`isogclr`'s loss for the rows ``index`` (dataset
    indices, unique within the batch). In training mode it then updates, for those rows, the
    moving averages :math:`u` and the temperatures by the paper's projected momentum step::

        m_i   <- (1 - beta) m_i + beta * grad_tau_i
        tau_i <- clip(tau_i - eta * m_i, tau_min, tau_max)

    Args:
        num_samples: dataset size.
        tau_init, tau_min, tau_max: initial temperature and projection bounds.
        rho: DRO radius; gamma: moving-average rate.
        tau_lr: :math:`\eta`; tau_momentum: :math:`\beta`.

    Example:
        >>> import torch
        >>> loss_fn = ISogCLR(num_samples=100)
        >>> q, k = torch.randn(8, 16, requires_grad=True), torch.randn(8, 16)
        >>> loss = loss_fn(q, k, torch.arange(8))
        >>> loss.backward()
        >>> sorted(loss_fn.state_dict())[:2]
        ['log_u_key', 'log_u_query']
    """

    def __init__(
        self,
        num_samples: int,
        *,
        tau_init: float = 0.07,
        tau_min: float = 0.005,
        tau_max: float = 1.0,
        rho: float = 6.0,
        gamma: float = 0.8,
        tau_lr: float = 0.01,
        tau_momentum: float = 0.9,
        similarity: str = "cosine",
    ) -> None:
        super().__init__()
        if not isinstance(num_samples, int) or num_samples < 2:
            raise ValueError(f"num_samples must be an int >= 2, got {num_samples}")
        check_positive_scalar("tau_init", tau_init)
        check_positive_scalar("tau_min", tau_min)
        check_positive_scalar("tau_max", tau_max)
        if not tau_min <= tau_init <= tau_max:
            raise ValueError("need tau_min <= tau_init <= tau_max")
        check_finite_scalar("rho", rho)
        if not 0 < gamma <= 1:
            raise ValueError(f"gamma must lie in (0, 1], got {gamma}")
        if not 0 < tau_momentum <= 1:
            raise ValueError(f"tau_momentum must lie in (0, 1], got {tau_momentum}")
        _check_nonneg("tau_lr", tau_lr)
        self.tau_min, self.tau_max, self.rho, self.gamma = tau_min, tau_max, rho, gamma
        self.tau_lr, self.tau_momentum, self.similarity = tau_lr, tau_momentum, similarity
        for side in ("query", "key"):
            self.register_buffer(f"tau_{side}", torch.full((num_samples,), float(tau_init)))
            self.register_buffer(f"log_u_{side}", torch.full((num_samples,), -math.inf))
            self.register_buffer(f"tau_m_{side}", torch.zeros(num_samples))

    def forward(self, query: Tensor, key: Tensor, index: Tensor) -> Tensor:
        index = check_tensor("index", index)
        n = self.tau_query.shape[0]
        if index.dtype not in (torch.int32, torch.int64) or tuple(index.shape) != (query.shape[0],):
            raise ValueError(f"index must be an integer tensor of shape ({query.shape[0]},)")
        if bool((index < 0).any()) or bool((index >= n).any()):
            raise ValueError(f"index values must lie in [0, {n})")
        if torch.unique(index).numel() != index.numel():
            raise ValueError("index must not repeat a sample within a batch")
        index = index.to(self.tau_query.device)
        out = isogclr(
            query,
            key,
            self.tau_query[index],
            self.tau_key[index],
            self.log_u_query[index],
            self.log_u_key[index],
            gamma=self.gamma,
            rho=self.rho,
            similarity=self.similarity,
        )
        if self.training:
            with torch.no_grad():
                for side, log_u, grad in (
                    ("query", out.log_u_query, out.tau_grad_query),
                    ("key", out.log_u_key, out.tau_grad_key),
                ):
                    getattr(self, f"log_u_{side}")[index] = log_u.to(self.tau_query.dtype)
                    m = getattr(self, f"tau_m_{side}")
                    m[index] = (1 - self.tau_momentum) * m[index] + self.tau_momentum * grad.to(
                        m.dtype
                    )
                    tau = getattr(self, f"tau_{side}")
                    tau[index] = (tau[index] - self.tau_lr * m[index]).clamp(
                        self.tau_min, self.tau_max
                    )
        return out.loss

    def extra_repr(self) -> str:
        return (
            f"num_samples={self.tau_query.shape[0]}, rho={self.rho}, gamma={self.gamma}, "
            f"tau_lr={self.tau_lr}, tau_range=({self.tau_min}, {self.tau_max})"
        )
