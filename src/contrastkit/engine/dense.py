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


def _diagonal_row_losses(logits: Tensor, extra: Tensor | None) -> tuple[Tensor, Tensor]:
    """Fast path for one positive per row on the diagonal, nothing excluded: ``LSE_i - l_ii``
    (both variants agree with a single positive).  Rows past the diagonal have no positive."""
    b, n = logits.shape
    den = logits if extra is None else torch.cat([logits, extra.to(logits.dtype)], dim=1)
    lse = torch.logsumexp(den, dim=1)
    m = min(b, n)
    valid = torch.arange(b, device=logits.device) < m
    if m == b:
        return lse - logits.diagonal(), valid
    loss = torch.cat([lse[:m] - logits.diagonal(), torch.zeros_like(lse[m:])])
    return loss, valid


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
    extra = extra_negative_logits(q, negatives, shared_negatives, scale, spec.similarity)
    if pairing.kind == "diagonal" and pairing.exclude is None and not spec.decoupled:
        if spec.margin:
            eye = torch.eye(*sim.shape, dtype=sim.dtype, device=sim.device)
            sim = sim - spec.margin * eye
        logits = sim * scale
        out = [_diagonal_row_losses(logits, extra)]
        if both_directions:
            out.append(_diagonal_row_losses(logits.T, None))
        return out
    weights, exclude = pairing.dense(dtype=sim.dtype)
    logits = apply_margin(sim, weights, scale, spec.margin)
    out = [infonce_row_losses(logits, weights, exclude, extra, spec.variant, spec.decoupled)]
    if both_directions:
        ex_t = None if exclude is None else exclude.T
        reverse = infonce_row_losses(logits.T, weights.T, ex_t, None, spec.variant, spec.decoupled)
        out.append(reverse)
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
