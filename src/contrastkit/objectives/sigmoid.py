"""The pairwise sigmoid loss (SigLIP, Zhai et al. 2023) as per-row sums.

For logits ``x_ij = t * s_ij + b`` and targets ``y_ij`` (1 for positive pairs, 0 for negatives,
or a soft target in [0, 1]) over the pairs that are not excluded::

    row_i = -sum_j [ y_ij log sigmoid(x_ij) + (1 - y_ij) log sigmoid(-x_ij) ]

which for hard targets is ``-sum_j log sigmoid(z_ij x_ij)`` with ``z = 2y - 1``; the loss is
``sum_i row_i / B``.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def sigmoid_row_sums(
    sim: Tensor,
    targets: Tensor,
    exclude: Tensor | None,
    scale: float | Tensor,
    bias: float | Tensor,
) -> Tensor:
    """Per-row sums ``(B,)`` of the pairwise sigmoid loss over a dense block."""
    x = sim * scale + bias
    terms = -(targets * F.logsigmoid(x) + (1.0 - targets) * F.logsigmoid(-x))
    if exclude is not None:
        terms = terms.masked_fill(exclude, 0.0)
    return terms.sum(dim=1)
