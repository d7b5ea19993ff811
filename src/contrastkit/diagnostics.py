"""Numbers about a contrastive objective itself (not about the embeddings; see metrics).

- :func:`infonce_mutual_information_bound`: InfoNCE's lower bound on the mutual information of
  the two views, ``I >= log N - L`` (van den Oord et al. 2018; Poole et al. 2019), the quantity
  whose near-tightness the sufficient-statistics theory (Oko et al.; Lin & Mei 2025) reads as
  approximate sufficiency of the encoder.

Scaling-law fits of loss curves (Ghorbani et al. 2021):
:func:`contrastkit.metrics.fit_power_law`.
"""

from __future__ import annotations

import math

from torch import Tensor

__all__ = ["infonce_mutual_information_bound"]


def infonce_mutual_information_bound(loss: float | Tensor, num_candidates: int) -> float:
    """``log(num_candidates) - loss`` (nats): the InfoNCE lower bound on I(view1; view2).

    ``loss`` is a mean InfoNCE loss with one positive among ``num_candidates`` keys per row.

    Example:
        >>> round(infonce_mutual_information_bound(1.0, 256), 4)
        4.5452
    """
    if num_candidates < 2:
        raise ValueError(f"num_candidates must be >= 2, got {num_candidates}")
    return math.log(num_candidates) - float(loss)
