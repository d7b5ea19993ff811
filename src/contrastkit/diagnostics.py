"""Numbers about a contrastive objective itself (not about the embeddings; see metrics).

- :func:`infonce_mutual_information_bound`: InfoNCE's lower bound on the mutual information of
  the two views, ``I >= log N - L`` (van den Oord et al. 2018; Poole et al. 2019), the quantity
  whose near-tightness the sufficient-statistics theory (Oko et al.; Lin & Mei 2025) reads as
  approximate sufficiency of the encoder.
- :func:`fit_power_law`: fit ``L(x) = a * x^(-b) + c`` to loss curves (scaling laws, Ghorbani
  et al. 2021), e.g. loss against model size, batch size or steps.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["infonce_mutual_information_bound", "fit_power_law"]


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


def fit_power_law(
    x: Tensor, y: Tensor, steps: int = 2000, lr: float = 0.05
) -> tuple[float, float, float]:
    r"""Least-squares fit of ``y = a x^{-b} + c`` (float64, Adam on ``log a``, ``b``, ``c``,
    initialised from a log-log line fit).  Returns ``(a, b, c)``.

    Example:
        >>> import torch
        >>> x = torch.tensor([1.0, 2, 4, 8, 16, 32])
        >>> a, b, c = fit_power_law(x, 3 * x ** -0.5 + 1)
        >>> round(b, 2), round(c, 2)
        (0.5, 1.0)
    """
    x = torch.as_tensor(x, dtype=torch.float64).flatten()
    y = torch.as_tensor(y, dtype=torch.float64).flatten()
    if x.numel() != y.numel() or x.numel() < 3:
        raise ValueError("x and y must have the same number (>= 3) of points")
    if bool((x <= 0).any()):
        raise ValueError("x must be > 0")
    c0 = float(y.min()) - 1e-3 * (float(y.max() - y.min()) + 1e-12)
    slope, intercept = (
        torch.linalg.lstsq(
            torch.stack([torch.log(x), torch.ones_like(x)], 1), torch.log(y - c0)[:, None]
        )
        .solution.flatten()
        .tolist()
    )
    log_a = torch.tensor(intercept, dtype=torch.float64, requires_grad=True)
    b = torch.tensor(-slope, dtype=torch.float64, requires_grad=True)
    c = torch.tensor(c0, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([log_a, b, c], lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        loss = ((log_a.exp() * x ** (-b) + c - y) ** 2).mean()
        loss.backward()
        opt.step()
    return float(log_a.detach().exp()), float(b.detach()), float(c.detach())
