"""The dense engine: materialise the ``B x N`` logits and reduce them row by row.

The reference against which every other engine is tested; also the fastest choice for small
batches.  Logits are computed in float32 (float64 for float64 inputs), whatever the input dtype.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from contrastkit.objectives.infonce import InfoNCESpec, apply_margin, infonce_row_losses
from contrastkit.objectives.sigmoid import sigmoid_row_sums
from contrastkit.pairing import Pairing
from contrastkit.similarity import (
    no_autocast,
    pairwise_similarity,
    prepare,
    rowwise_similarity,
)


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


def _diagonal_row_losses(
    logits: Tensor, extra: Tensor | None, offset: int = 0
) -> tuple[Tensor, Tensor]:
    """Fast path for one positive per row on the diagonal, nothing excluded: ``LSE_i - l_ii``
    (both variants agree with a single positive), by the fused log-softmax of
    ``F.cross_entropy``.  Row ``i``'s positive is column ``offset + i`` (``offset``: the first
    global row of a block of rows); rows past the last column have no positive: loss 0, not
    valid."""
    b, n = logits.shape
    den = logits if extra is None else torch.cat([logits, extra.to(logits.dtype)], dim=1)
    target = torch.arange(offset, offset + b, device=logits.device)
    valid = (target >= 0) & (target < n)
    if offset < 0 or offset + b > n:
        target = target.masked_fill(~valid, -100)
    return F.cross_entropy(den, target, reduction="none", ignore_index=-100), valid


def _scaled_logits(q: Tensor, k: Tensor, scale: float | Tensor, similarity: str) -> Tensor:
    """``scale * s(q, k)``; for the bilinear similarities the scale multiplies the ``B x D``
    queries rather than the ``B x N`` product (one pass over the big matrix fewer, forward and
    backward)."""
    if similarity in ("cosine", "dot"):
        return (q * scale) @ k.T
    return pairwise_similarity(q, k, similarity) * scale


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
    with no_autocast(query.device):  # float32 logits under torch.autocast too
        q = prepare(query, spec.similarity)
        k = prepare(key, spec.similarity)
        extra = extra_negative_logits(q, negatives, shared_negatives, scale, spec.similarity)
        plain = pairing.exclude is None and not (
            pairing.exclude_self or spec.decoupled or spec.margin
        )
        if pairing.kind == "diagonal" and plain:
            # row i's positive is column offset + i (a block of the rows of a global batch: offset)
            offset = getattr(pairing, "diagonal_offset", 0)
            logits = _scaled_logits(q, k, scale, spec.similarity)
            out = [_diagonal_row_losses(logits, extra, offset)]
            if both_directions:
                out.append(_diagonal_row_losses(logits.T, None, -offset))
            return out
        sim = pairwise_similarity(q, k, spec.similarity)
        weights, exclude = pairing.dense(dtype=sim.dtype)
        logits = apply_margin(sim, weights, scale, spec.margin)
        out = [infonce_row_losses(logits, weights, exclude, extra, spec.variant, spec.decoupled)]
        if both_directions:
            ex_t = None if exclude is None else exclude.T
            reverse = infonce_row_losses(
                logits.T, weights.T, ex_t, None, spec.variant, spec.decoupled
            )
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
    with no_autocast(query.device):
        q = prepare(query, similarity)
        k = prepare(key, similarity)
        sim = pairwise_similarity(q, k, similarity)
        targets, exclude = pairing.dense(dtype=sim.dtype)
        return sigmoid_row_sums(sim, targets, exclude, scale, bias)
