r"""Geometry of an embedding: alignment, uniformity, gaps, rank, collapse.

All functions take embeddings ``(N, D)`` (and labels ``(N,)`` where classes matter), compute in
float32 (float64 for float64 inputs) and return tensors.  Unless a docstring says otherwise they
are differentiable, so :func:`alignment` and :func:`uniformity` double as losses.

- :func:`alignment`, :func:`uniformity`: Wang & Isola 2020.
- :func:`modality_gap`: Liang et al. 2022; the contrastive gap (Fahim et al. 2024).
- :func:`effective_rank`: Roy & Vetterli 2007.
- :func:`neural_collapse`: Papyan, Han & Donoho 2020; orthogonal frame: Kini et al. 2023.
- :func:`class_collapse`: Xue et al. 2023 (which features are learnt).
- :func:`representation_harm`: Maity et al. 2023.
- :func:`tolerance`: Wang & Liu 2021 (the uniformity-tolerance dilemma).
- :func:`class_center_similarity`: Huang et al. 2023 (divergence of class centres).
- :func:`info_nce_mi_bound`: van den Oord et al. 2018; sufficiency (Lin & Mei 2025).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from contrastkit._validation import (
    check_embeddings,
    check_labels,
    check_positive_scalar,
    check_same_dim,
)
from contrastkit.similarity import compute_dtype

__all__ = [
    "alignment",
    "uniformity",
    "modality_gap",
    "effective_rank",
    "NeuralCollapse",
    "neural_collapse",
    "class_collapse",
    "representation_harm",
    "tolerance",
    "class_center_similarity",
    "info_nce_mi_bound",
]


def _points(name: str, x: Tensor, normalize: bool) -> Tensor:
    x = check_embeddings(name, x)
    x = x.to(compute_dtype(x.dtype))
    return F.normalize(x, dim=-1, eps=1e-12) if normalize else x


def _paired(x: Tensor, y: Tensor) -> None:
    check_same_dim(("x", "y"), (x, y))
    if x.shape[0] != y.shape[0]:
        raise ValueError(
            f"x and y must be paired row by row, got {x.shape[0]} and {y.shape[0]} rows"
        )


def _classes(name: str, labels: Tensor, x: Tensor, min_classes: int = 1) -> tuple[Tensor, int]:
    """Labels remapped to ``0..C-1`` (in sorted order of the original values) and ``C``."""
    labels = check_labels(name, labels, x.shape[0], x.device)
    uniq, inverse = torch.unique(labels, return_inverse=True)
    if len(uniq) < min_classes:
        raise ValueError(f"{name} must hold at least {min_classes} classes, got {len(uniq)}")
    return inverse, len(uniq)


def _class_means(x: Tensor, idx: Tensor, num: int) -> tuple[Tensor, Tensor]:
    counts = torch.bincount(idx, minlength=num)
    sums = torch.zeros(num, x.shape[1], dtype=x.dtype, device=x.device).index_add(0, idx, x)
    return sums / counts[:, None].to(x.dtype), counts


def alignment(x: Tensor, y: Tensor, alpha: float = 2.0, *, normalize: bool = True) -> Tensor:
    r"""Alignment of positive pairs (Wang & Isola 2020):

    .. math::  \mathcal L_{\text{align}} = \mathbb E_{(x,y)\sim p_{\text{pos}}}
               \| f(x) - f(y) \|_2^{\alpha}

    over the rows ``(x_i, y_i)``; ``f`` is the L2-normalised embedding (``normalize=True``).
    Lower is better.

    Example:
        >>> import torch
        >>> x = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
        >>> round(float(alignment(x, torch.tensor([[0.0, 1.0], [0.0, 2.0]]))), 4)  # |(1,-1)|^2/2
        1.0
    """
    x = _points("x", x, normalize)
    y = _points("y", y, normalize)
    _paired(x, y)
    check_positive_scalar("alpha", alpha)
    return (x - y).norm(dim=1).pow(alpha).mean()


def uniformity(
    x: Tensor, t: float = 2.0, *, normalize: bool = True, chunk_size: int = 4096
) -> Tensor:
    r"""Uniformity (Wang & Isola 2020): the log of the mean Gaussian potential over all pairs,

    .. math::  \mathcal L_{\text{uniform}} = \log \frac{2}{N(N-1)} \sum_{i<j}
               e^{-t \| f(x_i) - f(x_j) \|_2^2}

    (the ``pdist`` form of their code), computed as a log-sum-exp over row blocks of
    ``chunk_size``, so memory is ``O(chunk_size x N)``.  Lower is more uniform.

    Example:
        >>> import torch
        >>> x = torch.randn(2, 4)
        >>> u = uniformity(torch.stack([x[0], -x[0]]))      # antipodal: distance^2 = 4
        >>> round(float(u), 4)
        -8.0
    """
    x = _points("x", x, normalize)
    check_positive_scalar("t", t)
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be an int >= 1, got {chunk_size!r}")
    n = x.shape[0]
    if n < 2:
        raise ValueError(f"x needs at least 2 rows for pairwise distances, got {n}")
    sq = (x * x).sum(dim=1)
    parts = []
    for r0 in range(0, n, chunk_size):
        r1 = min(n, r0 + chunk_size)
        d2 = (sq[r0:r1, None] + sq[None, :] - 2.0 * (x[r0:r1] @ x.T)).clamp(min=0)
        logits = -t * d2
        rows = torch.arange(r0, r1, device=x.device)
        self_pair = rows[:, None] == torch.arange(n, device=x.device)[None, :]
        logits = logits.masked_fill(self_pair, torch.finfo(logits.dtype).min)
        parts.append(torch.logsumexp(logits.flatten(), dim=0))
    return torch.logsumexp(torch.stack(parts), dim=0) - math.log(n * (n - 1))


def modality_gap(x: Tensor, y: Tensor) -> Tensor:
    r"""Modality gap (Liang et al. 2022; the "contrastive gap" of Fahim et al. 2024): the
    distance between the centroids of the two modalities' L2-normalised embeddings,

    .. math::  \Big\| \frac1N\sum_i \frac{x_i}{\|x_i\|} - \frac1M\sum_j \frac{y_j}{\|y_j\|}
               \Big\|_2 .

    Example:
        >>> import torch
        >>> float(modality_gap(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 2.0]])))
        1.4142135381698608
    """
    x = _points("x", x, True)
    y = _points("y", y, True)
    check_same_dim(("x", "y"), (x, y))
    return (x.mean(dim=0) - y.mean(dim=0)).norm()


def effective_rank(x: Tensor, *, center: bool = False) -> Tensor:
    r"""Effective rank (Roy & Vetterli 2007): :math:`\exp H(p)` with :math:`p_k = \sigma_k /
    \sum_l \sigma_l` the normalised singular values of ``x`` (of ``x`` minus its mean row when
    ``center``) and :math:`H` the Shannon entropy (:math:`0 \log 0 = 0`).  Between 1 and
    ``min(N, D)``; a collapsed embedding has effective rank near 1.

    Example:
        >>> import torch
        >>> round(float(effective_rank(torch.eye(5))), 4)
        5.0
    """
    x = _points("x", x, False)
    if center:
        x = x - x.mean(dim=0, keepdim=True)
    s = torch.linalg.svdvals(x)
    total = s.sum()
    if float(total) == 0:
        raise ValueError("x is all zeros (after centering): its effective rank is undefined")
    p = s / total
    h = -torch.where(p > 0, p * torch.log(p.clamp(min=torch.finfo(p.dtype).tiny)), 0.0).sum()
    return h.exp()


@dataclass(frozen=True)
class NeuralCollapse:
    """Neural-collapse statistics; every field is 0 at perfect collapse onto the frame.

    Attributes:
        nc1: within-class variability :math:`\\mathrm{tr}(\\Sigma_W \\Sigma_B^\\dagger) / C`.
        equinorm: coefficient of variation of :math:`\\|\\mu_c - \\mu_G\\|` (std / mean).
        equiangularity: std of :math:`\\cos(\\mu_c - \\mu_G, \\mu_{c'} - \\mu_G)`, ``c != c'``.
        max_equiangularity: mean of :math:`|\\cos(\\cdot,\\cdot) + 1/(C-1)|`, ``c != c'``.
        etf_distance: distance of the centred means' normalised Gram to the simplex ETF's.
        orthogonal_frame_distance: distance of the uncentred means' normalised Gram to an
            orthogonal frame's, :math:`\\| G/\\|G\\|_F - I/\\sqrt C \\|_F`.

    Example:
        >>> import torch
        >>> means = torch.eye(3) * 5                  # three orthogonal class means
        >>> x = means.repeat_interleave(4, 0) + 0.01 * torch.randn(12, 3)
        >>> nc = neural_collapse(x, torch.arange(3).repeat_interleave(4))
        >>> bool(nc.nc1 < 1e-3), bool(nc.orthogonal_frame_distance < 1e-2)
        (True, True)
    """

    nc1: Tensor
    equinorm: Tensor
    equiangularity: Tensor
    max_equiangularity: Tensor
    etf_distance: Tensor
    orthogonal_frame_distance: Tensor


def neural_collapse(features: Tensor, labels: Tensor) -> NeuralCollapse:
    r"""Neural-collapse measures (Papyan, Han & Donoho 2020) and the orthogonal-frame check of
    Kini et al. 2023 (SupCon with a final ReLU learns an orthogonal frame, even under imbalance).

    With class means :math:`\mu_c`, global mean :math:`\mu_G` (of all samples),
    :math:`\Sigma_W = \frac1N\sum_i (h_i-\mu_{y_i})(h_i-\mu_{y_i})^\top`,
    :math:`\Sigma_B = \frac1C\sum_c (\mu_c-\mu_G)(\mu_c-\mu_G)^\top`, centred means
    :math:`M = [\mu_c - \mu_G]_c` and uncentred :math:`U = [\mu_c]_c`:

    - NC1 :math:`= \mathrm{tr}(\Sigma_W\Sigma_B^\dagger)/C`;
    - equinorm :math:`= \mathrm{std}_c \|M_c\| / \mathrm{mean}_c \|M_c\|`;
    - equiangularity :math:`= \mathrm{std}_{c\ne c'} \cos(M_c, M_{c'})`, max-equiangularity
      :math:`= \mathrm{mean}_{c\ne c'} |\cos(M_c, M_{c'}) + \frac{1}{C-1}|`;
    - ETF distance :math:`= \| \frac{M^\top M}{\|M^\top M\|_F} - \frac{I - \mathbf 1\mathbf
      1^\top / C}{\sqrt{C-1}} \|_F`; OF distance :math:`= \| \frac{U^\top U}{\|U^\top U\|_F} -
      \frac{I}{\sqrt C} \|_F`.

    Standard deviations are unbiased, over the ``C`` norms and the ``C(C-1)`` ordered pairs.
    Not differentiable (uses a pseudo-inverse); needs at least 2 classes.

    Example:
        >>> import torch
        >>> h = torch.eye(3).repeat(4, 1)                  # 3 classes on an orthogonal frame
        >>> nc = neural_collapse(h, torch.arange(3).repeat(4))
        >>> round(float(nc.nc1), 6), round(float(nc.orthogonal_frame_distance), 6)
        (0.0, 0.0)
    """
    h = _points("features", features, False).detach()
    idx, c = _classes("labels", labels, h, min_classes=2)
    n = h.shape[0]
    mu, _ = _class_means(h, idx, c)
    mu_g = h.mean(dim=0)
    within = h - mu[idx]
    sigma_w = within.T @ within / n
    m = mu - mu_g
    sigma_b = m.T @ m / c
    nc1 = torch.trace(sigma_w @ torch.linalg.pinv(sigma_b, hermitian=True)) / c
    norms = m.norm(dim=1)
    equinorm = norms.std() / norms.mean()
    cos = F.normalize(m, dim=1) @ F.normalize(m, dim=1).T
    off = cos[~torch.eye(c, dtype=torch.bool, device=h.device)]
    gram = m @ m.T
    etf = (torch.eye(c, dtype=h.dtype, device=h.device) - 1.0 / c) / math.sqrt(c - 1)
    gram_u = mu @ mu.T
    of = torch.eye(c, dtype=h.dtype, device=h.device) / math.sqrt(c)
    return NeuralCollapse(
        nc1=nc1,
        equinorm=equinorm,
        equiangularity=off.std(),
        max_equiangularity=(off + 1.0 / (c - 1)).abs().mean(),
        etf_distance=(gram / gram.norm() - etf).norm(),
        orthogonal_frame_distance=(gram_u / gram_u.norm() - of).norm(),
    )


def class_collapse(
    x: Tensor, labels: Tensor, subclasses: Tensor, *, normalize: bool = False
) -> Tensor:
    r"""Class collapse (Xue et al. 2023, "Which features are learnt by contrastive learning?"):
    how little of a class's spread tells its subclasses apart.

    For each class :math:`c` with at least two subclasses :math:`s`, with class mean
    :math:`\mu_c` and subclass means :math:`\mu_s`,

    .. math::  \mathrm{collapse} = 1 - \frac{1}{|\mathcal C|}\sum_c
               \frac{\sum_{s \subset c} n_s \|\mu_s - \mu_c\|^2}{\sum_{i \in c}\|x_i - \mu_c\|^2}

    1 when every subclass has the same mean (collapsed), 0 when each subclass is a point.  A
    class whose items all coincide counts as collapsed.

    Example:
        >>> import torch
        >>> x = torch.tensor([[0.0, 1.0], [0.0, -1.0], [5.0, 1.0], [5.0, -1.0]])
        >>> cls, sub = torch.zeros(4, dtype=torch.long), torch.tensor([0, 0, 1, 1])
        >>> round(float(class_collapse(x, cls, sub)), 4)     # subclasses apart along dim 0
        0.1379
    """
    x = _points("x", x, normalize)
    cls, num_c = _classes("labels", labels, x)
    sub = check_labels("subclasses", subclasses, x.shape[0], x.device)
    pair, pair_idx = torch.unique(torch.stack([cls, sub]), dim=1, return_inverse=True)
    mu_c, _ = _class_means(x, cls, num_c)
    mu_s, n_s = _class_means(x, pair_idx, pair.shape[1])
    owner = pair[0]
    between = torch.zeros(num_c, dtype=x.dtype, device=x.device).index_add(
        0, owner, n_s.to(x.dtype) * (mu_s - mu_c[owner]).pow(2).sum(dim=1)
    )
    total = torch.zeros(num_c, dtype=x.dtype, device=x.device).index_add(
        0, cls, (x - mu_c[cls]).pow(2).sum(dim=1)
    )
    num_sub = torch.bincount(owner, minlength=num_c)
    used = num_sub >= 2
    if not bool(used.any()):
        raise ValueError("no class of labels has two or more subclasses")
    ratio = torch.where(total > 0, between / total.clamp(min=torch.finfo(x.dtype).tiny), 0.0)
    return 1.0 - ratio[used].mean()


def representation_harm(x: Tensor, groups: Tensor) -> Tensor:
    r"""Group-wise similarity of representations, the measure behind *representation harm*
    (Maity et al. 2023): contrastive learning on under-represented data collapses a minority
    group's representations onto some majority group.

    .. math::  H_{ab} = \operatorname{mean}_{i \in a,\, j \in b,\, i \ne j}
               \cos(x_i, x_j)

    A minority row :math:`a` whose off-diagonal :math:`H_{ab}` approaches its diagonal
    :math:`H_{aa}` has collapsed onto group :math:`b`; compare with the same matrix of a model
    trained on balanced data.  Groups are ordered by sorted id; the diagonal of a one-member
    group is NaN (no pair).

    Returns:
        ``(G, G)`` matrix.

    Example:
        >>> import torch
        >>> x = torch.tensor([[1.0, 0.0], [1.0, 0.1], [0.0, 1.0]])
        >>> representation_harm(x, torch.tensor([0, 0, 1])).round(decimals=3)
        tensor([[0.9950, 0.0500],
                [0.0500,    nan]])
    """
    z = _points("x", x, True)
    g, num = _classes("groups", groups, z)
    sums = torch.zeros(num, z.shape[1], dtype=z.dtype, device=z.device).index_add(0, g, z)
    counts = torch.bincount(g, minlength=num).to(z.dtype)
    self_sq = torch.zeros(num, dtype=z.dtype, device=z.device).index_add(0, g, (z * z).sum(1))
    pair_sums = sums @ sums.T - torch.diag(self_sq)
    pairs = counts[:, None] * counts[None, :] - torch.diag(counts)
    return pair_sums / pairs


def tolerance(x: Tensor, labels: Tensor) -> Tensor:
    r"""Tolerance (Wang & Liu 2021, "Understanding the Behaviour of Contrastive Loss"): the mean
    cosine similarity of same-class pairs,

    .. math::  T = \mathbb E\,[\, f(x)^\top f(y) \mid l(x) = l(y),\ x \ne y \,]

    Together with :func:`uniformity` it exposes the uniformity-tolerance dilemma that the
    temperature trades off: small temperatures make embeddings uniform but intolerant to
    semantically similar samples.

    Example:
        >>> import torch
        >>> x = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
        >>> float(tolerance(x, torch.tensor([0, 0, 1, 1])))
        0.0
    """
    z = _points("x", x, True)
    g, num = _classes("labels", labels, z)
    sums = torch.zeros(num, z.shape[1], dtype=z.dtype, device=z.device).index_add(0, g, z)
    counts = torch.bincount(g, minlength=num).to(z.dtype)
    self_sq = torch.zeros(num, dtype=z.dtype, device=z.device).index_add(0, g, (z * z).sum(1))
    pairs = (counts * (counts - 1)).sum()
    if float(pairs) == 0:
        raise ValueError("no class of labels has two members: tolerance needs same-class pairs")
    return ((sums * sums).sum(dim=1) - self_sq).sum() / pairs


def class_center_similarity(x: Tensor, labels: Tensor) -> Tensor:
    r"""Inner products of class centres of the normalised embeddings, :math:`\mu_k^\top \mu_l`
    with :math:`\mu_k = \mathbb E[f(x) \mid y = k]` (Huang et al. 2023, "Towards the
    Generalization of Contrastive Self-Supervised Learning").

    Their bound on downstream error needs *divergent class centres*: a small
    :math:`\max_{k \ne l} \mu_k^\top \mu_l` (read it off the off-diagonal), together with good
    :func:`alignment` of positives.  Classes are ordered by sorted label.

    Returns:
        ``(C, C)`` matrix.

    Example:
        >>> import torch
        >>> x = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
        >>> class_center_similarity(x, torch.tensor([0, 0, 1])).tolist()
        [[1.0, 0.0], [0.0, 1.0]]
    """
    z = _points("x", x, True)
    g, num = _classes("labels", labels, z)
    mu, _ = _class_means(z, g, num)
    return mu @ mu.T


def info_nce_mi_bound(
    query: Tensor,
    key: Tensor,
    *,
    temperature: float = 0.07,
    similarity: str = "cosine",
) -> Tensor:
    r"""The InfoNCE lower bound on the mutual information of paired views (van den Oord et al.
    2018), :math:`I(X; Y) \ge \log N - \mathcal L_{\text{InfoNCE}}`, with ``N`` keys and query
    ``i`` paired with key ``i``.

    A diagnostic for the sufficiency view of contrastive learning (Lin & Mei 2025, "A
    Statistical Theory of Contrastive Learning via Approximate Sufficient Statistics"): an
    encoder is approximately sufficient when its bound approaches that of the best encoder;
    the bound can never exceed :math:`\log N`.

    Example:
        >>> import torch
        >>> x = torch.randn(64, 16)
        >>> bound = info_nce_mi_bound(x, x, temperature=0.05)
        >>> 0 < float(bound) <= math.log(64)
        True
    """
    from contrastkit.functional import info_nce

    query = check_embeddings("query", query)
    key = check_embeddings("key", key)
    with torch.no_grad():
        loss = info_nce(query, key, temperature=temperature, similarity=similarity)
    return math.log(key.shape[0]) - loss
