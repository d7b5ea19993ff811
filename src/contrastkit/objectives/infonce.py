"""The InfoNCE family as per-row reductions over a logits row and its pairing.

For query ``i`` with logits ``l_ij = scale * (s_ij - margin * [w_ij > 0])`` over keys ``j``,
positive weights ``w_ij >= 0`` and extra-negative logits ``l_ik`` (hard negatives, queue):

- the denominator set ``A(i)`` is every key not excluded (minus the positives when
  ``decoupled``), plus the extra negatives, and ``LSE_i = log sum_{a in A(i)} exp(l_ia)``;
- ``variant="out"`` (SupCon's L_out, CLIP / InfoNCE with one positive):
  ``loss_i = LSE_i - sum_j w_ij l_ij / sum_j w_ij``;
- ``variant="in"`` (SupCon's L_in): ``loss_i = LSE_i - log(sum_j w_ij exp(l_ij) / sum_j w_ij)``.

A row is *valid* when it has a positive (``sum_j w_ij > 0``) and a non-empty denominator;
invalid rows are left out of the mean.  Every quantity is a sum, a weighted sum or a
log-sum-exp over keys, so a streaming engine computes it tile by tile.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

VARIANTS = ("out", "in")


@dataclass(frozen=True)
class InfoNCESpec:
    """The options of an InfoNCE-family objective that engines must honour."""

    similarity: str = "cosine"
    variant: str = "out"
    decoupled: bool = False
    margin: float = 0.0


def masked_fill_value(dtype: torch.dtype) -> float:
    """The most negative finite value of ``dtype``: masks without overflow or ``inf * 0``."""
    return torch.finfo(dtype).min


def apply_margin(sim: Tensor, weights: Tensor, scale: float | Tensor, margin: float) -> Tensor:
    """Logits ``scale * (sim - margin * [w > 0])`` (additive margin on positive pairs)."""
    if margin:
        sim = sim - margin * (weights > 0).to(sim.dtype)
    return sim * scale


def infonce_row_losses(
    logits: Tensor,
    weights: Tensor,
    exclude: Tensor | None,
    extra_logits: Tensor | None,
    variant: str,
    decoupled: bool,
) -> tuple[Tensor, Tensor]:
    """Per-row losses ``(B,)`` and the validity mask ``(B,)`` of a dense block of logits.

    ``weights`` must already be 0 on excluded pairs (as :meth:`Pairing.tile` returns them).
    Invalid rows get a loss of 0.
    """
    fill = masked_fill_value(logits.dtype)
    if exclude is None and not decoupled:
        den_logits = logits
        has_den = torch.full_like(logits[:, 0], logits.shape[1] > 0, dtype=torch.bool)
    else:
        in_den = torch.ones_like(logits, dtype=torch.bool) if exclude is None else ~exclude
        if decoupled:
            in_den = in_den & (weights <= 0)
        den_logits = logits.masked_fill(~in_den, fill)
        has_den = in_den.any(dim=1)
    if extra_logits is not None and extra_logits.shape[1] > 0:
        den_logits = torch.cat([den_logits, extra_logits.to(logits.dtype)], dim=1)
        has_den = torch.ones_like(has_den)
    lse = torch.logsumexp(den_logits, dim=1)
    sum_w = weights.sum(dim=1)
    valid = (sum_w > 0) & has_den
    safe_sum_w = torch.where(valid, sum_w, torch.ones_like(sum_w))
    if variant == "out":
        positive_term = (weights * logits).sum(dim=1) / safe_sum_w
    elif variant == "in":
        tiny = torch.finfo(logits.dtype).tiny
        pos_logits = torch.where(weights > 0, logits + weights.clamp_min(tiny).log(), fill)
        positive_term = torch.logsumexp(pos_logits, dim=1) - safe_sum_w.log()
    else:
        raise ValueError(f"variant must be one of {list(VARIANTS)}, got {variant!r}")
    loss = torch.where(valid, lse - positive_term, torch.zeros_like(lse))
    return loss, valid
