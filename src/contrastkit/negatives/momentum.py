"""Momentum (EMA) encoders and frozen past models: where keys and negatives come from when they
are not the online encoder's (MoCo, He et al. 2020; BYOL, Grill et al. 2020; Sy-CON, Cha, Cho
& Moon 2023)."""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
from torch import nn

__all__ = ["MomentumEncoder", "momentum_update_", "cosine_momentum", "frozen_copy"]


def _unwrap(module: nn.Module) -> nn.Module:
    """The module inside DistributedDataParallel / DataParallel and ``torch.compile`` wrappers
    (in any nesting)."""
    wrappers = (nn.parallel.DistributedDataParallel, nn.DataParallel)
    while True:
        if isinstance(module, wrappers):
            module = module.module
        elif isinstance(getattr(module, "_orig_mod", None), nn.Module):  # torch.compile
            module = module._orig_mod
        else:
            return module


def _check_momentum(momentum: float) -> float:
    if isinstance(momentum, bool) or not isinstance(momentum, (int, float)):
        raise TypeError(f"momentum must be a float, got {type(momentum).__name__}")
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"momentum must lie in [0, 1], got {momentum}")
    return float(momentum)


@torch.no_grad()
def momentum_update_(target: nn.Module, online: nn.Module, momentum: float) -> None:
    r"""In place: :math:`\theta_t \leftarrow m\,\theta_t + (1 - m)\,\theta_o` for every parameter
    (He et al. 2020, eq. 2), and the buffers (BatchNorm statistics) copied from ``online``.

    ``online`` may be wrapped in DistributedDataParallel or ``torch.compile``, and may live on
    another device or in another dtype than ``target`` (an EMA copy kept on the CPU, in float32);
    the two modules must have the same parameter names and shapes.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> online, target = nn.Linear(2, 2), nn.Linear(2, 2)
        >>> momentum_update_(target, online, 0.0)  # m = 0: a copy
        >>> torch.equal(target.weight, online.weight)
        True
    """
    m = _check_momentum(momentum)
    online = _unwrap(online)
    t_params, o_params = dict(target.named_parameters()), dict(online.named_parameters())
    if t_params.keys() != o_params.keys():
        raise ValueError("target and online modules must have the same parameters")
    for name, p in t_params.items():
        q = o_params[name]
        if p.shape != q.shape:
            raise ValueError(f"parameter {name}: shape {tuple(p.shape)} vs {tuple(q.shape)}")
        p.mul_(m).add_(q.detach().to(device=p.device, dtype=p.dtype), alpha=1.0 - m)
    t_bufs, o_bufs = dict(target.named_buffers()), dict(online.named_buffers())
    for name, b in t_bufs.items():
        if name in o_bufs:
            b.copy_(o_bufs[name])  # copy_ moves across devices and dtypes


def cosine_momentum(step: int, total_steps: int, base: float = 0.996) -> float:
    r"""BYOL's schedule (Grill et al. 2020): :math:`m = 1 - (1 - m_0)(\cos(\pi k / K) + 1) / 2`,
    from ``base`` at step 0 to 1 at ``total_steps``.

    Example:
        >>> cosine_momentum(0, 100), cosine_momentum(100, 100)
        (0.996, 1.0)
    """
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    base = _check_momentum(base)
    k = min(max(step, 0), total_steps)
    return 1.0 - (1.0 - base) * (math.cos(math.pi * k / total_steps) + 1.0) / 2.0


def frozen_copy(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` (unwrapped from DDP) in eval mode with ``requires_grad=False``:
    the past model of continual learning (Sy-CON, Cha et al. 2023), a teacher, a fixed encoder.

    Example:
        >>> from torch import nn
        >>> past = frozen_copy(nn.Linear(3, 2))
        >>> past.training, past.weight.requires_grad
        (False, False)
    """
    past = copy.deepcopy(_unwrap(model))
    past.eval()
    past.requires_grad_(False)
    return past


class MomentumEncoder(nn.Module):
    r"""An exponential-moving-average copy of an encoder (MoCo's key encoder, He et al. 2020;
    BYOL's target, Grill et al. 2020): :math:`\theta_k \leftarrow m\,\theta_k + (1-m)\,\theta_q`.

    Built as a deep copy of ``encoder`` with ``requires_grad=False``; :meth:`update` applies one
    EMA step (call it after ``optimizer.step()``), and calling the module runs the copy under
    ``torch.no_grad()``, so keys never carry a graph.  The copy stays in the train/eval mode
    you set.  With DDP, pass the wrapped or the bare online encoder: the parameters are the same
    on every rank, so the EMA copies stay identical too.

    Args:
        encoder: the online encoder (the query encoder).
        momentum: :math:`m` (MoCo: 0.999; BYOL starts at 0.996, see :func:`cosine_momentum`).

    Example:
        >>> import torch
        >>> from torch import nn
        >>> online = nn.Linear(8, 4)
        >>> key_encoder = MomentumEncoder(online, momentum=0.99)
        >>> k = key_encoder(torch.randn(2, 8))  # no graph
        >>> k.requires_grad
        False
        >>> key_encoder.update(online)  # after optimizer.step()
    """

    def __init__(self, encoder: nn.Module, momentum: float = 0.999) -> None:
        super().__init__()
        self.momentum = _check_momentum(momentum)
        self.encoder = copy.deepcopy(_unwrap(encoder))
        self.encoder.requires_grad_(False)

    def update(self, online: nn.Module, momentum: float | None = None) -> None:
        """One EMA step towards ``online`` (``momentum`` overrides the default for this step)."""
        momentum_update_(self.encoder, online, self.momentum if momentum is None else momentum)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        with torch.no_grad():
            return self.encoder(*args, **kwargs)

    def extra_repr(self) -> str:
        return f"momentum={self.momentum}"
