"""The dense engine: materialise the ``B x N`` logits and reduce them row by row.

The reference against which every other engine is tested; also the fastest choice for small
batches.  Logits are computed in float32 (float64 for float64 inputs), whatever the input dtype.
"""

from __future__ import annotations

import torch
from torch import Tensor

from contrastkit.objectives.infonce import InfoNCESpec, apply_margin, infonce_row_losses
from contrastkit.objectives.sigmoid import sigmoid_row_sums
from contrastkit.pairing import Pairing
from contrastkit.similarity import pairwise_similarity, prepare, rowwise_similarity


def extra_negative_logits(
    q: Tensor,
    negatives: Tensor | None,
    shared_negatives: Tensor | None,
    scale: float | Tensor,
    similarity: str,
) -> Tensor | None:
    """Logits of per-query ``(B, K, D)`` and shared ``(M, D)`` negatives, ``(B, K + M)``."""
    parts = []
    if negatives is not None:
        parts.append(rowwise_similarity(q, prepare(negatives, similarity), similarity) * scale)
    if shared_negatives is not None:
        n = prepare(shared_negatives, similarity)
        parts.append(pairwise_similarity(q, n, similarity) * scale)
    if not parts:
        return None
    return torch.cat(parts, dim=1)


def infonce_rows(
    query: Tensor,
    key: Tensor,
    pairing: Pairing,
    scale: float | Tensor,
    spec: InfoNCESpec,
    negatives: Tensor | None = None,
    shared_negatives: Tensor | None = None,
    both_directions: bool = False,
) -> list[tuple[Tensor, Tensor]]:
    q = prepare(query, spec.similarity)
    k = prepare(key, spec.similarity)
    sim = pairwise_similarity(q, k, spec.similarity)
    weights, exclude = pairing.dense(dtype=sim.dtype)
    logits = apply_margin(sim, weights, scale, spec.margin)
    extra = extra_negative_logits(q, negatives, shared_negatives, scale, spec.similarity)
    out = [infonce_row_losses(logits, weights, exclude, extra, spec.variant, spec.decoupled)]
    if both_directions:
        ex_t = None if exclude is None else exclude.T
        out.append(
            infonce_row_losses(logits.T, weights.T, ex_t, None, spec.variant, spec.decoupled)
        )
    return out


def sigmoid_rows(
    query: Tensor,
    key: Tensor,
    pairing: Pairing,
    scale: float | Tensor,
    bias: float | Tensor,
    similarity: str,
) -> Tensor:
    q = prepare(query, similarity)
    k = prepare(key, similarity)
    sim = pairwise_similarity(q, k, similarity)
    targets, exclude = pairing.dense(dtype=sim.dtype)
    return sigmoid_row_sums(sim, targets, exclude, scale, bias)
