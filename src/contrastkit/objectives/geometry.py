"""Geometry objectives: alignment, uniformity, kernels, scattering, cross-correlation.

These losses shape where embeddings lie rather than rank one key against another:

- :func:`alignment_loss`, :func:`uniformity_loss` (Wang & Isola 2020) and their cross-modal
  companion :func:`cross_uniformity_loss`;
- :func:`clip_alignment_uniformity_loss`: CLIP + alignment + uniformity (the contrastive gap,
  Fahim et al. 2024);
- :func:`kernel_mixture_loss`: InfoNCE with a mixture of exponential kernels (Tan et al. 2024);
- :func:`scattering_loss`: hyperspherical representation scattering (SGRL, He et al. 2024;
  CircuitGCL, Shen et al. 2025);
- :func:`cross_correlation_loss`: the Barlow Twins cross-correlation objective (Zbontar et al.
  2021), studied by Huang et al. 2023;
- :func:`cross_cosine_similarity_loss`, :func:`cross_sigmoid_similarity_loss`: BYOL with in-batch
  self-labelled similar pairs (Garg & Jain 2022);
- :func:`joint_entropy_loss` and :func:`sepclr_loss`: SepCLR's common / salient terms (Louiset
  et al. 2024).

Every pairwise quantity is a sum or a log-sum-exp over a ``B x N`` grid of pair terms, so it
tiles the way InfoNCE does; the functions here materialise the grid (dense engine).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from contrastkit._validation import (
    check_embeddings,
    check_finite_scalar,
    check_positive_scalar,
    check_same_dim,
    check_tensor,
)
from contrastkit.objectives.infonce import masked_fill_value
from contrastkit.similarity import compute_dtype, pairwise_similarity

__all__ = [
    "alignment_loss",
    "uniformity_loss",
    "cross_uniformity_loss",
    "clip_alignment_uniformity_loss",
    "kernel_mixture_loss",
    "scattering_loss",
    "cross_correlation_loss",
    "cross_cosine_similarity_loss",
    "cross_sigmoid_similarity_loss",
    "joint_entropy_loss",
    "sepclr_loss",
    "AlignmentUniformityLoss",
    "CLIPAlignmentUniformityLoss",
    "KernelMixtureLoss",
    "ScatteringLoss",
    "CrossCorrelationLoss",
    "CrossCosineSimilarityLoss",
    "CrossSigmoidSimilarityLoss",
    "SepCLRLoss",
]


# -- helpers ----------------------------------------------------------------------------------
def _cast(x: Tensor, normalize: bool) -> Tensor:
    x = x.to(compute_dtype(x.dtype))
    return F.normalize(x, dim=-1, eps=1e-12) if normalize else x


def _paired(x: Tensor, y: Tensor, names: tuple[str, str]) -> tuple[Tensor, Tensor]:
    x = check_embeddings(names[0], x)
    y = check_embeddings(names[1], y)
    check_same_dim(names, (x, y))
    if x.shape[0] != y.shape[0]:
        raise ValueError(
            f"{names[0]} and {names[1]} must have the same number of rows (row i of one is "
            f"paired with row i of the other), got {x.shape[0]} and {y.shape[0]}"
        )
    return x, y


def _sq_dists(x: Tensor, y: Tensor) -> Tensor:
    """``(B, N)`` squared euclidean distances (cast inputs), clamped at 0."""
    return (-pairwise_similarity(x, y, "neg_sq_euclidean")).clamp_min(0.0)


def _log_mean_exp_pairs(logits: Tensor, keep: Tensor) -> Tensor:
    """``log( mean over kept entries of exp(logits) )``."""
    filled = logits.masked_fill(~keep, masked_fill_value(logits.dtype))
    return torch.logsumexp(filled.reshape(-1), dim=0) - math.log(int(keep.sum()))


def _check_weight(name: str, value: float) -> None:
    check_finite_scalar(name, value)
    if float(value) < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")


# -- alignment and uniformity -----------------------------------------------------------------
def alignment_loss(x: Tensor, y: Tensor, *, alpha: float = 2.0, normalize: bool = True) -> Tensor:
    r"""Alignment of positive pairs (Wang & Isola 2020)::

        L_align = 1/B sum_i || x_i - y_i ||_2^alpha

    Args:
        x, y: ``(B, D)`` embeddings; row ``i`` of ``x`` and of ``y`` form a positive pair.
        alpha: :math:`\alpha > 0` (2 in the paper).
        normalize: L2-normalise the rows first (the paper's features lie on the hypersphere).

    Example:
        >>> import torch
        >>> x = torch.randn(8, 16)
        >>> float(alignment_loss(x, x))
        0.0
    """
    x, y = _paired(x, y, ("x", "y"))
    check_positive_scalar("alpha", alpha)
    diff = _cast(x, normalize) - _cast(y, normalize)
    sq = (diff * diff).sum(-1)
    if float(alpha) == 2.0:
        return sq.mean()
    # (sq)^(alpha/2), with a zero-safe gradient at identical pairs
    tiny = torch.finfo(sq.dtype).tiny
    return torch.where(sq > 0, sq.clamp_min(tiny) ** (alpha / 2.0), torch.zeros_like(sq)).mean()


def uniformity_loss(x: Tensor, *, t: float = 2.0, normalize: bool = True) -> Tensor:
    r"""Uniformity on the hypersphere (Wang & Isola 2020): the log of the average Gaussian
    potential over distinct pairs::

        L_uniform = log( 2 / (B (B-1)) sum_{i<j} exp(-t || x_i - x_j ||^2) )

    Computed as a log-sum-exp (no overflow for any ``t``).

    Args:
        x: ``(B, D)`` embeddings, ``B >= 2``.
        t: :math:`t > 0` (2 in the paper).
        normalize: L2-normalise the rows first.

    Example:
        >>> import torch
        >>> float(uniformity_loss(torch.randn(64, 3))) < 0
        True
    """
    x = check_embeddings("x", x)
    check_positive_scalar("t", t)
    if x.shape[0] < 2:
        raise ValueError(f"uniformity needs at least 2 rows, got {x.shape[0]}")
    z = _cast(x, normalize)
    b = z.shape[0]
    upper = torch.ones(b, b, dtype=torch.bool, device=z.device).triu(diagonal=1)
    return _log_mean_exp_pairs(-float(t) * _sq_dists(z, z), upper)


def cross_uniformity_loss(
    x: Tensor, y: Tensor, *, t: float = 2.0, normalize: bool = True
) -> Tensor:
    r"""Uniformity across two modalities over the unpaired rows (Fahim et al. 2024)::

        L_xunif = log( 1 / (B (B-1)) sum_{i != j} exp(-t || x_i - y_j ||^2) )

    Example:
        >>> import torch
        >>> cross_uniformity_loss(torch.randn(8, 4), torch.randn(8, 4)).shape
        torch.Size([])
    """
    x, y = _paired(x, y, ("x", "y"))
    check_positive_scalar("t", t)
    if x.shape[0] < 2:
        raise ValueError(f"cross-uniformity needs at least 2 rows, got {x.shape[0]}")
    a, b = _cast(x, normalize), _cast(y, normalize)
    off = ~torch.eye(a.shape[0], dtype=torch.bool, device=a.device)
    return _log_mean_exp_pairs(-float(t) * _sq_dists(a, b), off)


def clip_alignment_uniformity_loss(
    image: Tensor,
    text: Tensor,
    *,
    temperature: float | Tensor = 0.07,
    alignment_weight: float = 1.0,
    uniformity_weight: float = 1.0,
    cross_uniformity_weight: float = 0.0,
    alpha: float = 2.0,
    t: float = 2.0,
    engine: str = "auto",
) -> Tensor:
    r"""CLIP loss plus alignment and uniformity terms, which close the contrastive (modality)
    gap (Fahim, Murphy & Fyshe 2024, "It's Not a Modality Gap")::

        L = L_CLIP + w_a L_align(I, T) + w_u (L_unif(I) + L_unif(T)) / 2 + w_x L_xunif(I, T)

    ``L_CLIP`` is the symmetric InfoNCE of :func:`contrastkit.functional.info_nce` (so it runs on
    any engine given by ``engine=``); the other terms are those of :func:`alignment_loss`,
    :func:`uniformity_loss` and :func:`cross_uniformity_loss` on the L2-normalised embeddings.
    ``w_x = 0`` gives the paper's L_CUA, ``w_x > 0`` its L_CUAXU.

    Example:
        >>> import torch
        >>> clip_alignment_uniformity_loss(torch.randn(8, 16), torch.randn(8, 16)).shape
        torch.Size([])
    """
    from contrastkit.functional import info_nce

    image, text = _paired(image, text, ("image", "text"))
    for name, w in (
        ("alignment_weight", alignment_weight),
        ("uniformity_weight", uniformity_weight),
        ("cross_uniformity_weight", cross_uniformity_weight),
    ):
        _check_weight(name, w)
    loss = info_nce(image, text, temperature=temperature, symmetric=True, engine=engine)
    if alignment_weight:
        loss = loss + alignment_weight * alignment_loss(image, text, alpha=alpha)
    if uniformity_weight:
        unif = (uniformity_loss(image, t=t) + uniformity_loss(text, t=t)) / 2
        loss = loss + uniformity_weight * unif
    if cross_uniformity_weight:
        loss = loss + cross_uniformity_weight * cross_uniformity_loss(image, text, t=t)
    return loss


# -- kernel mixture InfoNCE -------------------------------------------------------------------
def kernel_mixture_loss(
    z1: Tensor,
    z2: Tensor,
    *,
    gammas: Sequence[float] = (2.0, 1.0),
    temperatures: Sequence[float] = (0.5, 0.5),
    weights: Sequence[float] | None = None,
    split: bool = False,
    normalize: bool = True,
) -> Tensor:
    r"""Kernel-InfoNCE with a mixture of exponential kernels (Tan, Zhang, Yang & Yuan 2024,
    "Contrastive Learning Is Spectral Clustering On Similarity Graph").

    The ``2N`` embeddings of two views are all anchors; anchor ``a``'s positive ``p(a)`` is the
    other view of its sample::

        K(u, v) = sum_m w_m exp( -|| u^(m) - v^(m) ||_2^{gamma_m} / tau_m )
        L = 1/(2N) sum_a [ -log K(z_a, z_p(a)) + log sum_{b != a} K(z_a, z_b) ]

    ``gamma = 2`` is the Gaussian kernel (SimCLR's InfoNCE up to a constant), ``gamma = 1`` the
    Laplacian kernel.  With ``split=False`` every kernel sees the whole vector (the paper's
    *Simple Sum* kernel for Gaussian + Laplacian); with ``split=True`` the vector is cut into as
    many equal chunks as kernels and kernel ``m`` sees chunk ``m`` (the *Concatenation Sum*
    kernel).  ``log K`` is a log-sum-exp over the kernels, so no term overflows.

    Args:
        z1, z2: ``(N, D)`` embeddings of the two views.
        gammas, temperatures: one exponent :math:`\gamma_m > 0` and one :math:`\tau_m > 0` per
            kernel.
        weights: mixture weights :math:`w_m > 0` (default: all 1).
        split: give each kernel its own equal chunk of the features.
        normalize: L2-normalise (each chunk, when ``split``) first.

    Example:
        >>> import torch
        >>> z1, z2 = torch.randn(16, 8), torch.randn(16, 8)
        >>> kernel_mixture_loss(z1, z2, gammas=(2.0, 1.0), temperatures=(0.5, 0.5)).shape
        torch.Size([])
    """
    z1, z2 = _paired(z1, z2, ("z1", "z2"))
    gammas, temperatures = list(gammas), list(temperatures)
    m = len(gammas)
    if m == 0 or len(temperatures) != m:
        raise ValueError(
            f"gammas and temperatures must be non-empty and of equal length, got {len(gammas)} "
            f"and {len(temperatures)}"
        )
    w = [1.0] * m if weights is None else list(weights)
    if len(w) != m:
        raise ValueError(f"weights must have one entry per kernel ({m}), got {len(w)}")
    for i in range(m):
        check_positive_scalar(f"gammas[{i}]", gammas[i])
        check_positive_scalar(f"temperatures[{i}]", temperatures[i])
        check_positive_scalar(f"weights[{i}]", w[i])
    if z1.shape[0] < 2:
        raise ValueError(f"kernel_mixture_loss needs at least 2 samples, got {z1.shape[0]}")
    d = z1.shape[1]
    if split and d % m:
        raise ValueError(f"split=True needs the feature size ({d}) divisible by {m} kernels")
    z = torch.cat([z1, z2]).to(compute_dtype(z1.dtype))
    n2 = z.shape[0]
    eye = torch.eye(n2, dtype=torch.bool, device=z.device)
    log_k = []
    for i in range(m):
        part = z[:, i * (d // m) : (i + 1) * (d // m)] if split else z
        if normalize:
            part = F.normalize(part, dim=-1, eps=1e-12)
        sq = _sq_dists(part, part).masked_fill(eye, 1.0)
        tiny = torch.finfo(sq.dtype).tiny
        dist_g = sq.clamp_min(tiny) ** (gammas[i] / 2.0)
        log_k.append(math.log(w[i]) - dist_g / temperatures[i])
    log_kernel = torch.logsumexp(torch.stack(log_k), dim=0)
    n = z1.shape[0]
    pos = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)
    den = torch.logsumexp(log_kernel.masked_fill(eye, masked_fill_value(z.dtype)), dim=1)
    return (den - log_kernel[torch.arange(n2, device=z.device), pos]).mean()


# -- scattering -------------------------------------------------------------------------------
def scattering_loss(
    h: Tensor, *, center: Tensor | None = None, power: float = 2.0, normalize: bool = True
) -> Tensor:
    r"""Hyperspherical representation scattering (SGRL, He et al. 2024; used by CircuitGCL,
    Shen et al. 2025): push the normalised embeddings away from their scattered centre::

        h~_i = h_i / ||h_i||,   c = 1/n sum_i h~_i,   L = -1/n sum_i || h~_i - c ||_2^p

    Args:
        h: ``(n, D)`` embeddings.
        center: a fixed centre ``(D,)`` (e.g. a running mean); by default the batch mean of
            ``h~`` (differentiable).
        power: :math:`p > 0` (2: squared distances).
        normalize: project onto the unit hypersphere first.

    Example:
        >>> import torch
        >>> scattering_loss(torch.randn(32, 8)).shape
        torch.Size([])
    """
    h = check_embeddings("h", h)
    check_positive_scalar("power", power)
    z = _cast(h, normalize)
    if center is None:
        c = z.mean(0)
    else:
        c = check_tensor("center", center)
        if c.shape != (z.shape[1],):
            raise ValueError(f"center must have shape ({z.shape[1]},), got {tuple(c.shape)}")
        c = c.to(z.dtype)
    sq = ((z - c) ** 2).sum(-1)
    tiny = torch.finfo(sq.dtype).tiny
    dist_p = sq if float(power) == 2.0 else sq.clamp_min(tiny) ** (power / 2.0)
    return -dist_p.mean()


# -- cross-correlation ------------------------------------------------------------------------
def cross_correlation_loss(
    z1: Tensor, z2: Tensor, *, off_diagonal_weight: float = 5e-3, eps: float = 1e-5
) -> Tensor:
    r"""Cross-correlation objective of Barlow Twins (Zbontar et al. 2021), one of the two
    canonical losses analysed by Huang, Yi & Zhao (2023)::

        z^_{b,i} = (z_{b,i} - mean_b z_{b,i}) / sqrt(var_b z_{b,i} + eps)      (per view)
        C_ij = 1/N sum_b z^1_{b,i} z^2_{b,j}
        L = sum_i (1 - C_ii)^2 + lambda sum_{i != j} C_ij^2

    (``var`` is the biased batch variance, as ``BatchNorm1d(affine=False)`` computes it.)

    Example:
        >>> import torch
        >>> cross_correlation_loss(torch.randn(32, 8), torch.randn(32, 8)).shape
        torch.Size([])
    """
    z1, z2 = _paired(z1, z2, ("z1", "z2"))
    check_finite_scalar("off_diagonal_weight", off_diagonal_weight)
    check_positive_scalar("eps", eps)
    if z1.shape[0] < 2:
        raise ValueError(f"cross_correlation_loss needs at least 2 rows, got {z1.shape[0]}")

    def standardize(z: Tensor) -> Tensor:
        z = z.to(compute_dtype(z.dtype))
        zc = z - z.mean(0)
        return zc / torch.sqrt((zc * zc).mean(0) + eps)

    c = standardize(z1).T @ standardize(z2) / z1.shape[0]
    diag = torch.diagonal(c)
    on = ((1.0 - diag) ** 2).sum()
    off = (c * c).sum() - (diag * diag).sum()
    return on + off_diagonal_weight * off


# -- BYOL self-labelling ----------------------------------------------------------------------
def _self_labelled_byol(online: Tensor, target: Tensor, weights_fn) -> Tensor:
    online, target = _paired(online, target, ("online", "target"))
    c = pairwise_similarity(_cast(online, True), _cast(target, True), "cosine")
    with torch.no_grad():
        w = weights_fn(c.detach())
        w.fill_diagonal_(1.0)
    return (2.0 - 2.0 * (w * c).sum(1) / w.sum(1)).mean()


def cross_cosine_similarity_loss(
    online: Tensor, target: Tensor, *, threshold: float = 0.9
) -> Tensor:
    r"""Cross-Cosine Similarity Loss (CCSL; Garg & Jain 2022, BYOL self-labelling).

    BYOL's regression loss ``2 - 2 cos(p_i, z'_i)`` extended to the in-batch pairs that the
    network itself labels as similar: with the cross-cosine matrix
    :math:`C_{ij} = \cos(p_i, z'_j)` of online predictions ``p`` and target projections ``z'``,
    the self-labels are :math:`P_{ij} = 1` for ``i = j`` or :math:`C_{ij} \ge` ``threshold``
    (computed without gradient), and::

        L = 1/B sum_i [ 2 - 2 sum_j P_ij C_ij / sum_j P_ij ]

    With ``threshold > 1`` it is exactly BYOL's loss.  (The paper's abstract defines the loss
    this way; the exact thresholding rule of its experiments is a hyper-parameter here.)

    Example:
        >>> import torch
        >>> p, z = torch.randn(16, 8), torch.randn(16, 8)
        >>> cross_cosine_similarity_loss(p, z, threshold=0.5).shape
        torch.Size([])
    """
    check_finite_scalar("threshold", threshold)
    return _self_labelled_byol(online, target, lambda c: (c >= threshold).to(c.dtype))


def cross_sigmoid_similarity_loss(
    online: Tensor, target: Tensor, *, threshold: float = 0.9, sharpness: float = 10.0
) -> Tensor:
    r"""Cross-Sigmoid Similarity Loss (CSSL; Garg & Jain 2022): CCSL with soft self-labels::

        P_ij = 1 (i = j),   P_ij = sigmoid( sharpness * (C_ij - threshold) )  (i != j, no grad)
        L = 1/B sum_i [ 2 - 2 sum_j P_ij C_ij / sum_j P_ij ]

    Example:
        >>> import torch
        >>> cross_sigmoid_similarity_loss(torch.randn(16, 8), torch.randn(16, 8)).shape
        torch.Size([])
    """
    check_finite_scalar("threshold", threshold)
    check_positive_scalar("sharpness", sharpness)
    return _self_labelled_byol(online, target, lambda c: torch.sigmoid(sharpness * (c - threshold)))


# -- SepCLR -----------------------------------------------------------------------------------
def joint_entropy_loss(common: Tensor, salient: Tensor, *, tau: float = 0.5) -> Tensor:
    r"""SepCLR's joint-entropy estimate used to minimise the mutual information between the
    common and salient spaces (Louiset et al. 2024)::

        L_JE = 1/B sum_i log( 1/B sum_j exp(-||c_i - c_j||^2 / (2 tau))
                                       * exp(-||s_i - s_j||^2 / (2 tau)) )

    (a kernel density estimate of ``-H(c, s)``; ``j`` runs over every row, ``i`` included).

    Example:
        >>> import torch
        >>> joint_entropy_loss(torch.randn(8, 4), torch.randn(8, 3)).shape
        torch.Size([])
    """
    common = check_embeddings("common", common)
    salient = check_embeddings("salient", salient)
    if common.shape[0] != salient.shape[0]:
        raise ValueError(
            f"common and salient must have the same rows, got {common.shape[0]} and "
            f"{salient.shape[0]}"
        )
    check_positive_scalar("tau", tau)
    c = common.to(compute_dtype(common.dtype))
    s = salient.to(compute_dtype(salient.dtype))
    logits = -(_sq_dists(c, c) + _sq_dists(s, s)) / (2.0 * tau)
    return (torch.logsumexp(logits, dim=1) - math.log(c.shape[0])).mean()


def sepclr_loss(
    common1: Tensor,
    common2: Tensor,
    salient1: Tensor,
    salient2: Tensor,
    is_target: Tensor,
    *,
    tau: float = 0.5,
    uniformity_weight: float = 2.0,
    salient_weight: float = 1000.0,
    info_less_weight: float = 1000.0,
    joint_entropy_weight: float = 10.0,
    return_terms: bool = False,
) -> Tensor | tuple[Tensor, dict[str, Tensor]]:
    r"""SepCLR: separate common from salient patterns (Louiset, Duchesnay, Grigis, Dufumier &
    Gori-Cabrera 2024).

    Two views of a batch mixing background (``is_target = False``) and target samples give
    common embeddings ``c1, c2`` and salient embeddings ``s1, s2``.  With the Gaussian-potential
    alignment ``A(x, y) = mean ||x - y||^2 / (2 tau)`` and uniformity
    ``U(x) = log mean_{i<j} exp(-||x_i - x_j||^2 / (2 tau))``::

        common   = A(c^1, c^2) + u [U(c^1) + U(c^2)] / 2     (c^ = L2-normalised c)
        salient  = A(s1_T, s2_T) + u [U(s'1) + U(s'2)] / 2   (T: target rows)
        infoless = [A(0, s1_B) + A(0, s2_B)] / 2               (B: background rows, s' = 0)
        JE       = [L_JE(c^1, s'1) + L_JE(c^2, s'2)] / 2        (see joint_entropy_loss)
        L = common + beta_s salient + beta_0 infoless + lambda JE

    where ``s'`` is ``s`` with the background rows replaced by the information-less constant
    ``s' = 0`` (no gradient through those rows), as in the authors' code.

    Args:
        common1, common2: ``(B, Dc)`` common-space embeddings of the two views.
        salient1, salient2: ``(B, Ds)`` salient-space embeddings (not normalised).
        is_target: ``(B,)`` bool, ``True`` for target (e.g. diseased) samples.
        tau: kernel bandwidth :math:`\tau`.
        uniformity_weight, salient_weight, info_less_weight, joint_entropy_weight:
            ``u``, :math:`\beta_s`, :math:`\beta_0`, :math:`\lambda`.
        return_terms: also return the four terms.

    Example:
        >>> import torch
        >>> c1, c2, s1, s2 = (torch.randn(8, 4) for _ in range(4))
        >>> y = torch.tensor([0, 1] * 4).bool()
        >>> sepclr_loss(c1, c2, s1, s2, y).shape
        torch.Size([])
    """
    common1, common2 = _paired(common1, common2, ("common1", "common2"))
    salient1, salient2 = _paired(salient1, salient2, ("salient1", "salient2"))
    if salient1.shape[0] != common1.shape[0]:
        raise ValueError("salient and common embeddings must have the same number of rows")
    is_target = check_tensor("is_target", is_target)
    if is_target.dtype != torch.bool or is_target.shape != (common1.shape[0],):
        raise ValueError(
            f"is_target must be a bool tensor of shape ({common1.shape[0]},), got dtype "
            f"{is_target.dtype} and shape {tuple(is_target.shape)}"
        )
    n_target = int(is_target.sum())
    if n_target == 0:
        raise ValueError("is_target has no target row: the salient alignment needs one")
    check_positive_scalar("tau", tau)
    for name, w in (
        ("uniformity_weight", uniformity_weight),
        ("salient_weight", salient_weight),
        ("info_less_weight", info_less_weight),
        ("joint_entropy_weight", joint_entropy_weight),
    ):
        _check_weight(name, w)
    t = 1.0 / (2.0 * tau)
    c1, c2 = _cast(common1, True), _cast(common2, True)
    s1, s2 = _cast(salient1, False), _cast(salient2, False)

    def align(a: Tensor, b: Tensor) -> Tensor:
        return ((a - b) ** 2).sum(-1).mean() * t

    bg = ~is_target[:, None]
    s1p, s2p = s1.masked_fill(bg, 0.0), s2.masked_fill(bg, 0.0)
    common = (
        align(c1, c2)
        + uniformity_weight
        * (uniformity_loss(c1, t=t, normalize=False) + uniformity_loss(c2, t=t, normalize=False))
        / 2
    )
    salient = (
        align(s1[is_target], s2[is_target])
        + uniformity_weight
        * (uniformity_loss(s1p, t=t, normalize=False) + uniformity_loss(s2p, t=t, normalize=False))
        / 2
    )
    if n_target < common1.shape[0]:
        background = ~is_target
        infoless = ((s1[background] ** 2).sum(-1).mean() + (s2[background] ** 2).sum(-1).mean()) * (
            t / 2
        )
    else:
        infoless = s1.new_zeros(())
    je = (joint_entropy_loss(c1, s1p, tau=tau) + joint_entropy_loss(c2, s2p, tau=tau)) / 2
    total = (
        common
        + salient_weight * salient
        + info_less_weight * infoless
        + (joint_entropy_weight * je)
    )
    if return_terms:
        terms = {"common": common, "salient": salient, "info_less": infoless, "joint_entropy": je}
        return total, terms
    return total


# -- modules ----------------------------------------------------------------------------------
class AlignmentUniformityLoss(nn.Module):
    r"""``w_a L_align(x, y) + w_u (L_unif(x) + L_unif(y)) / 2`` (Wang & Isola 2020), the loss
    the paper optimises directly in place of InfoNCE.

    Example:
        >>> import torch
        >>> AlignmentUniformityLoss()(torch.randn(8, 4), torch.randn(8, 4)).shape
        torch.Size([])
    """

    def __init__(
        self,
        alignment_weight: float = 1.0,
        uniformity_weight: float = 1.0,
        alpha: float = 2.0,
        t: float = 2.0,
    ) -> None:
        super().__init__()
        _check_weight("alignment_weight", alignment_weight)
        _check_weight("uniformity_weight", uniformity_weight)
        check_positive_scalar("alpha", alpha)
        check_positive_scalar("t", t)
        self.alignment_weight, self.uniformity_weight = (
            float(alignment_weight),
            float(uniformity_weight),
        )
        self.alpha, self.t = float(alpha), float(t)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        align = alignment_loss(x, y, alpha=self.alpha)  # validates x and y by name
        unif = (uniformity_loss(x, t=self.t) + uniformity_loss(y, t=self.t)) / 2
        return self.alignment_weight * align + self.uniformity_weight * unif


class CLIPAlignmentUniformityLoss(nn.Module):
    r"""CLIP + alignment + uniformity (+ cross-uniformity); see
    :func:`clip_alignment_uniformity_loss`.  The temperature may be learnable (``logit_scale``).

    Example:
        >>> import torch
        >>> loss_fn = CLIPAlignmentUniformityLoss(learnable_temperature=True)
        >>> loss_fn(torch.randn(8, 16), torch.randn(8, 16)).shape
        torch.Size([])
    """

    def __init__(
        self,
        temperature: float = 0.07,
        learnable_temperature: bool = False,
        *,
        alignment_weight: float = 1.0,
        uniformity_weight: float = 1.0,
        cross_uniformity_weight: float = 0.0,
        alpha: float = 2.0,
        t: float = 2.0,
        engine: str = "auto",
    ) -> None:
        super().__init__()
        from contrastkit.similarity import LogitScale

        self.logit_scale = LogitScale(temperature, learnable_temperature)
        self.kwargs = dict(
            alignment_weight=alignment_weight,
            uniformity_weight=uniformity_weight,
            cross_uniformity_weight=cross_uniformity_weight,
            alpha=alpha,
            t=t,
            engine=engine,
        )

    def forward(self, image: Tensor, text: Tensor) -> Tensor:
        return clip_alignment_uniformity_loss(
            image, text, temperature=1.0 / self.logit_scale(), **self.kwargs
        )


class KernelMixtureLoss(nn.Module):
    r"""Kernel-InfoNCE with a kernel mixture; see :func:`kernel_mixture_loss`.

    Example:
        >>> import torch
        >>> KernelMixtureLoss(gammas=(2.0, 1.0), temperatures=(0.5, 0.5))(
        ...     torch.randn(8, 4), torch.randn(8, 4)).shape
        torch.Size([])
    """

    def __init__(
        self,
        gammas: Sequence[float] = (2.0, 1.0),
        temperatures: Sequence[float] = (0.5, 0.5),
        weights: Sequence[float] | None = None,
        split: bool = False,
        normalize: bool = True,
    ) -> None:
        super().__init__()
        self.gammas, self.temperatures = tuple(gammas), tuple(temperatures)
        self.weights = None if weights is None else tuple(weights)
        self.split, self.normalize = bool(split), bool(normalize)

    def forward(self, z1: Tensor, z2: Tensor) -> Tensor:
        return kernel_mixture_loss(
            z1,
            z2,
            gammas=self.gammas,
            temperatures=self.temperatures,
            weights=self.weights,
            split=self.split,
            normalize=self.normalize,
        )


class ScatteringLoss(nn.Module):
    r"""Representation scattering; see :func:`scattering_loss`.  With ``momentum`` set, the
    centre is a running mean of batch centres kept in the buffer ``center`` (saved in the
    state dict); otherwise the batch centre is used.

    Example:
        >>> import torch
        >>> ScatteringLoss(dim=8, momentum=0.9)(torch.randn(16, 8)).shape
        torch.Size([])
    """

    def __init__(
        self, dim: int | None = None, momentum: float | None = None, power: float = 2.0
    ) -> None:
        super().__init__()
        if momentum is not None:
            if dim is None:
                raise ValueError("a running centre (momentum=...) needs dim=")
            if not 0.0 <= momentum < 1.0:
                raise ValueError(f"momentum must lie in [0, 1), got {momentum}")
            self.register_buffer("center", torch.zeros(dim))
            self.register_buffer("initialized", torch.tensor(False))
        self.momentum, self.power = momentum, float(power)

    def forward(self, h: Tensor) -> Tensor:
        if self.momentum is None:
            return scattering_loss(h, power=self.power)
        h = check_embeddings("h", h)
        batch_center = _cast(h, True).mean(0).detach().to(self.center.dtype)
        if self.training:
            with torch.no_grad():
                if bool(self.initialized):
                    self.center.mul_(self.momentum).add_((1 - self.momentum) * batch_center)
                else:
                    self.center.copy_(batch_center)
                    self.initialized.fill_(True)
        return scattering_loss(h, center=self.center, power=self.power)


class CrossCorrelationLoss(nn.Module):
    r"""Barlow Twins cross-correlation loss; see :func:`cross_correlation_loss`.

    Example:
        >>> import torch
        >>> CrossCorrelationLoss()(torch.randn(16, 8), torch.randn(16, 8)).shape
        torch.Size([])
    """

    def __init__(self, off_diagonal_weight: float = 5e-3, eps: float = 1e-5) -> None:
        super().__init__()
        self.off_diagonal_weight, self.eps = float(off_diagonal_weight), float(eps)

    def forward(self, z1: Tensor, z2: Tensor) -> Tensor:
        return cross_correlation_loss(
            z1, z2, off_diagonal_weight=self.off_diagonal_weight, eps=self.eps
        )


class CrossCosineSimilarityLoss(nn.Module):
    r"""CCSL; see :func:`cross_cosine_similarity_loss` (call it on both view orders and add, as
    BYOL symmetrises its loss).

    Example:
        >>> import torch
        >>> CrossCosineSimilarityLoss(0.5)(torch.randn(8, 4), torch.randn(8, 4)).shape
        torch.Size([])
    """

    def __init__(self, threshold: float = 0.9) -> None:
        super().__init__()
        self.threshold = float(threshold)

    def forward(self, online: Tensor, target: Tensor) -> Tensor:
        return cross_cosine_similarity_loss(online, target, threshold=self.threshold)


class CrossSigmoidSimilarityLoss(nn.Module):
    r"""CSSL; see :func:`cross_sigmoid_similarity_loss`.

    Example:
        >>> import torch
        >>> CrossSigmoidSimilarityLoss()(torch.randn(8, 4), torch.randn(8, 4)).shape
        torch.Size([])
    """

    def __init__(self, threshold: float = 0.9, sharpness: float = 10.0) -> None:
        super().__init__()
        self.threshold, self.sharpness = float(threshold), float(sharpness)

    def forward(self, online: Tensor, target: Tensor) -> Tensor:
        return cross_sigmoid_similarity_loss(
            online, target, threshold=self.threshold, sharpness=self.sharpness
        )


class SepCLRLoss(nn.Module):
    r"""SepCLR's objective; see :func:`sepclr_loss`.  ``forward`` returns the total and keeps the
    four terms (detached) in ``last_terms`` for logging.

    Example:
        >>> import torch
        >>> loss_fn = SepCLRLoss()
        >>> c1, c2, s1, s2 = (torch.randn(8, 4) for _ in range(4))
        >>> loss_fn(c1, c2, s1, s2, torch.tensor([0, 1] * 4).bool()).shape
        torch.Size([])
        >>> sorted(loss_fn.last_terms)
        ['common', 'info_less', 'joint_entropy', 'salient']
    """

    def __init__(
        self,
        tau: float = 0.5,
        uniformity_weight: float = 2.0,
        salient_weight: float = 1000.0,
        info_less_weight: float = 1000.0,
        joint_entropy_weight: float = 10.0,
    ) -> None:
        super().__init__()
        self.kwargs = dict(
            tau=tau,
            uniformity_weight=uniformity_weight,
            salient_weight=salient_weight,
            info_less_weight=info_less_weight,
            joint_entropy_weight=joint_entropy_weight,
        )
        self.last_terms: dict[str, Tensor] = {}

    def forward(
        self,
        common1: Tensor,
        common2: Tensor,
        salient1: Tensor,
        salient2: Tensor,
        is_target: Tensor,
    ) -> Tensor:
        total, terms = sepclr_loss(
            common1, common2, salient1, salient2, is_target, return_terms=True, **self.kwargs
        )
        self.last_terms = {k: v.detach() for k, v in terms.items()}
        return total
