"""Negatives from a past model: the symmetric contrastive loss of Sy-CON (Cha, Cho & Moon 2023)
for continual self-supervised learning."""

from __future__ import annotations

import torch
from torch import Tensor

from contrastkit._validation import check_embeddings, check_same_dim
from contrastkit.distributed import row_offset
from contrastkit.functional import info_nce

__all__ = ["sycon_loss"]


def sycon_loss(
    current: Tensor,
    current_positive: Tensor,
    past_positive: Tensor,
    *,
    predicted: Tensor | None = None,
    negatives: Tensor | None = None,
    past_negatives: Tensor | None = None,
    temperature: float | Tensor = 0.2,
    similarity: str = "cosine",
    distributed: bool = False,
) -> Tensor:
    r"""Sy-CON (Cha, Cho & Moon 2023): a plasticity and a stability InfoNCE term with symmetric
    dependence on the current and the past model's negatives.

    For sample :math:`i` with current-model embeddings :math:`z_i` (view 1) and :math:`z'_i`
    (view 2), past-model embedding :math:`p_i` (view 2, from a frozen copy of the model at the
    end of the previous task, see :func:`~contrastkit.negatives.frozen_copy`), and
    :math:`h_i = g(z_i)` the current embedding mapped to the past space (a predictor;
    :math:`h = z` without one)::

        L_plast(i) = -log exp(s(z_i, z'_i)/t) / D_plast(i)
        D_plast(i) = sum_j exp(s(z_i, z'_j)/t) + sum_{j != i} exp(s(z_i, p_j)/t)
        L_stab(i)  = -log exp(s(h_i, p_i)/t) / D_stab(i)
        D_stab(i)  = sum_j exp(s(h_i, p_j)/t) + sum_{j != i} exp(s(h_i, z'_j)/t)
        L = mean_i L_plast(i) + mean_i L_stab(i)

    The plasticity term learns the new task with the past model's embeddings as extra negatives;
    the stability term keeps the current model close to the past one with the current model's
    embeddings as extra negatives.  A sample's own embedding from the other model is not its
    negative.  Queues of both models (MoCo-style implementation) enter both denominators through
    ``negatives`` (current model) and ``past_negatives`` (past model).

    Args:
        current: ``(B, D)`` :math:`z`, current model, first view (gets gradients).
        current_positive: ``(B, D)`` :math:`z'`, current (or momentum) model, second view.
        past_positive: ``(B, D)`` :math:`p`, past model, second view (typically detached).
        predicted: ``(B, D)`` :math:`h = g(z)`; defaults to ``current``.
        negatives, past_negatives: ``(M, D)`` extra negatives of the current / past model.
        temperature, similarity, distributed: as in :func:`contrastkit.functional.info_nce`.

    Example:
        >>> import torch
        >>> z, z2, p = torch.randn(8, 16), torch.randn(8, 16), torch.randn(8, 16)
        >>> sycon_loss(z, z2, p).shape
        torch.Size([])
    """
    current = check_embeddings("current", current)
    current_positive = check_embeddings("current_positive", current_positive)
    past_positive = check_embeddings("past_positive", past_positive)
    predicted = current if predicted is None else check_embeddings("predicted", predicted)
    tensors = (current, current_positive, past_positive, predicted)
    check_same_dim(("current", "current_positive", "past_positive", "predicted"), tensors)
    b = current.shape[0]
    for name, t in zip(
        ("current_positive", "past_positive", "predicted"), tensors[1:], strict=True
    ):
        if t.shape[0] != b:
            raise ValueError(f"{name} must have {b} rows like current, got {t.shape[0]}")
    extra = []
    for name, t in (("negatives", negatives), ("past_negatives", past_negatives)):
        if t is not None:
            extra.append(check_embeddings(name, t))
            check_same_dim(("current", name), (current, t))
    shared = torch.cat(extra) if extra else None
    # Keys on each rank: [own-model positives; other model's embeddings].  Sample ids pair query
    # i with its own-model key (in global coordinates when distributed, where every rank's keys
    # are concatenated in rank order); the pair (i, its other-model embedding) is excluded.
    offset, total = row_offset(b)[:2] if distributed else (0, b)
    ids = offset + torch.arange(b, device=current.device)
    key_ids = torch.cat([ids, -1 - ids])
    exclude = torch.zeros(b, 2 * total, dtype=torch.bool, device=current.device)
    exclude[torch.arange(b), 2 * offset + b + torch.arange(b)] = True
    common = dict(
        labels=ids,
        key_labels=key_ids,
        exclude=exclude,
        negatives=shared,
        temperature=temperature,
        similarity=similarity,
        distributed=distributed,
    )
    plasticity = info_nce(current, torch.cat([current_positive, past_positive]), **common)
    stability = info_nce(predicted, torch.cat([past_positive, current_positive]), **common)
    return plasticity + stability
