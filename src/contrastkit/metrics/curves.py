r"""Loss-curve utilities: power-law fits of loss against scale.

:func:`fit_power_law` fits the laws of Ghorbani et al. 2021 ("Scaling Laws for Neural Machine
Translation"): :math:`L(N) = \beta N^{-\alpha} + L_\infty`, and their bivariate law
:math:`L(N_e, N_d) = \beta N_e^{-\alpha_e} N_d^{-\alpha_d} + L_\infty` for encoder and decoder
sizes (any number of size columns is accepted).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from contrastkit._validation import check_tensor

__all__ = ["PowerLaw", "fit_power_law"]


@dataclass(frozen=True)
class PowerLaw:
    r""":math:`L = \beta \prod_k N_k^{-\alpha_k} + L_\infty`.

    Attributes:
        beta: the scale :math:`\beta`.
        alpha: ``(K,)`` exponents, one per size column.
        l_inf: the irreducible loss :math:`L_\infty`.

    Example:
        >>> import torch
        >>> law = PowerLaw(beta=10.0, alpha=torch.tensor([0.5]), l_inf=1.0)
        >>> [round(v, 6) for v in law(torch.tensor([1.0, 100.0])).tolist()]  # 10 * N^-0.5 + 1
        [11.0, 2.0]
    """

    beta: float
    alpha: Tensor
    l_inf: float

    def __call__(self, sizes: Tensor) -> Tensor:
        """The law at ``sizes`` ``(n,)`` or ``(n, K)``."""
        s = torch.as_tensor(sizes, dtype=torch.float64)
        s = s[:, None] if s.dim() == 1 else s
        k = self.alpha.numel()
        if s.dim() != 2 or s.shape[1] != k:
            want = "(n,) or (n, 1)" if k == 1 else f"(n, {k})"
            raise ValueError(f"sizes must have shape {want} for this law, got {tuple(s.shape)}")
        return self.beta * torch.exp(-(s.log() * self.alpha).sum(dim=1)) + self.l_inf


def fit_power_law(sizes: Tensor, losses: Tensor, *, max_iter: int = 500) -> PowerLaw:
    r"""Least-squares fit of :math:`L = \beta \prod_k N_k^{-\alpha_k} + L_\infty` (Ghorbani et
    al. 2021) to measured ``losses``.

    Minimises :math:`\sum_i (\hat L_i - L_i)^2` over :math:`(\log\beta, \alpha, L_\infty)` with
    L-BFGS in float64, started from a log-linear fit with :math:`L_\infty` just below the smallest
    loss.  The law has ``K + 2`` parameters, so it needs at least ``K + 2`` points.

    Args:
        sizes: ``(n,)`` model sizes (or steps, tokens), or ``(n, K)`` for several size axes;
            all ``> 0``.
        losses: ``(n,)`` losses.

    Example:
        >>> import torch
        >>> n = torch.tensor([1e6, 3e6, 1e7, 3e7, 1e8])
        >>> law = fit_power_law(n, 50.0 * n ** -0.3 + 1.5)
        >>> round(float(law.alpha[0]), 3), round(law.l_inf, 3)
        (0.3, 1.5)
    """
    s = check_tensor("sizes", sizes).detach().to(torch.float64)
    y = check_tensor("losses", losses).detach().to(torch.float64)
    s = s[:, None] if s.dim() == 1 else s
    if s.dim() != 2 or y.dim() != 1 or s.shape[0] != y.shape[0]:
        raise ValueError(
            f"sizes must be (n,) or (n, K) and losses (n,), got {tuple(s.shape)} and "
            f"{tuple(y.shape)}"
        )
    n, k = s.shape
    if n < k + 2:
        raise ValueError(f"losses has {n} points; the law has {k + 2} parameters")
    if not bool(torch.isfinite(s).all()) or bool((s <= 0).any()):
        raise ValueError("sizes must be finite and > 0")
    if not bool(torch.isfinite(y).all()):
        raise ValueError("losses contains NaN or Inf values")
    log_s = s.log()
    # start: L_inf a little below min(L), then log(L - L_inf) linear in log N
    spread = float(y.max() - y.min())
    l0 = float(y.min()) - 0.1 * max(spread, 1e-12)
    design = torch.cat([torch.ones(n, 1, dtype=torch.float64), -log_s], dim=1)
    coef = torch.linalg.lstsq(design, (y - l0).log()[:, None]).solution.flatten()
    log_beta = coef[0].clone().requires_grad_(True)
    alpha = coef[1:].clone().requires_grad_(True)
    l_inf = torch.tensor(l0, dtype=torch.float64, requires_grad=True)
    scale = max(float(y.abs().mean()), 1e-12)
    opt = torch.optim.LBFGS(
        [log_beta, alpha, l_inf],
        lr=1.0,
        max_iter=max_iter,
        tolerance_grad=1e-14,
        tolerance_change=1e-16,
        history_size=50,
        line_search_fn="strong_wolfe",
    )

    def closure() -> Tensor:
        opt.zero_grad()
        pred = torch.exp(log_beta - (log_s * alpha).sum(dim=1)) + l_inf
        loss = ((pred - y) / scale).pow(2).mean()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    params = torch.cat([log_beta.detach()[None], alpha.detach(), l_inf.detach()[None]])
    if not bool(torch.isfinite(params).all()) or float(params[0]) > 700:
        raise ValueError(
            "the power-law fit diverged: are the size columns collinear, or the losses flat?"
        )
    beta = math.exp(float(log_beta.detach()))
    return PowerLaw(beta=beta, alpha=alpha.detach().clone(), l_inf=float(l_inf.detach()))
