"""Classification-side losses that the contrastive papers study beside their contrastive terms.

- :func:`harmonic_loss`: distance-based (harmonic) logits (Baek et al. 2025);
- :func:`squentropy`: cross-entropy + mean square of the wrong-class logits (Hui et al. 2023);
- :func:`number_token_loss`: L_p and Wasserstein-1 losses on number tokens (Zausinger et al. 2025);
- :func:`comp_sum_loss` (with :func:`generalized_cross_entropy`, :func:`mae_loss`) and
  :func:`smooth_adversarial_comp_sum_loss` (Mao, Mohri & Zhong 2023);
- :func:`balanced_softmax_loss` (Ren et al. 2020) and :func:`balanced_mse_loss` (Ren et al.
  2022), as in CircuitGCL;
- :func:`class_independent_bce` (UniSeg, Shi et al. 2022 style multi-dataset training);
- :func:`multilabel_bce` (CatLIP, Mehta et al. 2024; TagAlign, Liu et al. 2024);
- :func:`information_maximization_loss` (CLIM, Li et al. 2023);
- :func:`soft_cross_entropy`: cross-entropy with soft (e.g. mixed) targets.

All take logits (or predictions) and return a scalar (``reduction="mean"``) in float32, or
float64 for float64 inputs; every softmax is a log-softmax.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from contrastkit._validation import (
    check_choice,
    check_embeddings,
    check_finite,
    check_finite_scalar,
    check_positive_scalar,
    check_tensor,
)
from contrastkit.objectives.soft import soft_cross_entropy
from contrastkit.similarity import compute_dtype

__all__ = [
    "soft_cross_entropy",
    "harmonic_logits",
    "harmonic_loss",
    "squentropy",
    "number_token_loss",
    "comp_sum_loss",
    "generalized_cross_entropy",
    "mae_loss",
    "smooth_adversarial_comp_sum_loss",
    "balanced_softmax_loss",
    "balanced_mse_loss",
    "class_independent_bce",
    "multilabel_bce",
    "information_maximization_loss",
    "HarmonicLoss",
    "Squentropy",
    "NumberTokenLoss",
    "CompSumLoss",
    "SmoothAdversarialCompSumLoss",
    "BalancedSoftmaxLoss",
    "BalancedMSELoss",
    "ClassIndependentBCELoss",
    "MultiLabelBCELoss",
    "InformationMaximizationLoss",
]

REDUCTIONS = ("mean", "sum", "none")
NUMBER_LOSSES = ("mse", "lp", "wasserstein")


# -- checks -----------------------------------------------------------------------------------
def _logits(logits: object, name: str = "logits") -> Tensor:
    logits = check_embeddings(name, logits)
    return logits.to(compute_dtype(logits.dtype))


def _labels(labels: object, logits: Tensor) -> Tensor:
    labels = check_tensor("labels", labels)
    b, c = logits.shape
    if labels.is_floating_point() or labels.shape != (b,):
        raise ValueError(
            f"labels must be an integer tensor of shape ({b},), got dtype {labels.dtype} and "
            f"shape {tuple(labels.shape)}"
        )
    if bool((labels < 0).any()) or bool((labels >= c).any()):
        raise ValueError(f"labels must lie in [0, {c})")
    return labels.to(logits.device)


def _reduce(x: Tensor, reduction: str) -> Tensor:
    check_choice("reduction", reduction, REDUCTIONS)
    if reduction == "mean":
        return x.mean()
    if reduction == "sum":
        return x.sum()
    return x


def _pick(x: Tensor, labels: Tensor) -> Tensor:
    return x.gather(1, labels[:, None]).squeeze(1)


# -- harmonic loss ----------------------------------------------------------------------------
def harmonic_logits(x: Tensor, centers: Tensor, *, exponent: float = 1.0) -> Tensor:
    r"""Harmonic logits ``-n log ||x - w_c||_2`` (Baek, Liu, Tegmark et al. 2025): their softmax is
    the harmonic max ``p_c = d_c^{-n} / sum_k d_k^{-n}``.

    Example:
        >>> import torch
        >>> harmonic_logits(torch.randn(4, 8), torch.randn(3, 8), exponent=2.0).shape
        torch.Size([4, 3])
    """
    x = check_embeddings("x", x)
    centers = check_embeddings("centers", centers)
    if x.shape[1] != centers.shape[1]:
        raise ValueError(f"x has {x.shape[1]} features but centers have {centers.shape[1]}")
    check_positive_scalar("exponent", exponent)
    dtype = compute_dtype(torch.promote_types(x.dtype, centers.dtype))
    a, w = x.to(dtype), centers.to(dtype)
    sq = ((a * a).sum(1, keepdim=True) + (w * w).sum(1)[None, :] - 2 * a @ w.T).clamp_min(
        torch.finfo(dtype).tiny
    )
    return -0.5 * exponent * torch.log(sq)


def harmonic_loss(
    x: Tensor, centers: Tensor, labels: Tensor, *, exponent: float = 1.0, reduction: str = "mean"
) -> Tensor:
    r"""Harmonic loss (Baek, Liu, Tegmark et al. 2025, "Harmonic Loss Trains Interpretable AI
    Models"): cross-entropy of the harmonic max over class centres ``w_c``::

        d_c = || x - w_c ||_2,   p_c = d_c^{-n} / sum_k d_k^{-n},   L = -log p_y

    ``n`` is the harmonic exponent (the paper uses about ``sqrt(D)``).  A centre the input sits on
    has zero distance: the squared distance is floored at the smallest positive float.

    Example:
        >>> import torch
        >>> harmonic_loss(torch.randn(4, 8), torch.randn(3, 8), torch.tensor([0, 1, 2, 0])).shape
        torch.Size([])
    """
    logits = harmonic_logits(x, centers, exponent=exponent)
    labels = _labels(labels, logits)
    return _reduce(-_pick(torch.log_softmax(logits, dim=1), labels), reduction)


# -- squentropy -------------------------------------------------------------------------------
def squentropy(logits: Tensor, labels: Tensor, *, reduction: str = "mean") -> Tensor:
    r"""Squentropy (Hui, Belkin & Wright 2023, "Cut your Losses with Squentropy")::

        L = -log softmax(z)_y + 1/(C - 1) sum_{c != y} z_c^2

    Example:
        >>> import torch
        >>> squentropy(torch.randn(4, 5), torch.tensor([0, 1, 2, 3])).shape
        torch.Size([])
    """
    z = _logits(logits)
    labels = _labels(labels, z)
    c = z.shape[1]
    if c < 2:
        raise ValueError("squentropy needs at least 2 classes")
    ce = -_pick(torch.log_softmax(z, dim=1), labels)
    sq = ((z * z).sum(1) - _pick(z, labels) ** 2) / (c - 1)
    return _reduce(ce + sq, reduction)


# -- number token loss ------------------------------------------------------------------------
def number_token_loss(
    logits: Tensor,
    labels: Tensor,
    number_token_ids: Tensor,
    number_values: Tensor,
    *,
    kind: str = "mse",
    p: float = 2.0,
    ignore_index: int = -100,
) -> Tensor:
    r"""Number token loss (Zausinger, Pennig, Kozina et al. 2025, "Regress, Don't Guess").

    At positions whose label is a number token, with ``q`` the softmax over the number tokens'
    logits only and ``v`` their numeric values::

        y^ = sum_i q_i v_i
        mse:          L = (y - y^)^2
        lp:           L = |y - y^|^p
        wasserstein:  L = W_1(q, delta_y) = sum_k |Q(k) - 1[v_(k) >= y]| (v_(k+1) - v_(k))

    where ``Q`` is the cumulative distribution of ``q`` over the values sorted increasingly
    (for the digits 0-9 the spacing is 1).  The loss is the mean over number positions (0 when
    there is none) and is meant to be added to the cross-entropy.

    Args:
        logits: ``(..., V)`` next-token logits.
        labels: ``(...)`` target ids.
        number_token_ids: ``(K,)`` vocabulary ids of the number tokens.
        number_values: ``(K,)`` their values (distinct).

    Example:
        >>> import torch
        >>> logits, labels = torch.randn(2, 5, 20), torch.randint(0, 20, (2, 5))
        >>> ids, vals = torch.arange(10, 20), torch.arange(10.0)
        >>> number_token_loss(logits, labels, ids, vals, kind="wasserstein").shape
        torch.Size([])
    """
    logits = check_finite("logits", check_tensor("logits", logits))
    if not logits.is_floating_point() or logits.dim() < 2:
        raise ValueError("logits must be a float tensor of shape (..., vocab)")
    labels = check_tensor("labels", labels)
    if labels.shape != logits.shape[:-1] or labels.is_floating_point():
        raise ValueError(f"labels must be an integer tensor of shape {tuple(logits.shape[:-1])}")
    ids = check_tensor("number_token_ids", number_token_ids)
    vals = check_tensor("number_values", number_values)
    if ids.dim() != 1 or ids.is_floating_point() or vals.shape != ids.shape:
        raise ValueError("number_token_ids (int) and number_values must be 1-D of equal length")
    if ids.unique().numel() != ids.numel() or vals.unique().numel() != vals.numel():
        raise ValueError("number_token_ids and number_values must be distinct")
    check_choice("kind", kind, NUMBER_LOSSES)
    check_positive_scalar("p", p)
    dtype = compute_dtype(logits.dtype)
    ids, vals = ids.to(logits.device), vals.to(device=logits.device, dtype=dtype)
    is_num = (labels[..., None] == ids).any(-1) & (labels != ignore_index)
    if not bool(is_num.any()):
        return logits.sum() * 0.0
    q = torch.softmax(logits[is_num][:, ids].to(dtype), dim=-1)  # (P, K)
    slot = (labels[is_num][:, None] == ids[None, :]).to(torch.long).argmax(1)
    y = vals[slot]
    if kind == "wasserstein":
        order = vals.argsort()
        sv = vals[order]
        cdf = q[:, order].cumsum(1)[:, :-1]
        target_cdf = (sv[None, :-1] >= y[:, None]).to(dtype)
        per = ((cdf - target_cdf).abs() * (sv[1:] - sv[:-1])[None, :]).sum(1)
    else:
        err = y - (q * vals).sum(1)
        if kind == "mse":
            per = err * err
        else:
            tiny = torch.finfo(dtype).tiny
            per = (err * err).clamp_min(tiny) ** (p / 2.0)
    return per.mean()


# -- comp-sum family --------------------------------------------------------------------------
def comp_sum_loss(
    logits: Tensor, labels: Tensor, *, tau: float = 1.0, reduction: str = "mean"
) -> Tensor:
    r"""Comp-sum losses (Mao, Mohri & Zhong 2023, "Cross-Entropy Loss Functions: Theoretical
    Analysis and Applications")::

        L = Phi_tau( sum_{y' != y} exp(h_y' - h_y) ),
        Phi_tau(u) = log(1 + u)                              (tau = 1: cross-entropy)
                   = ((1 + u)^(1 - tau) - 1) / (1 - tau)     (tau != 1)

    Since ``1 + u = 1 / p_y`` (softmax), ``L = (1 - p_y^(tau - 1)) / (tau - 1)``: ``tau = 0`` is
    the sum-exponential loss, ``tau in (1, 2)`` generalized cross-entropy with ``q = tau - 1``,
    ``tau = 2`` the mean absolute error ``1 - p_y``.

    Example:
        >>> import torch
        >>> z, y = torch.randn(4, 3), torch.tensor([0, 1, 2, 0])
        >>> ce = torch.nn.functional.cross_entropy(z, y)
        >>> bool(torch.isclose(comp_sum_loss(z, y, tau=1.0), ce))
        True
    """
    z = _logits(logits)
    labels = _labels(labels, z)
    check_finite_scalar("tau", tau)
    if tau < 0:
        raise ValueError(f"tau must be >= 0, got {tau}")
    log_p = _pick(torch.log_softmax(z, dim=1), labels)
    if tau == 1.0:
        per = -log_p
    else:
        per = -torch.expm1((tau - 1.0) * log_p) / (tau - 1.0)
    return _reduce(per, reduction)


def generalized_cross_entropy(
    logits: Tensor, labels: Tensor, *, q: float = 0.7, reduction: str = "mean"
) -> Tensor:
    r"""Generalized cross-entropy ``(1 - p_y^q) / q`` (Zhang & Sabuncu 2018), the comp-sum loss
    with ``tau = 1 + q``; see :func:`comp_sum_loss`.

    Example:
        >>> import torch
        >>> generalized_cross_entropy(torch.randn(4, 3), torch.tensor([0, 1, 2, 0])).shape
        torch.Size([])
    """
    check_positive_scalar("q", q)
    return comp_sum_loss(logits, labels, tau=1.0 + q, reduction=reduction)


def mae_loss(logits: Tensor, labels: Tensor, *, reduction: str = "mean") -> Tensor:
    r"""Mean absolute error ``1 - p_y``: the comp-sum loss with ``tau = 2``.

    Example:
        >>> import torch
        >>> mae_loss(torch.randn(4, 3), torch.tensor([0, 1, 2, 0])).shape
        torch.Size([])
    """
    return comp_sum_loss(logits, labels, tau=2.0, reduction=reduction)


def smooth_adversarial_comp_sum_loss(
    logits: Tensor,
    adversarial_logits: Tensor,
    labels: Tensor,
    *,
    tau: float = 1.0,
    nu: float = 1.0,
    reduction: str = "mean",
) -> Tensor:
    r"""Smooth adversarial comp-sum loss (Mao, Mohri & Zhong 2023)::

        L = Phi_tau( sum_{y' != y} exp(h(x, y') - h(x, y)) )
            + nu sup_{||x' - x|| <= gamma} || h(x') - h(x) ||_2

    The supremum is the caller's attack (e.g. PGD on the same objective); pass the scores
    ``h(x')`` it found as ``adversarial_logits``.

    Example:
        >>> import torch
        >>> z = torch.randn(4, 3)
        >>> smooth_adversarial_comp_sum_loss(z, z + 0.1, torch.tensor([0, 1, 2, 0])).shape
        torch.Size([])
    """
    z = _logits(logits)
    za = _logits(adversarial_logits, "adversarial_logits")
    if za.shape != z.shape:
        raise ValueError(f"adversarial_logits must have shape {tuple(z.shape)}")
    check_finite_scalar("nu", nu)
    base = comp_sum_loss(z, labels, tau=tau, reduction="none")
    diff = za - z
    sq = (diff * diff).sum(1)
    norm = torch.where(
        sq > 0, sq.clamp_min(torch.finfo(sq.dtype).tiny).sqrt(), torch.zeros_like(sq)
    )
    return _reduce(base + nu * norm, reduction)


# -- balanced losses --------------------------------------------------------------------------
def balanced_softmax_loss(
    logits: Tensor, labels: Tensor, class_counts: Tensor, *, reduction: str = "mean"
) -> Tensor:
    r"""Balanced softmax cross-entropy (Ren et al. 2020; CircuitGCL's BSCE)::

        L = -log( n_y e^{z_y} / sum_c n_c e^{z_c} ) = CE(z + log n, y)

    with ``n_c`` the training count of class ``c``.

    Example:
        >>> import torch
        >>> balanced_softmax_loss(torch.randn(4, 3), torch.tensor([0, 1, 2, 0]),
        ...                       torch.tensor([100.0, 10.0, 1.0])).shape
        torch.Size([])
    """
    z = _logits(logits)
    labels = _labels(labels, z)
    counts = check_tensor("class_counts", class_counts)
    if counts.shape != (z.shape[1],) or bool((counts <= 0).any()):
        raise ValueError(f"class_counts must have shape ({z.shape[1]},) with entries > 0")
    adjusted = z + counts.to(device=z.device, dtype=z.dtype).log()
    return _reduce(-_pick(torch.log_softmax(adjusted, dim=1), labels), reduction)


def balanced_mse_loss(pred: Tensor, target: Tensor, noise_var: float | Tensor = 1.0) -> Tensor:
    r"""Balanced MSE, batch Monte-Carlo form (Ren, Zhang, Yi, Liu & Huang 2022; CircuitGCL's
    BMSE)::

        L = -(2 sigma^2) (1/B) sum_i log( exp(-||y^_i - y_i||^2 / (2 sigma^2))
                                           / sum_j exp(-||y^_i - y_j||^2 / (2 sigma^2)) )

    The batch targets ``y_j`` estimate the training label distribution; the factor
    ``2 sigma^2`` is taken without gradient, as in the authors' code, so a learnable
    ``noise_var`` only gets the gradient of the log-likelihood.

    Args:
        pred, target: ``(B,)`` or ``(B, d)`` predictions and targets.
        noise_var: :math:`\sigma^2 > 0` (float or learnable scalar tensor).

    Example:
        >>> import torch
        >>> balanced_mse_loss(torch.randn(8), torch.randn(8), 0.5).shape
        torch.Size([])
    """
    pred = check_finite("pred", check_tensor("pred", pred))
    target = check_finite("target", check_tensor("target", target))
    if pred.shape != target.shape or pred.dim() not in (1, 2) or pred.shape[0] < 1:
        raise ValueError(
            f"pred and target must have the same shape (B,) or (B, d), got {tuple(pred.shape)} "
            f"and {tuple(target.shape)}"
        )
    check_positive_scalar("noise_var", noise_var)
    dtype = compute_dtype(pred.dtype)
    a = pred.to(dtype).reshape(pred.shape[0], -1)
    b = target.to(device=pred.device, dtype=dtype).reshape(pred.shape[0], -1)
    var = noise_var.reshape(()).to(dtype) if isinstance(noise_var, Tensor) else float(noise_var)
    sq = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
    logits = -sq / (2 * var)
    ce = -torch.diagonal(torch.log_softmax(logits, dim=1)).mean()
    scale = (2 * var).detach() if isinstance(var, Tensor) else 2 * var
    return ce * scale


# -- binary cross-entropies -------------------------------------------------------------------
def class_independent_bce(
    logits: Tensor,
    target: Tensor,
    *,
    class_mask: Tensor | None = None,
    class_relation: Tensor | None = None,
    ignore_index: int = -100,
) -> Tensor:
    r"""Class-independent binary cross-entropy for training on several label spaces (UniSeg,
    "Learning Semantic Segmentation from Multiple Datasets with Label Shifts", Kim et al. 2022).

    Softmax couples the classes, so a class missing from one dataset's label space gets pushed
    down as a negative; here every class is an independent sigmoid and, per sample, only the
    classes of its dataset's label space (``class_mask``) are supervised::

        L = sum_{i, c in C(i)} BCE( z_ic, [y_i == c] ) / #{(i, c) : c in C(i)}

    UniSeg's second term uses the relationships between the classes of different datasets (a
    "rider" of one label space is partly a "motorcyclist" of another): with ``class_relation``
    :math:`R \in [0, 1]^{C \times C}` (e.g. thresholded cosine similarities of the class names'
    text embeddings), a class :math:`c` *outside* the sample's label space that is related to
    the label (:math:`R_{y_i c} > 0`) is supervised too, with the soft target
    :math:`R_{y_i c}`; unrelated outside classes stay unsupervised::

        L = [ sum_{i, c in C(i)} BCE(z_ic, [y_i == c]) + sum_{i, c not in C(i), R_{y_i c} > 0}
              BCE(z_ic, R_{y_i c}) ] / #(supervised pairs)

    (This is the form the abstract describes; the paper's exact construction of :math:`R` is the
    user's.)

    Args:
        logits: ``(B, C, *)`` scores (``*``: pixels, for segmentation).
        target: ``(B, *)`` class ids (``ignore_index`` pixels are skipped).
        class_mask: ``(B, C)`` or ``(C,)`` bool, the supervised classes (default: all).
        class_relation: ``(C, C)`` soft targets in ``[0, 1]`` for related classes outside the
            label space (row: the label, column: the related class); needs ``class_mask``.

    Example:
        >>> import torch
        >>> z, y = torch.randn(2, 4, 3, 3), torch.randint(0, 4, (2, 3, 3))
        >>> mask = torch.tensor([[1, 1, 0, 1], [1, 1, 1, 1]]).bool()  # sample 0: no class 2
        >>> class_independent_bce(z, y, class_mask=mask).shape
        torch.Size([])
    """
    z = check_finite("logits", check_tensor("logits", logits))
    if not z.is_floating_point() or z.dim() < 2:
        raise ValueError("logits must be a float tensor of shape (B, C, ...)")
    b, c = z.shape[:2]
    target = check_finite("target", check_tensor("target", target))
    if target.is_floating_point() or target.shape != (b, *z.shape[2:]):
        raise ValueError(f"target must be an integer tensor of shape {(b, *z.shape[2:])}")
    z = z.to(compute_dtype(z.dtype))
    valid = target != ignore_index
    if bool(((target[valid] < 0) | (target[valid] >= c)).any()):
        raise ValueError(f"target must lie in [0, {c}) or equal ignore_index")
    onehot = target[:, None] == torch.arange(c, device=z.device).reshape(1, c, *[1] * (z.dim() - 2))
    keep = valid[:, None].expand_as(z)
    if class_mask is not None:
        cm = check_tensor("class_mask", class_mask).to(z.device)
        if cm.dtype != torch.bool or cm.shape not in ((b, c), (c,)):
            raise ValueError(f"class_mask must be a bool tensor of shape ({b}, {c}) or ({c},)")
        cm = cm.expand(b, c).reshape(b, c, *[1] * (z.dim() - 2))
        keep = keep & cm
    soft = onehot.to(z.dtype)
    if class_relation is not None:
        if class_mask is None:
            raise ValueError("class_relation needs class_mask (the classes outside it get R)")
        rel = check_finite("class_relation", check_tensor("class_relation", class_relation))
        if not rel.is_floating_point() or rel.shape != (c, c):
            raise ValueError(f"class_relation must be a float tensor of shape ({c}, {c})")
        if bool(((rel < 0) | (rel > 1)).any()):
            raise ValueError("class_relation must lie in [0, 1]")
        rel = rel.to(device=z.device, dtype=z.dtype)
        # (B, C, *) relation of each pixel's label to every class (0 for ignored pixels)
        related = rel[target.clamp(0, c - 1)].movedim(-1, 1) * valid[:, None].to(z.dtype)
        outside = valid[:, None] & ~cm & (related > 0)
        soft = torch.where(outside, related, soft)
        keep = keep | outside
    if not bool(keep.any()):
        raise ValueError("no (sample, class) pair is supervised")
    per = F.binary_cross_entropy_with_logits(z, soft, reduction="none")
    return per[keep].mean()


def multilabel_bce(
    logits: Tensor,
    targets: Tensor,
    *,
    pos_weight: Tensor | None = None,
    reduction: str = "mean",
) -> Tensor:
    r"""Multi-label binary cross-entropy over a concept vocabulary: CatLIP's image-text
    pre-training as classification of the caption's WordNet synsets (Mehta et al. 2024) and
    TagAlign's multi-tag classification of parsed objects and attributes (Liu et al. 2024)::

        L = mean_{i, c} -[ t_ic log sigmoid(z_ic) + (1 - t_ic) log sigmoid(-z_ic) ]

    (``reduction="sum"`` sums; ``"none"`` gives ``(B, C)``).  For TagAlign the logits are the
    scaled similarities of image embeddings and tag text embeddings, e.g.
    ``similarity_matrix(image, tags) / tau``.

    Example:
        >>> import torch
        >>> multilabel_bce(torch.randn(4, 6), torch.randint(0, 2, (4, 6)).float()).shape
        torch.Size([])
    """
    z = _logits(logits)
    t = check_finite("targets", check_tensor("targets", targets))
    if t.shape != z.shape:
        raise ValueError(f"targets must have shape {tuple(z.shape)}, got {tuple(t.shape)}")
    t = t.to(device=z.device, dtype=z.dtype)
    if bool((t < 0).any()) or bool((t > 1).any()):
        raise ValueError("targets must lie in [0, 1]")
    pw = None if pos_weight is None else check_tensor("pos_weight", pos_weight).to(z)
    per = F.binary_cross_entropy_with_logits(z, t, pos_weight=pw, reduction="none")
    return _reduce(per, reduction)


# -- information maximization -----------------------------------------------------------------
def information_maximization_loss(logits: Tensor, *, diversity_weight: float = 1.0) -> Tensor:
    r"""Mutual-information maximization on predictions (CLIM, Li et al. 2023; the MIM term of
    information-maximizing adaptation)::

        p_i = softmax(z_i),   p- = 1/B sum_i p_i
        L = 1/B sum_i H(p_i) - w H(p-)        (= -I(X; Y^) for w = 1)

    Minimising it makes each prediction confident while keeping the batch's predictions
    balanced across classes.

    Example:
        >>> import torch
        >>> information_maximization_loss(torch.randn(8, 3)).shape
        torch.Size([])
    """
    z = _logits(logits)
    check_finite_scalar("diversity_weight", diversity_weight)
    log_p = torch.log_softmax(z, dim=1)
    p = log_p.exp()
    cond = -(p * log_p).sum(1).mean()
    mean_p = p.mean(0)
    log_mean = torch.logsumexp(log_p, dim=0) - math.log(z.shape[0])
    marginal = -(mean_p * log_mean).sum()
    return cond - diversity_weight * marginal


# -- modules ----------------------------------------------------------------------------------
class HarmonicLoss(nn.Module):
    r"""Harmonic classifier + loss with learnable class centres ``weight`` ``(C, D)``; see
    :func:`harmonic_loss`.  :meth:`probabilities` gives the harmonic max.

    Example:
        >>> import torch
        >>> loss_fn = HarmonicLoss(8, 3, exponent=2.0)
        >>> loss = loss_fn(torch.randn(4, 8), torch.tensor([0, 1, 2, 0]))
        >>> loss.backward(); loss_fn.weight.grad.shape
        torch.Size([3, 8])
    """

    def __init__(self, in_features: int, num_classes: int, exponent: float = 1.0) -> None:
        super().__init__()
        check_positive_scalar("exponent", exponent)
        self.weight = nn.Parameter(torch.randn(num_classes, in_features) / math.sqrt(in_features))
        self.exponent = float(exponent)

    def probabilities(self, x: Tensor) -> Tensor:
        return torch.softmax(harmonic_logits(x, self.weight, exponent=self.exponent), dim=1)

    def forward(self, x: Tensor, labels: Tensor) -> Tensor:
        return harmonic_loss(x, self.weight, labels, exponent=self.exponent)


class Squentropy(nn.Module):
    r"""Squentropy; see :func:`squentropy`.

    Example:
        >>> import torch
        >>> Squentropy()(torch.randn(4, 5), torch.tensor([0, 1, 2, 3])).shape
        torch.Size([])
    """

    def forward(self, logits: Tensor, labels: Tensor) -> Tensor:
        return squentropy(logits, labels)


class NumberTokenLoss(nn.Module):
    r"""Number token loss with the number-token ids and values as buffers; see
    :func:`number_token_loss`.

    Example:
        >>> import torch
        >>> ntl = NumberTokenLoss(torch.arange(10, 20), torch.arange(10.0), kind="mse")
        >>> ntl(torch.randn(2, 5, 20), torch.randint(0, 20, (2, 5))).shape
        torch.Size([])
    """

    def __init__(
        self,
        number_token_ids: Tensor,
        number_values: Tensor,
        kind: str = "mse",
        p: float = 2.0,
        ignore_index: int = -100,
    ) -> None:
        super().__init__()
        self.register_buffer("number_token_ids", torch.as_tensor(number_token_ids).long())
        self.register_buffer("number_values", torch.as_tensor(number_values).float())
        self.kind = check_choice("kind", kind, NUMBER_LOSSES)
        self.p, self.ignore_index = float(p), int(ignore_index)

    def forward(self, logits: Tensor, labels: Tensor) -> Tensor:
        return number_token_loss(
            logits,
            labels,
            self.number_token_ids,
            self.number_values,
            kind=self.kind,
            p=self.p,
            ignore_index=self.ignore_index,
        )


class CompSumLoss(nn.Module):
    r"""Comp-sum loss with parameter ``tau``; see :func:`comp_sum_loss`.

    Example:
        >>> import torch
        >>> CompSumLoss(tau=1.5)(torch.randn(4, 3), torch.tensor([0, 1, 2, 0])).shape
        torch.Size([])
    """

    def __init__(self, tau: float = 1.0) -> None:
        super().__init__()
        self.tau = float(tau)

    def forward(self, logits: Tensor, labels: Tensor) -> Tensor:
        return comp_sum_loss(logits, labels, tau=self.tau)


class SmoothAdversarialCompSumLoss(nn.Module):
    r"""Smooth adversarial comp-sum loss; see :func:`smooth_adversarial_comp_sum_loss`.

    Example:
        >>> import torch
        >>> z = torch.randn(4, 3)
        >>> SmoothAdversarialCompSumLoss(1.0, 0.5)(z, z + 0.1, torch.tensor([0, 1, 2, 0])).shape
        torch.Size([])
    """

    def __init__(self, tau: float = 1.0, nu: float = 1.0) -> None:
        super().__init__()
        self.tau, self.nu = float(tau), float(nu)

    def forward(self, logits: Tensor, adversarial_logits: Tensor, labels: Tensor) -> Tensor:
        return smooth_adversarial_comp_sum_loss(
            logits, adversarial_logits, labels, tau=self.tau, nu=self.nu
        )


class BalancedSoftmaxLoss(nn.Module):
    r"""Balanced softmax CE with the class counts as a buffer; see :func:`balanced_softmax_loss`.

    Example:
        >>> import torch
        >>> BalancedSoftmaxLoss(torch.tensor([50.0, 5.0, 1.0]))(
        ...     torch.randn(4, 3), torch.tensor([0, 1, 2, 0])).shape
        torch.Size([])
    """

    def __init__(self, class_counts: Tensor) -> None:
        super().__init__()
        self.register_buffer("class_counts", torch.as_tensor(class_counts).float())

    def forward(self, logits: Tensor, labels: Tensor) -> Tensor:
        return balanced_softmax_loss(logits, labels, self.class_counts)


class BalancedMSELoss(nn.Module):
    r"""Balanced MSE with a fixed or learnable noise variance (``noise_var`` parameter, as in the
    paper); see :func:`balanced_mse_loss`.

    Example:
        >>> import torch
        >>> loss_fn = BalancedMSELoss(1.0, learnable=True)
        >>> loss_fn(torch.randn(8), torch.randn(8)).backward()
        >>> loss_fn.noise_var.grad is not None
        True
    """

    def __init__(self, init_noise_var: float = 1.0, learnable: bool = False) -> None:
        super().__init__()
        check_positive_scalar("init_noise_var", init_noise_var)
        value = torch.tensor(float(init_noise_var))
        if learnable:
            self.noise_var = nn.Parameter(value)
        else:
            self.register_buffer("noise_var", value)

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        return balanced_mse_loss(pred, target, self.noise_var)


class ClassIndependentBCELoss(nn.Module):
    r"""Class-independent BCE; see :func:`class_independent_bce`.

    Example:
        >>> import torch
        >>> ClassIndependentBCELoss()(torch.randn(2, 4), torch.tensor([1, 3])).shape
        torch.Size([])
    """

    def __init__(self, ignore_index: int = -100) -> None:
        super().__init__()
        self.ignore_index = int(ignore_index)

    def forward(
        self,
        logits: Tensor,
        target: Tensor,
        class_mask: Tensor | None = None,
        class_relation: Tensor | None = None,
    ) -> Tensor:
        return class_independent_bce(
            logits,
            target,
            class_mask=class_mask,
            class_relation=class_relation,
            ignore_index=self.ignore_index,
        )


class MultiLabelBCELoss(nn.Module):
    r"""Multi-label BCE over concepts (CatLIP, TagAlign); see :func:`multilabel_bce`.

    Example:
        >>> import torch
        >>> MultiLabelBCELoss()(torch.randn(4, 6), torch.randint(0, 2, (4, 6)).float()).shape
        torch.Size([])
    """

    def __init__(self, pos_weight: Tensor | None = None) -> None:
        super().__init__()
        self.register_buffer(
            "pos_weight", None if pos_weight is None else torch.as_tensor(pos_weight)
        )

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        return multilabel_bce(logits, targets, pos_weight=self.pos_weight)


class InformationMaximizationLoss(nn.Module):
    r"""Information maximization on predictions (CLIM); see :func:`information_maximization_loss`.

    Example:
        >>> import torch
        >>> InformationMaximizationLoss()(torch.randn(8, 3)).shape
        torch.Size([])
    """

    def __init__(self, diversity_weight: float = 1.0) -> None:
        super().__init__()
        self.diversity_weight = float(diversity_weight)

    def forward(self, logits: Tensor) -> Tensor:
        return information_maximization_loss(logits, diversity_weight=self.diversity_weight)
