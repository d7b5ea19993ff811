"""Ranking objectives over score lists and matrices (the RANK group).

They take *scores* (logits of a retriever or a reranker: ``similarity / temperature`` of a dual
encoder, or a cross-encoder's outputs), like ``torch.nn.MarginRankingLoss``; compute dual-encoder
scores with :func:`contrastkit.similarity.similarity_matrix`.

=================================================  ===========================================
objective                                          paper
=================================================  ===========================================
:func:`mann_whitney_loss`                          AUC-driven retrieval, MW loss (2025)
:func:`listwise_distillation`                      cross-encoder listwise distillation (2025)
:func:`cprd`                                       CPRD (Chen et al. 2024)
:func:`decoupled_softmax`, :func:`soft_topk_loss`  DEXML (Gupta et al. 2024)
:func:`listwise_rerank_loss`,                      SFT vs CL for reranking (2025)
:func:`pointwise_rerank_loss`
:func:`cosent_loss`, :func:`pearson_loss`          CoSENT (Su 2022); CoDiEmb (2025)
:func:`pair_score_distillation`                    Trans-Encoder (Liu et al. 2022)
=================================================  ===========================================
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from contrastkit._validation import check_choice, check_finite, check_positive_scalar, check_tensor
from contrastkit.functional import REDUCTIONS, _reduce
from contrastkit.objectives.infonce import masked_fill_value
from contrastkit.similarity import compute_dtype

__all__ = [
    "mann_whitney_loss",
    "listwise_distillation",
    "cprd",
    "decoupled_softmax",
    "soft_topk",
    "soft_topk_loss",
    "listwise_rerank_loss",
    "pointwise_rerank_loss",
    "cosent_loss",
    "pearson_loss",
    "pair_score_distillation",
    "MannWhitneyLoss",
    "ListwiseDistillation",
    "CPRDLoss",
    "DecoupledSoftmax",
    "SoftTopKLoss",
    "ListwiseRerankLoss",
    "PointwiseRerankLoss",
    "CoSENTLoss",
    "PearsonLoss",
    "PairScoreDistillation",
]


def _scores(name: str, x: object, ndim: int = 2) -> Tensor:
    x = check_tensor(name, x)
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if x.dim() != ndim or x.numel() == 0:
        shape = "(B, N)" if ndim == 2 else "(N,)"
        raise ValueError(f"{name} must be a non-empty {shape} tensor, got {tuple(x.shape)}")
    return check_finite(name, x).to(compute_dtype(x.dtype))


def _mask(name: str, m: object, shape: torch.Size) -> Tensor:
    m = check_tensor(name, m)
    if m.dtype != torch.bool:
        raise TypeError(f"{name} must be a bool tensor, got dtype {m.dtype}")
    if tuple(m.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(m.shape)}")
    return m


def _default_positives(positives: Tensor | None, scores: Tensor) -> Tensor:
    """``positives`` checked, or the diagonal (query ``i`` <-> candidate ``i``)."""
    if positives is None:
        return torch.eye(*scores.shape, dtype=torch.bool, device=scores.device)
    return _mask("positives", positives, scores.shape)


# ------------------------------------------------------------------------------------------
# Mann-Whitney / AUC loss
# ------------------------------------------------------------------------------------------
def mann_whitney_loss(
    scores: Tensor,
    positives: Tensor | None = None,
    *,
    exclude: Tensor | None = None,
    scale: float = 1.0,
    per_query: bool = False,
) -> Tensor:
    r"""The MW loss ("Optimizing what matters: AUC-driven learning for robust neural retrieval",
    2025): binary cross-entropy on positive-minus-negative score differences, a smooth surrogate
    of :math:`1 - \mathrm{AUC}` (the Mann-Whitney U statistic)::

        L = 1/(|P||N|) sum_{p in P} sum_{n in N} -log sigmoid( scale (s_p - s_n) )

    ``per_query=False`` (default) pairs every positive with every negative of the whole score
    matrix (global AUC, which also calibrates scores across queries, as the paper argues);
    ``per_query=True`` pairs them within each row and averages the rows. A sum over pairs.

    Args:
        scores: ``(B, N)`` query-candidate scores.
        positives: ``(B, N)`` bool relevance; defaults to the diagonal.
        exclude: ``(B, N)`` bool pairs to ignore.

    Example:
        >>> import torch
        >>> mann_whitney_loss(torch.randn(4, 4)).shape
        torch.Size([])
    """
    scores = _scores("scores", scores)
    positives = _default_positives(positives, scores)
    keep = (
        torch.ones_like(positives) if exclude is None else ~_mask("exclude", exclude, scores.shape)
    )
    check_positive_scalar("scale", scale)
    pos, neg = positives & keep, ~positives & keep
    if not per_query:
        if not bool(pos.any()) or not bool(neg.any()):
            raise ValueError("mann_whitney_loss needs at least one positive and one negative")
        diff = scores[pos][:, None] - scores[neg][None, :]
        return F.softplus(-scale * diff).mean()
    diff = scores[:, :, None] - scores[:, None, :]  # (B, p, n)
    pair = pos[:, :, None] & neg[:, None, :]
    terms = torch.where(pair, F.softplus(-scale * diff), torch.zeros_like(diff))
    count = pair.flatten(1).sum(1)
    valid = count > 0
    loss = terms.flatten(1).sum(1) / count.clamp_min(1)
    return _reduce([(loss, valid)], "mean", "query")


# ------------------------------------------------------------------------------------------
# Distillation from teacher score lists
# ------------------------------------------------------------------------------------------
def listwise_distillation(
    student_scores: Tensor,
    teacher_scores: Tensor,
    *,
    temperature: float = 1.0,
    teacher_temperature: float | None = None,
    mask: Tensor | None = None,
) -> Tensor:
    r"""Listwise distillation: KL divergence from the teacher's (cross-encoder's) softmax over a
    query's candidate list to the student's (dual encoder's)::

        L = 1/B sum_i KL( softmax(t_i / tau_t) || softmax(s_i / tau_s) )

    as in "Conventional contrastive learning often falls short" (2025), where it is combined
    with InfoNCE (``info_nce(q, d) + lambda * listwise_distillation(...)``), and in SgVA-CLIP's
    distillation from the frozen model. The teacher is not differentiated. ``mask`` ``(B, N)``
    marks the valid candidates of ragged lists.

    Example:
        >>> import torch
        >>> listwise_distillation(torch.randn(4, 8), torch.randn(4, 8)).shape
        torch.Size([])
    """
    s = _scores("student_scores", student_scores)
    t = _scores("teacher_scores", teacher_scores).detach()
    if t.shape != s.shape:
        raise ValueError(f"teacher_scores must have shape {tuple(s.shape)}, got {tuple(t.shape)}")
    check_positive_scalar("temperature", temperature)
    tt = temperature if teacher_temperature is None else teacher_temperature
    check_positive_scalar("teacher_temperature", tt)
    s, t = s / temperature, t / tt
    if mask is not None:
        mask = _mask("mask", mask, s.shape)
        if not bool(mask.any(dim=1).all()):
            raise ValueError("every row of mask needs at least one candidate")
        fill = masked_fill_value(s.dtype)
        s, t = s.masked_fill(~mask, fill), t.masked_fill(~mask, fill)
    log_ps, log_pt = torch.log_softmax(s, dim=1), torch.log_softmax(t, dim=1)
    kl = torch.exp(log_pt) * (log_pt - log_ps)
    if mask is not None:
        kl = kl.masked_fill(~mask, 0.0)
    return kl.sum(1).mean()


def cprd(
    student_scores: Tensor,
    teacher_scores: Tensor,
    *,
    num_hard: int,
    positives: Tensor | None = None,
    temperature: float = 0.05,
) -> Tensor:
    r"""Contrastive partial ranking distillation (CPRD, Chen et al. 2024): the dual encoder
    mimics the cross-encoder's *order among its hard negatives only*, by contrastive learning.

    For each query, the ``K = num_hard`` negatives the student scores highest are sorted by the
    teacher's scores, :math:`n_{(1)} \succ \dots \succ n_{(K)}`; each is contrasted against the
    ones the teacher ranks below it::

        L_i = 1/(K-1) sum_{r=1}^{K-1} -log( e^{s_{i,n(r)}/tau} / sum_{r' >= r} e^{s_{i,n(r')}/tau} )

    (easy negatives and their order carry no loss). Selection and ordering are not
    differentiated; the teacher is not differentiated.

    Args:
        student_scores, teacher_scores: ``(B, N)`` scores of the same candidates (e.g. in-batch
            texts for each image); student scores are similarities (``temperature`` divides them).
        positives: ``(B, N)`` bool, never used as negatives (default: the diagonal).
        num_hard: ``K >= 2``.

    Example:
        >>> import torch
        >>> cprd(torch.randn(4, 10), torch.randn(4, 10), num_hard=4).shape
        torch.Size([])
    """
    s = _scores("student_scores", student_scores)
    t = _scores("teacher_scores", teacher_scores).detach()
    if t.shape != s.shape:
        raise ValueError(f"teacher_scores must have shape {tuple(s.shape)}, got {tuple(t.shape)}")
    check_positive_scalar("temperature", temperature)
    positives = _default_positives(positives, s)
    n_neg = int((~positives).sum(1).min())
    if not isinstance(num_hard, int) or isinstance(num_hard, bool) or not 2 <= num_hard <= n_neg:
        raise ValueError(
            f"num_hard must be an int in [2, {n_neg}] (negatives per row), got {num_hard}"
        )
    with torch.no_grad():
        hard = s.masked_fill(positives, masked_fill_value(s.dtype)).topk(num_hard, dim=1).indices
        order = t.gather(1, hard).argsort(dim=1, descending=True)
        ranked = hard.gather(1, order)  # teacher order, best first
    logits = s.gather(1, ranked) / temperature  # (B, K)
    # suffix log-sum-exp: log sum_{r' >= r} e^{l_r'}
    suffix = torch.logcumsumexp(logits.flip(1), dim=1).flip(1)
    return (suffix - logits)[:, :-1].mean()


# ------------------------------------------------------------------------------------------
# DEXML: decoupled softmax and soft top-k
# ------------------------------------------------------------------------------------------
def decoupled_softmax(
    scores: Tensor,
    positives: Tensor,
    *,
    reduction: str = "mean",
) -> Tensor:
    r"""Decoupled softmax loss for multi-label retrieval (DEXML, Gupta et al. 2024): each
    positive label is contrasted with the negatives only, the row's other positives being
    removed from its denominator::

        L_i = -1/|P_i| sum_{p in P_i} log( e^{s_ip} / (e^{s_ip} + sum_{n not in P_i} e^{s_in}) )

    The negatives' sum is a row log-sum-exp (tiles); rows without a positive are left out.

    Example:
        >>> import torch
        >>> pos = torch.zeros(3, 6, dtype=torch.bool); pos[:, :2] = True
        >>> decoupled_softmax(torch.randn(3, 6), pos).shape
        torch.Size([])
    """
    check_choice("reduction", reduction, REDUCTIONS)
    s = _scores("scores", scores)
    pos = _mask("positives", positives, s.shape)
    log_neg = torch.logsumexp(s.masked_fill(pos, masked_fill_value(s.dtype)), dim=1, keepdim=True)
    terms = torch.where(pos, torch.logaddexp(s, log_neg) - s, torch.zeros_like(s))
    count = pos.sum(1)
    valid = (count > 0) & (~pos).any(1)
    loss = torch.where(valid, terms.sum(1) / count.clamp_min(1), torch.zeros_like(terms[:, 0]))
    return _reduce([(loss, valid)], reduction, "query")


def _soft_topk_logits(x: Tensor, k: int | Tensor, alpha: float, n_iter: int) -> Tensor:
    """``alpha (x + t)`` with ``t`` solving ``sum_j sigmoid(alpha (x_j + t)) = k`` (see
    :func:`soft_topk`), differentiable through the implicit-function gradient of ``t``."""
    check_positive_scalar("alpha", alpha)
    if not isinstance(n_iter, int) or n_iter < 1:
        raise ValueError(f"n_iter must be a positive int, got {n_iter}")
    n = x.shape[1]
    if isinstance(k, Tensor):
        if tuple(k.shape) != (x.shape[0],):
            raise ValueError(f"k must be an int or a ({x.shape[0]},) tensor")
        kk = k.to(device=x.device, dtype=x.dtype)[:, None]
    else:
        kk = torch.full((x.shape[0], 1), float(k), dtype=x.dtype, device=x.device)
    if bool((kk <= 0).any()) or bool((kk >= n).any()):
        raise ValueError(f"k must satisfy 0 < k < {n} (the number of candidates)")
    with torch.no_grad():
        lo = -x.max(dim=1, keepdim=True).values - 10.0 / alpha
        hi = -x.min(dim=1, keepdim=True).values + 10.0 / alpha
        for _ in range(n_iter):
            mid = (lo + hi) / 2
            below = torch.sigmoid(alpha * (x + mid)).sum(1, keepdim=True) < kk
            lo = torch.where(below, mid, lo)
            hi = torch.where(below, hi, mid)
        t = (lo + hi) / 2
        sig = torch.sigmoid(alpha * (x + t))
        v_sum = (alpha * sig * (1 - sig)).sum(1, keepdim=True).clamp_min(torch.finfo(x.dtype).tiny)
    # a term worth 0 whose gradient is the implicit one: dt/dx_j = -v_j / sum_l v_l
    sig_sum = torch.sigmoid(alpha * (x + t)).sum(1, keepdim=True)
    t = t - (sig_sum - sig_sum.detach()) / v_sum
    return alpha * (x + t)


def soft_topk(scores: Tensor, k: int | Tensor, *, alpha: float = 1.0, n_iter: int = 64) -> Tensor:
    r"""A differentiable top-k indicator (the soft top-k operator DEXML uses):
    :math:`p_j = \sigma(\alpha (x_j + t))` with :math:`t` solving :math:`\sum_j p_j = k`.

    :math:`t` is found by bisection (not differentiated); the gradient is the implicit one,
    :math:`\partial p_i / \partial x_j = v_i (\delta_{ij} - v_j / \sum_l v_l)`,
    :math:`v = \alpha\sigma'(\alpha(x+t))`, carried by a zero-valued term.

    Args:
        scores: ``(B, N)``.
        k: ``0 < k < N``, an int or a ``(B,)`` tensor (e.g. each row's number of positives).
        alpha: sharpness; larger is closer to the hard top-k.

    Example:
        >>> import torch
        >>> p = soft_topk(torch.randn(2, 6), 2, alpha=5.0)
        >>> torch.allclose(p.sum(1), torch.full((2,), 2.0), atol=1e-4)
        True
    """
    return torch.sigmoid(_soft_topk_logits(_scores("scores", scores), k, alpha, n_iter))


def soft_topk_loss(
    scores: Tensor,
    positives: Tensor,
    *,
    k: int | None = None,
    alpha: float = 1.0,
    n_iter: int = 64,
) -> Tensor:
    r"""DEXML's soft top-k loss: maximise the soft top-k membership of every positive label::

        L = 1/B sum_i -1/|P_i| sum_{p in P_i} log p_ip,    p_i = soft_topk(s_i, k)

    ``k=None`` uses each row's number of positives (``k = |P_i|``, DEXML's ``num_pos`` option).

    Example:
        >>> import torch
        >>> pos = torch.zeros(3, 6, dtype=torch.bool); pos[:, :2] = True
        >>> soft_topk_loss(torch.randn(3, 6), pos, k=3, alpha=2.0).shape
        torch.Size([])
    """
    s = _scores("scores", scores)
    pos = _mask("positives", positives, s.shape)
    count = pos.sum(1)
    if bool((count == 0).any()):
        raise ValueError("every row needs at least one positive")
    log_p = F.logsigmoid(_soft_topk_logits(s, count if k is None else k, alpha, n_iter))
    return -(torch.where(pos, log_p, torch.zeros_like(log_p)).sum(1) / count).mean()


# ------------------------------------------------------------------------------------------
# Reranker objectives
# ------------------------------------------------------------------------------------------
def listwise_rerank_loss(
    scores: Tensor, positives: Tensor | None = None, *, temperature: float = 1.0
) -> Tensor:
    r"""Listwise contrastive reranker objective: softmax cross-entropy over each query's
    candidate list (the "CL" objective of "Supervised fine-tuning or contrastive learning?
    Towards better multimodal LLM reranking", 2025)::

        L_i = -1/|P_i| sum_{p in P_i} log( e^{s_ip/tau} / sum_j e^{s_ij/tau} )

    ``positives`` ``(B, L)`` bool defaults to the first candidate of every list.

    Example:
        >>> import torch
        >>> listwise_rerank_loss(torch.randn(4, 8)).shape
        torch.Size([])
    """
    s = _scores("scores", scores)
    check_positive_scalar("temperature", temperature)
    if positives is None:
        positives = torch.zeros_like(s, dtype=torch.bool)
        positives[:, 0] = True
    pos = _mask("positives", positives, s.shape)
    if bool((pos.sum(1) == 0).any()):
        raise ValueError("every list needs at least one positive")
    logp = torch.log_softmax(s / temperature, dim=1)
    return -(torch.where(pos, logp, torch.zeros_like(logp)).sum(1) / pos.sum(1)).mean()


def pointwise_rerank_loss(
    yes_logits: Tensor, labels: Tensor, no_logits: Tensor | None = None
) -> Tensor:
    r"""Pointwise reranker objective: binary cross-entropy of the relevance probability (the
    "SFT" objective of the same paper, where an LLM predicts a "yes" or "no" token)::

        p = softmax([z_yes, z_no])_yes = sigmoid(z_yes - z_no)
        L = mean -[ y log p + (1 - y) log(1 - p) ]

    Without ``no_logits``, :math:`p = \sigma(z_{yes})` (a single relevance logit).
    ``labels`` are 0/1 (or soft) relevance targets of the same shape.

    Example:
        >>> import torch
        >>> pointwise_rerank_loss(torch.randn(6), torch.tensor([1., 0, 0, 1, 0, 0]),
        ...                       no_logits=torch.randn(6)).shape
        torch.Size([])
    """
    yes = check_finite("yes_logits", check_tensor("yes_logits", yes_logits))
    if not yes.is_floating_point() or yes.numel() == 0:
        raise ValueError("yes_logits must be a non-empty float tensor")
    z = yes.to(compute_dtype(yes.dtype))
    if no_logits is not None:
        no = check_finite("no_logits", check_tensor("no_logits", no_logits))
        if no.shape != yes.shape:
            raise ValueError(f"no_logits must have shape {tuple(yes.shape)}, got {tuple(no.shape)}")
        z = z - no.to(z.dtype)
    labels = check_finite("labels", check_tensor("labels", labels))
    if labels.shape != yes.shape:
        raise ValueError(f"labels must have shape {tuple(yes.shape)}, got {tuple(labels.shape)}")
    y = labels.to(z.dtype)
    if bool((y < 0).any()) or bool((y > 1).any()):
        raise ValueError("labels must lie in [0, 1]")
    return F.binary_cross_entropy_with_logits(z, y)


# ------------------------------------------------------------------------------------------
# Order-aware similarity losses
# ------------------------------------------------------------------------------------------
def _paired(scores: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    s = _scores("scores", scores, ndim=1)
    y = check_finite("targets", check_tensor("targets", targets))
    if tuple(y.shape) != tuple(s.shape):
        raise ValueError(f"targets must have shape {tuple(s.shape)}, got {tuple(y.shape)}")
    return s, y.to(s.dtype)


def cosent_loss(scores: Tensor, targets: Tensor, *, scale: float = 20.0) -> Tensor:
    r"""CoSENT (Su 2022), the order-aware STS loss CoDiEmb uses: every pair of sentence pairs
    whose gold similarities are ordered, :math:`y_i > y_j`, should have its predicted scores
    (cosines) in the same order::

        L = log( 1 + sum_{(i, j): y_i > y_j} exp( lambda (s_j - s_i) ) )

    Example:
        >>> import torch
        >>> cosent_loss(torch.tensor([0.9, 0.1, 0.5]), torch.tensor([5.0, 1.0, 3.0]))
        tensor(0.0007)
    """
    s, y = _paired(scores, targets)
    check_positive_scalar("scale", scale)
    ordered = y[:, None] > y[None, :]
    diff = scale * (s[None, :] - s[:, None])  # (i, j): s_j - s_i
    terms = diff.masked_fill(~ordered, masked_fill_value(s.dtype)).flatten()
    zero = torch.zeros(1, dtype=s.dtype, device=s.device)
    return torch.logsumexp(torch.cat([zero, terms]), dim=0)


def pearson_loss(scores: Tensor, targets: Tensor) -> Tensor:
    r"""One minus the Pearson correlation of predicted scores and gold similarities,
    :math:`1 - r(s, y)`, the correlation objective CoDiEmb optimises for STS beside CoSENT.

    Example:
        >>> import torch
        >>> float(pearson_loss(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([2.0, 4.0, 6.0])))
        0.0
    """
    s, y = _paired(scores, targets)
    if s.shape[0] < 2:
        raise ValueError("pearson_loss needs at least 2 pairs")
    sc, yc = s - s.mean(), y - y.mean()
    denom = (sc.square().sum() * yc.square().sum()).sqrt().clamp_min(torch.finfo(s.dtype).tiny)
    return 1.0 - (sc * yc).sum() / denom


def pair_score_distillation(
    student_scores: Tensor, teacher_scores: Tensor, *, loss: str = "mse"
) -> Tensor:
    r"""Pair-score distillation between bi- and cross-encoders (Trans-Encoder, Liu et al.
    2022): one formulation's scores of sentence pairs are the other's pseudo-labels.

    - ``loss="mse"`` (bi-encoder student): :math:`\frac1N\sum (s_i - t_i)^2`, with :math:`s`
      the bi-encoder's cosine and :math:`t` the cross-encoder's score in [0, 1].
    - ``loss="bce"`` (cross-encoder student): binary cross-entropy of the student's logit
      against the teacher's score :math:`t \in [0, 1]`.

    ``teacher_scores`` ``(T, N)`` stacks several teachers whose mean is the label (the paper's
    mutual distillation). The teacher is not differentiated.

    Example:
        >>> import torch
        >>> pair_score_distillation(torch.tensor([0.2, 0.9]), torch.tensor([0.0, 1.0]))
        tensor(0.0250)
    """
    check_choice("loss", loss, ("mse", "bce"))
    s = _scores("student_scores", student_scores, ndim=1)
    t = check_finite("teacher_scores", check_tensor("teacher_scores", teacher_scores))
    if not t.is_floating_point():
        raise TypeError("teacher_scores must be a floating-point tensor")
    if t.dim() == 2:
        t = t.mean(0)
    if tuple(t.shape) != tuple(s.shape):
        raise ValueError(
            f"teacher_scores must be ({s.shape[0]},) or (T, {s.shape[0]}), got {tuple(t.shape)}"
        )
    t = t.detach().to(s.dtype)
    if loss == "mse":
        return (s - t).square().mean()
    if bool((t < 0).any()) or bool((t > 1).any()):
        raise ValueError("teacher scores must lie in [0, 1] for loss='bce' (clip cosines first)")
    return F.binary_cross_entropy_with_logits(s, t)


# ------------------------------------------------------------------------------------------
# Modules
# ------------------------------------------------------------------------------------------
class MannWhitneyLoss(nn.Module):
    r"""MW (AUC) loss on scores; see :func:`mann_whitney_loss`.

    Example:
        >>> import torch
        >>> MannWhitneyLoss(scale=5.0)(torch.randn(4, 4)).shape
        torch.Size([])
    """

    def __init__(self, scale: float = 1.0, per_query: bool = False) -> None:
        super().__init__()
        check_positive_scalar("scale", scale)
        self.scale, self.per_query = float(scale), bool(per_query)

    def forward(self, scores: Tensor, positives: Tensor | None = None) -> Tensor:
        return mann_whitney_loss(scores, positives, scale=self.scale, per_query=self.per_query)


class ListwiseDistillation(nn.Module):
    r"""KL listwise distillation; see :func:`listwise_distillation`.

    Example:
        >>> import torch
        >>> ListwiseDistillation()(torch.randn(2, 5), torch.randn(2, 5)).shape
        torch.Size([])
    """

    def __init__(self, temperature: float = 1.0, teacher_temperature: float | None = None) -> None:
        super().__init__()
        self.temperature, self.teacher_temperature = temperature, teacher_temperature

    def forward(
        self, student_scores: Tensor, teacher_scores: Tensor, mask: Tensor | None = None
    ) -> Tensor:
        return listwise_distillation(
            student_scores,
            teacher_scores,
            temperature=self.temperature,
            teacher_temperature=self.teacher_temperature,
            mask=mask,
        )


class CPRDLoss(nn.Module):
    r"""Contrastive partial ranking distillation; see :func:`cprd`.

    Example:
        >>> import torch
        >>> CPRDLoss(num_hard=3)(torch.randn(4, 8), torch.randn(4, 8)).shape
        torch.Size([])
    """

    def __init__(self, num_hard: int, temperature: float = 0.05) -> None:
        super().__init__()
        self.num_hard, self.temperature = num_hard, temperature

    def forward(
        self, student_scores: Tensor, teacher_scores: Tensor, positives: Tensor | None = None
    ) -> Tensor:
        return cprd(
            student_scores,
            teacher_scores,
            num_hard=self.num_hard,
            positives=positives,
            temperature=self.temperature,
        )


class DecoupledSoftmax(nn.Module):
    r"""DEXML decoupled softmax; see :func:`decoupled_softmax`.

    Example:
        >>> import torch
        >>> DecoupledSoftmax()(torch.randn(2, 4), torch.eye(2, 4, dtype=torch.bool)).shape
        torch.Size([])
    """

    def forward(self, scores: Tensor, positives: Tensor) -> Tensor:
        return decoupled_softmax(scores, positives)


class SoftTopKLoss(nn.Module):
    r"""DEXML soft top-k loss; see :func:`soft_topk_loss`.

    Example:
        >>> import torch
        >>> SoftTopKLoss(k=2)(torch.randn(2, 5), torch.eye(2, 5, dtype=torch.bool)).shape
        torch.Size([])
    """

    def __init__(self, k: int | None = None, alpha: float = 1.0, n_iter: int = 64) -> None:
        super().__init__()
        self.k, self.alpha, self.n_iter = k, alpha, n_iter

    def forward(self, scores: Tensor, positives: Tensor) -> Tensor:
        return soft_topk_loss(scores, positives, k=self.k, alpha=self.alpha, n_iter=self.n_iter)


class ListwiseRerankLoss(nn.Module):
    r"""Listwise contrastive reranker loss; see :func:`listwise_rerank_loss`.

    Example:
        >>> import torch
        >>> ListwiseRerankLoss()(torch.randn(3, 5)).shape
        torch.Size([])
    """

    def __init__(self, temperature: float = 1.0) -> None:
        super().__init__()
        self.temperature = temperature

    def forward(self, scores: Tensor, positives: Tensor | None = None) -> Tensor:
        return listwise_rerank_loss(scores, positives, temperature=self.temperature)


class PointwiseRerankLoss(nn.Module):
    r"""Pointwise yes/no BCE reranker loss; see :func:`pointwise_rerank_loss`.

    Example:
        >>> import torch
        >>> PointwiseRerankLoss()(torch.randn(4), torch.tensor([1.0, 0, 0, 1])).shape
        torch.Size([])
    """

    def forward(
        self, yes_logits: Tensor, labels: Tensor, no_logits: Tensor | None = None
    ) -> Tensor:
        return pointwise_rerank_loss(yes_logits, labels, no_logits)


class CoSENTLoss(nn.Module):
    r"""CoSENT order-aware loss; see :func:`cosent_loss`.

    Example:
        >>> import torch
        >>> CoSENTLoss()(torch.tensor([0.2, 0.8]), torch.tensor([0.0, 1.0])).shape
        torch.Size([])
    """

    def __init__(self, scale: float = 20.0) -> None:
        super().__init__()
        check_positive_scalar("scale", scale)
        self.scale = float(scale)

    def forward(self, scores: Tensor, targets: Tensor) -> Tensor:
        return cosent_loss(scores, targets, scale=self.scale)


class PearsonLoss(nn.Module):
    r"""``1 - Pearson r``; see :func:`pearson_loss`.

    Example:
        >>> import torch
        >>> PearsonLoss()(torch.randn(5), torch.randn(5)).shape
        torch.Size([])
    """

    def forward(self, scores: Tensor, targets: Tensor) -> Tensor:
        return pearson_loss(scores, targets)


class PairScoreDistillation(nn.Module):
    r"""Bi-/cross-encoder pair-score distillation; see :func:`pair_score_distillation`.

    Example:
        >>> import torch
        >>> PairScoreDistillation("bce")(torch.randn(3), torch.rand(2, 3)).shape
        torch.Size([])
    """

    def __init__(self, loss: str = "mse") -> None:
        super().__init__()
        self.loss = check_choice("loss", loss, ("mse", "bce"))

    def forward(self, student_scores: Tensor, teacher_scores: Tensor) -> Tensor:
        return pair_score_distillation(student_scores, teacher_scores, loss=self.loss)
