"""Prototype-based contrast: embeddings against class, instance, cluster or knowledge prototypes.

One equation covers the papers: for an embedding ``z_i`` whose prototype is ``c_{y_i}`` among
``K`` prototypes, with a temperature per prototype ``tau_k`` (a single ``tau`` usually)::

    L_i = -log( exp(s(z_i, c_{y_i}) / tau_{y_i}) / sum_k exp(s(z_i, c_k) / tau_k) )

- class prototypes kept as running means (:class:`PrototypeContrastLoss`), or computed from the
  batch (:func:`class_prototypes`);
- instance prototypes across frames (CAVIS's prototypical cross-frame contrastive loss: means of
  an instance's embeddings in one frame, contrasted with its embeddings in the next);
- cross-modal prototypes (MMG-Ego4D: prototypes from one modality's support set, queries from
  another, negative squared euclidean similarity as in prototypical networks);
- knowledge prototypes given from outside (RAD: guideline text embeddings per disease);
- cluster prototypes with per-cluster concentration (PCL's ProtoNCE, used by MEOW / AdaMEOW):
  :func:`prototype_concentration`.

The loss is an InfoNCE row reduction over ``K`` keys (a log-sum-exp), computed densely: ``K`` is
small next to a batch of keys.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from contrastkit._validation import (
    check_choice,
    check_embeddings,
    check_labels,
    check_positive_scalar,
    check_same_dim,
    check_tensor,
)
from contrastkit.objectives.infonce import infonce_row_losses
from contrastkit.similarity import SIMILARITIES, compute_dtype, pairwise_similarity, prepare

__all__ = [
    "class_prototypes",
    "prototype_concentration",
    "prototype_info_nce",
    "PrototypeContrastLoss",
]


def class_prototypes(
    features: Tensor, labels: Tensor, num_classes: int | None = None
) -> tuple[Tensor, Tensor]:
    r"""Per-class (or per-instance) mean embeddings ``c_k = 1/n_k sum_{y_i = k} z_i``.

    Differentiable w.r.t. ``features``.  Returns the ``(K, D)`` means (zero rows for classes
    absent from the batch) and the ``(K,)`` counts.

    Example:
        >>> import torch
        >>> protos, counts = class_prototypes(torch.eye(3), torch.tensor([0, 0, 1]), 3)
        >>> protos
        tensor([[0.5000, 0.5000, 0.0000],
                [0.0000, 0.0000, 1.0000],
                [0.0000, 0.0000, 0.0000]])
        >>> counts
        tensor([2., 1., 0.])
    """
    features = check_embeddings("features", features)
    labels = check_labels("labels", labels, features.shape[0], features.device)
    if bool((labels < 0).any()):
        raise ValueError("labels must be >= 0")
    k = int(labels.max()) + 1 if num_classes is None else int(num_classes)
    if int(labels.max()) >= k:
        raise ValueError(f"labels must lie in [0, {k}), got a label {int(labels.max())}")
    dtype = compute_dtype(features.dtype)
    sums = torch.zeros(k, features.shape[1], dtype=dtype, device=features.device)
    sums = sums.index_add(0, labels, features.to(dtype))
    counts = torch.zeros(k, dtype=dtype, device=features.device).index_add(
        0, labels, torch.ones_like(labels, dtype=dtype)
    )
    return sums / counts.clamp_min(1)[:, None], counts


@torch.no_grad()
def prototype_concentration(
    features: Tensor,
    labels: Tensor,
    prototypes: Tensor,
    *,
    alpha: float = 10.0,
    mean_temperature: float | None = None,
    clip_percentiles: tuple[float, float] | None = None,
) -> Tensor:
    r"""Per-prototype concentration of PCL (Li, Zhou, Xiong & Hoi 2021), the temperatures of
    ProtoNCE as used by MEOW / AdaMEOW (Yu et al. 2023)::

        phi_k = sum_{y_i = k} || z_i - c_k ||_2 / ( n_k log(n_k + alpha) )

    Prototypes with fewer than two members get the largest ``phi`` of the others (absent ones
    too); with ``mean_temperature`` the result is rescaled to that mean, as PCL does.  PCL's
    official code also clamps ``phi`` to its 10th and 90th percentiles before rescaling ("for
    stability", not in the paper's equation): ``clip_percentiles=(10, 90)`` does that (linear
    interpolation, as ``numpy.percentile``).  Computed without gradient.

    Example:
        >>> import torch
        >>> z, y = torch.randn(10, 4), torch.tensor([0] * 5 + [1] * 5)
        >>> c, _ = class_prototypes(z, y)
        >>> prototype_concentration(z, y, c, mean_temperature=0.2).mean()
        tensor(0.2000)
    """
    features = check_embeddings("features", features)
    prototypes = check_embeddings("prototypes", prototypes)
    check_same_dim(("features", "prototypes"), (features, prototypes))
    labels = check_labels("labels", labels, features.shape[0], features.device)
    k = prototypes.shape[0]
    if bool((labels < 0).any()) or bool((labels >= k).any()):
        raise ValueError(f"labels must lie in [0, {k})")
    check_positive_scalar("alpha", alpha)
    dtype = compute_dtype(features.dtype)
    z, c = features.to(dtype), prototypes.to(dtype)
    dist = (z - c[labels]).norm(dim=1)
    total = torch.zeros(k, dtype=dtype, device=z.device).index_add(0, labels, dist)
    n = torch.zeros(k, dtype=dtype, device=z.device).index_add(0, labels, torch.ones_like(dist))
    ok = n > 1
    phi = total / (n.clamp_min(1) * torch.log(n + alpha))
    if not bool(ok.any()):
        raise ValueError("no prototype has two or more members: the concentration is undefined")
    phi = torch.where(ok, phi, phi[ok].max())
    if clip_percentiles is not None:
        lo, hi = (float(v) for v in clip_percentiles)
        if not 0.0 <= lo <= hi <= 100.0:
            raise ValueError(f"clip_percentiles must satisfy 0 <= lo <= hi <= 100, got {lo, hi}")
        bounds = torch.quantile(
            phi, torch.tensor([lo, hi], dtype=phi.dtype, device=phi.device) / 100
        )
        phi = phi.clamp(bounds[0], bounds[1])
    if mean_temperature is not None:
        check_positive_scalar("mean_temperature", mean_temperature)
        phi = mean_temperature * phi / phi.mean()
    return phi


def _prototype_temperatures(
    temperature: float | Tensor, k: int, device: torch.device
) -> Tensor | float:
    if isinstance(temperature, Tensor) and temperature.numel() > 1:
        if temperature.shape != (k,):
            raise ValueError(
                f"temperature must be a scalar or one per prototype ({k},), got "
                f"{tuple(temperature.shape)}"
            )
        if not bool(torch.isfinite(temperature).all()) or bool((temperature <= 0).any()):
            raise ValueError("temperature (per prototype) must be finite and > 0")
        return temperature.to(device)
    check_positive_scalar("temperature", temperature)
    return temperature.reshape(()) if isinstance(temperature, Tensor) else float(temperature)


def prototype_info_nce(
    features: Tensor,
    prototypes: Tensor,
    labels: Tensor,
    *,
    temperature: float | Tensor = 0.1,
    similarity: str = "cosine",
    exclude: Tensor | None = None,
    reduction: str = "mean",
) -> Tensor:
    r"""Prototypical contrastive loss (ProtoNCE, Li et al. 2021) against ``K`` prototypes::

        L_i = -1/|P_i| sum_{p in P_i} log( exp(s(z_i, c_p)/tau_p) / D_i )
        D_i = sum_{k not excluded} exp(s(z_i, c_k)/tau_k)

    ``P_i = {y_i}`` for integer labels; a ``(B, K)`` multi-hot ``labels`` gives several positive
    prototypes (e.g. several findings, each with its guideline embedding, as in RAD).

    Args:
        features: ``(B, D)`` embeddings.
        prototypes: ``(K, D)`` prototypes (class means, instance means, cluster centroids,
            knowledge embeddings); gradients flow into them when they require grad.
        labels: ``(B,)`` prototype index per row, or ``(B, K)`` bool / 0-1 positives.
        temperature: a scalar, or ``(K,)`` per-prototype temperatures (PCL's concentration).
        similarity: ``"cosine"``, ``"dot"`` or ``"neg_sq_euclidean"`` (prototypical networks).
        exclude: ``(K,)`` bool, prototypes left out of every row (e.g. not yet initialised);
            rows whose positives are all excluded are left out of the mean.
        reduction: ``"mean"`` over rows with a positive, ``"sum"``, or ``"none"``.

    Example:
        >>> import torch
        >>> z, y = torch.randn(6, 8), torch.tensor([0, 1, 2, 0, 1, 2])
        >>> protos, _ = class_prototypes(z, y)
        >>> prototype_info_nce(z, protos, y, temperature=0.1).shape
        torch.Size([])
    """
    features = check_embeddings("features", features)
    prototypes = check_embeddings("prototypes", prototypes)
    check_same_dim(("features", "prototypes"), (features, prototypes))
    check_choice("similarity", similarity, SIMILARITIES)
    check_choice("reduction", reduction, ("mean", "sum", "none"))
    b, k = features.shape[0], prototypes.shape[0]
    labels = check_tensor("labels", labels)
    if labels.dim() == 1:
        labels = check_labels("labels", labels, b, features.device)
        if bool((labels < 0).any()) or bool((labels >= k).any()):
            raise ValueError(f"labels must lie in [0, {k}) (one prototype index per row)")
        weights = labels[:, None] == torch.arange(k, device=features.device)[None, :]
    elif labels.shape == (b, k):
        if labels.dtype != torch.bool and bool(((labels != 0) & (labels != 1)).any()):
            raise ValueError("(B, K) labels must be a bool or 0/1 mask of positive prototypes")
        weights = labels.to(features.device) != 0
    else:
        raise ValueError(f"labels must have shape ({b},) or ({b}, {k}), got {tuple(labels.shape)}")
    excl = None
    if exclude is not None:
        exclude = check_tensor("exclude", exclude)
        if exclude.dtype != torch.bool or exclude.shape != (k,):
            raise ValueError(f"exclude must be a bool tensor of shape ({k},)")
        excl = exclude.to(features.device)[None, :].expand(b, k)
    tau = _prototype_temperatures(temperature, k, features.device)
    z, c = prepare(features, similarity), prepare(prototypes, similarity)
    sim = pairwise_similarity(z, c, similarity)
    logits = sim / (tau[None, :].to(sim.dtype) if isinstance(tau, Tensor) and tau.dim() else tau)
    w = weights.to(sim.dtype)
    if excl is not None:
        w = w.masked_fill(excl, 0.0)
    rows, valid = infonce_row_losses(logits, w, excl, None, "out", False)
    if reduction == "none":
        return rows
    if int(valid.sum()) == 0:
        raise ValueError("no row has a positive prototype that is not excluded")
    return rows.sum() / valid.sum() if reduction == "mean" else rows.sum()


class PrototypeContrastLoss(nn.Module):
    r"""Prototypical contrast with prototypes given or kept as running means.

    ``forward(features, labels)`` contrasts every embedding with the ``num_prototypes``
    prototypes held in the buffer ``prototypes`` (saved in the state dict).  In training mode
    the buffer is first updated, without gradient, with the batch's class means (of the
    L2-normalised features for cosine similarity)::

        c_k <- m c_k + (1 - m) mean_{y_i = k} z_i      (c_k <- the batch mean the first time)

    and prototypes never seen yet are left out of the denominator.
    ``forward(features, labels, prototypes=P)`` uses ``P`` instead and leaves the buffer alone.
    See :func:`prototype_info_nce` for the loss.

    Example:
        >>> import torch
        >>> loss_fn = PrototypeContrastLoss(num_prototypes=3, dim=8, momentum=0.9)
        >>> z, y = torch.randn(6, 8, requires_grad=True), torch.tensor([0, 1, 2, 0, 1, 2])
        >>> loss_fn(z, y).backward()
        >>> bool(loss_fn.initialized.all())
        True
    """

    def __init__(
        self,
        num_prototypes: int,
        dim: int,
        temperature: float = 0.1,
        momentum: float = 0.9,
        *,
        similarity: str = "cosine",
    ) -> None:
        super().__init__()
        if num_prototypes < 1 or dim < 1:
            raise ValueError("num_prototypes and dim must be >= 1")
        if not 0.0 <= momentum < 1.0 or math.isnan(momentum):
            raise ValueError(f"momentum must lie in [0, 1), got {momentum}")
        check_positive_scalar("temperature", temperature)
        self.temperature, self.momentum = float(temperature), float(momentum)
        self.similarity = check_choice("similarity", similarity, SIMILARITIES)
        self.register_buffer("prototypes", torch.zeros(num_prototypes, dim))
        self.register_buffer("initialized", torch.zeros(num_prototypes, dtype=torch.bool))

    @torch.no_grad()
    def update(self, features: Tensor, labels: Tensor) -> None:
        """Fold the batch's class means into the running prototypes."""
        k = self.prototypes.shape[0]
        z = prepare(features.detach(), self.similarity)
        means, counts = class_prototypes(z, labels, k)
        present = counts > 0
        means = means.to(self.prototypes.dtype)
        fresh = present & ~self.initialized
        seen = present & self.initialized
        self.prototypes[fresh] = means[fresh]
        self.prototypes[seen] = (
            self.momentum * self.prototypes[seen] + (1 - self.momentum) * means[seen]
        )
        self.initialized |= present

    def forward(self, features: Tensor, labels: Tensor, prototypes: Tensor | None = None) -> Tensor:
        if prototypes is not None:
            return prototype_info_nce(
                features,
                prototypes,
                labels,
                temperature=self.temperature,
                similarity=self.similarity,
            )
        features = check_embeddings("features", features)
        dim = self.prototypes.shape[1]
        if features.shape[1] != dim:
            raise ValueError(
                f"features has {features.shape[1]} features but the module keeps "
                f"{dim}-dimensional prototypes (dim={dim})"
            )
        labels = check_labels("labels", labels, features.shape[0], features.device)
        if bool((labels < 0).any()) or bool((labels >= self.prototypes.shape[0]).any()):
            raise ValueError(f"labels must lie in [0, {self.prototypes.shape[0]})")
        if self.training:
            self.update(features, labels)
        return prototype_info_nce(
            features,
            self.prototypes,
            labels,
            temperature=self.temperature,
            similarity=self.similarity,
            exclude=~self.initialized,
        )

    def extra_repr(self) -> str:
        k, d = self.prototypes.shape
        return (
            f"num_prototypes={k}, dim={d}, temperature={self.temperature}, "
            f"momentum={self.momentum}, similarity={self.similarity!r}"
        )
