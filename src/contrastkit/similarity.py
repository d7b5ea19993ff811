"""How two embeddings compare, and the temperature that scales the comparison.

``similarity`` names accepted everywhere:

- ``"cosine"`` (default): ``s(q, k) = <q/|q|, k/|k|>``; inputs are L2-normalised inside the loss.
- ``"dot"``: ``s(q, k) = <q, k>``.
- ``"neg_sq_euclidean"``: ``s(q, k) = -|q - k|^2``.

Logits are ``s(q, k) / temperature``. A learnable temperature is stored as a log logit scale,
``logit_scale = log(1 / temperature)``, and clamped to ``max_scale`` (100, as CLIP does).
"""

from __future__ import annotations

import contextlib
import functools
import math
import numbers
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

SIMILARITIES = ("cosine", "dot", "neg_sq_euclidean")


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float32 for half/bfloat16/float32 inputs, float64 for float64: the accumulation type."""
    return torch.promote_types(dtype, torch.float32)


def no_autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """A region where ``torch.autocast`` on ``device`` is off, so that the float32 accumulation of
    the losses (logits, log-sum-exps) is not cast down to bfloat16/float16 by an enclosing
    ``torch.autocast``; low-precision inputs are still cast up by :func:`prepare`."""
    try:
        return torch.autocast(device.type, enabled=False)
    except RuntimeError:  # a device type without autocast (meta, ...): nothing to turn off
        return contextlib.nullcontext()


def autocast_off(method: Callable) -> Callable:
    """For the ``forward``/``backward`` of a ``torch.autograd.Function``: run it under
    :func:`no_autocast` on the device of its first tensor argument.  (A custom backward runs
    under the autocast state of whoever calls ``.backward()``, so it needs this as much as the
    forward does.)"""

    @functools.wraps(method)
    def wrapper(ctx: Any, *args: Any) -> Any:
        device = next((a.device for a in args if isinstance(a, Tensor)), torch.device("cpu"))
        with no_autocast(device):
            return method(ctx, *args)

    return wrapper


def to_common_dtype(*tensors: Tensor | None) -> tuple[Tensor | None, ...]:
    """The tensors in one accumulation dtype when their dtypes differ (float64 with float32 is
    float64; bfloat16 with float16 or float32 is float32), else unchanged."""
    present = [t for t in tensors if t is not None]
    if len({t.dtype for t in present}) <= 1:
        return tensors
    dtype = torch.float32
    for t in present:
        dtype = torch.promote_types(dtype, t.dtype)
    dtype = compute_dtype(dtype)
    return tuple(None if t is None else t.to(dtype) for t in tensors)


def prepare(x: Tensor, similarity: str) -> Tensor:
    """Cast to the accumulation dtype and, for cosine, L2-normalise the last dimension."""
    x = x.to(compute_dtype(x.dtype))
    if similarity == "cosine":
        x = F.normalize(x, dim=-1, eps=1e-12)
    return x


def pairwise_similarity(query: Tensor, key: Tensor, similarity: str) -> Tensor:
    """``(B, D) x (N, D) -> (B, N)`` similarities of prepared (see :func:`prepare`) inputs."""
    if similarity in ("cosine", "dot"):
        return query @ key.T
    if similarity == "neg_sq_euclidean":
        sq = (query * query).sum(-1, keepdim=True) + (key * key).sum(-1)[None, :]
        return -(sq - 2.0 * (query @ key.T))
    raise ValueError(f"similarity must be one of {list(SIMILARITIES)}, got {similarity!r}")


def rowwise_similarity(query: Tensor, candidates: Tensor, similarity: str) -> Tensor:
    """``(B, D) x (B, K, D) -> (B, K)``: each query against its own candidates (prepared inputs)."""
    if similarity in ("cosine", "dot"):
        return torch.einsum("bd,bkd->bk", query, candidates)
    if similarity == "neg_sq_euclidean":
        return -((query[:, None, :] - candidates) ** 2).sum(-1)
    raise ValueError(f"similarity must be one of {list(SIMILARITIES)}, got {similarity!r}")


def similarity_matrix(query: Tensor, key: Tensor, similarity: str = "cosine") -> Tensor:
    """Public helper: the ``(B, N)`` similarity matrix in the accumulation dtype.

    Example:
        >>> import torch
        >>> s = similarity_matrix(torch.randn(4, 8), torch.randn(5, 8))
        >>> s.shape
        torch.Size([4, 5])
    """
    return pairwise_similarity(prepare(query, similarity), prepare(key, similarity), similarity)


def late_interaction_similarity(
    query_tokens: Tensor,
    key_tokens: Tensor,
    query_mask: Tensor | None = None,
    key_mask: Tensor | None = None,
    normalize: bool = True,
    chunk_size: int | None = None,
) -> Tensor:
    r"""Fine-grained token-wise similarity (ColBERT's MaxSim; CiCo, Cheng et al. 2023).

    ``s(q, k) = 1/|q| sum_{t in q} max_{u in k} <q_t, k_u>`` over unmasked tokens, for every
    query/key pair: ``(B, Tq, D) x (N, Tk, D) -> (B, N)``.  Masks are bool ``(B, Tq)`` /
    ``(N, Tk)``, True for real tokens; every query and key needs at least one.  Use it with
    :func:`contrastkit.functional.info_nce_from_logits`.

    The token scores of ``B x chunk x Tq x Tk`` pairs live at a time: ``chunk_size`` keys per
    step (default: as many as keep that block near 2**24 scores, 64 MiB in float32), so a
    large batch of long sequences does not need the whole ``B x N x Tq x Tk`` block; the
    backward keeps only the ``B x N x Tq`` positions of the maxima.

    Example:
        >>> import torch
        >>> late_interaction_similarity(torch.randn(2, 5, 8), torch.randn(3, 4, 8)).shape
        torch.Size([2, 3])
    """
    for name, t in (("query_tokens", query_tokens), ("key_tokens", key_tokens)):
        if not isinstance(t, Tensor) or not t.is_floating_point() or t.dim() != 3:
            raise ValueError(
                f"{name} must be a float tensor of shape (batch, tokens, dim), got "
                f"{type(t).__name__ if not isinstance(t, Tensor) else (t.dtype, tuple(t.shape))}"
            )
        if not bool(torch.isfinite(t).all()):
            raise ValueError(f"{name} contains NaN or Inf values")
    if query_tokens.shape[-1] != key_tokens.shape[-1]:
        raise ValueError("query_tokens and key_tokens must have the same feature size")
    masks = []
    for name, m, t in (
        ("query_mask", query_mask, query_tokens),
        ("key_mask", key_mask, key_tokens),
    ):
        if m is not None:
            if not isinstance(m, Tensor) or m.dtype != torch.bool or m.shape != t.shape[:2]:
                raise ValueError(f"{name} must be a bool tensor of shape {tuple(t.shape[:2])}")
            if not bool(m.any(dim=1).all()):
                raise ValueError(f"{name} must keep at least one token in every row")
            m = m.to(t.device)
        masks.append(m)
    query_mask, key_mask = masks
    if chunk_size is None:
        per_key = query_tokens.shape[0] * query_tokens.shape[1] * key_tokens.shape[1]
        chunk_size = max(1, (1 << 24) // max(per_key, 1))
    elif isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be an int >= 1, got {chunk_size!r}")
    dtype = compute_dtype(torch.promote_types(query_tokens.dtype, key_tokens.dtype))
    q = query_tokens.to(dtype)
    k = key_tokens.to(dtype)
    if normalize:
        q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
    best = []
    for start in range(0, k.shape[0], chunk_size):
        tok = torch.einsum("btd,nud->bntu", q, k[start : start + chunk_size])
        if key_mask is not None:
            keep = key_mask[None, start : start + chunk_size, None, :]
            tok = tok.masked_fill(~keep, torch.finfo(tok.dtype).min)
        best.append(tok.max(dim=-1).values)  # (B, chunk, Tq); backward keeps the indices only
    best_all = torch.cat(best, dim=1)
    if query_mask is None:
        return best_all.mean(dim=-1)
    qm = query_mask[:, None, :].to(best_all.dtype)
    return (best_all * qm).sum(-1) / qm.sum(-1)


def gated_cosine_similarity(query: Tensor, key: Tensor, gates: Tensor) -> Tensor:
    r"""Cosine similarity seen through a per-query feature gate (Hydra, "Rethinking positive
    pairs in contrastive learning", 2024): row ``i`` compares ``g_i * q_i`` with ``g_i * k_j``::

        s_ij = sum_d g_id^2 q_id k_jd / ( |g_i * q_i| |g_i * k_j| )

    ``gates`` ``(B, D)`` are typically :class:`ClassPairGates` of the class pair that made row
    ``i``'s positive.  ``(B, D), (N, D), (B, D) -> (B, N)``; feed ``s / tau`` to
    :func:`contrastkit.functional.info_nce_from_logits`.

    Example:
        >>> import torch
        >>> s = gated_cosine_similarity(torch.randn(3, 4), torch.randn(5, 4), torch.ones(3, 4))
        >>> s.shape
        torch.Size([3, 5])
    """
    if query.dim() != 2 or key.dim() != 2 or tuple(gates.shape) != tuple(query.shape):
        raise ValueError(
            "query (B, D), key (N, D) and gates (B, D) expected, got "
            f"{tuple(query.shape)}, {tuple(key.shape)}, {tuple(gates.shape)}"
        )
    dt = compute_dtype(query.dtype)
    q, k, g2 = query.to(dt), key.to(dt), gates.to(dt) ** 2
    num = (q * g2) @ k.T
    q_norm = ((q * q) * g2).sum(-1, keepdim=True).clamp_min(1e-24).sqrt()
    k_norm = (g2 @ (k * k).T).clamp_min(1e-24).sqrt()
    return num / (q_norm * k_norm)


class ClassPairGates(nn.Module):
    r"""Learnable feature gates per unordered class pair (Hydra, 2024):
    ``g_{ab} = sigmoid(w_{ab}) in (0, 1)^D`` with ``w_{ab} = w_{ba}``, so that a pair of samples
    from arbitrary (even unrelated) classes ``a, b`` is positive in the subspace its gate opens.

    Example:
        >>> import torch
        >>> gates = ClassPairGates(num_classes=4, dim=8)
        >>> gates(torch.tensor([0, 3]), torch.tensor([2, 3])).shape
        torch.Size([2, 8])
    """

    def __init__(self, num_classes: int, dim: int, init: float = 2.0) -> None:
        super().__init__()
        if num_classes < 1 or dim < 1:
            raise ValueError(f"num_classes and dim must be >= 1, got {num_classes}, {dim}")
        self.num_classes = num_classes
        pairs = num_classes * (num_classes + 1) // 2
        self.weight = nn.Parameter(torch.full((pairs, dim), float(init)))

    def pair_index(self, a: Tensor, b: Tensor) -> Tensor:
        lo, hi = torch.minimum(a, b), torch.maximum(a, b)
        return lo * self.num_classes - lo * (lo - 1) // 2 + (hi - lo)

    def forward(self, class_a: Tensor, class_b: Tensor) -> Tensor:
        for name, c in (("class_a", class_a), ("class_b", class_b)):
            if c.is_floating_point() or bool((c < 0).any() | (c >= self.num_classes).any()):
                raise ValueError(f"{name} must hold integer classes in [0, {self.num_classes})")
        return torch.sigmoid(self.weight[self.pair_index(class_a.long(), class_b.long())])


class _ClampMax(torch.autograd.Function):
    """``min(x, cap)`` whose gradient above the cap is kept when it points back below the cap
    (gradient descent lowers ``x``: a positive gradient) and zeroed when it points further up,
    so that a clamped parameter is never stuck above its cap."""

    @staticmethod
    def forward(ctx, x: Tensor, cap: float) -> Tensor:
        ctx.save_for_backward(x)
        ctx.cap = cap
        return x.clamp(max=cap)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        (x,) = ctx.saved_tensors
        return grad.masked_fill((x > ctx.cap) & (grad < 0), 0.0), None


class LogitScale(nn.Module):
    """A temperature, fixed or learnable, exposed as the logit scale ``1 / temperature``.

    Learnable: the parameter is ``log(1/temperature)`` (CLIP, Radford et al. 2021) and the scale
    used is ``exp(min(logit_scale, log(max_scale)))``, so that the clamp never lets logits grow
    past ``max_scale`` times the similarity.  Above the cap the parameter still receives the
    gradients that would bring it back under it (CLIP clamps the parameter after each step to the
    same effect); those that would push it further up are zeroed.

    Example:
        >>> ls = LogitScale(0.07, learnable=True)
        >>> round(float(ls().detach()), 3)
        14.286
        >>> LogitScale(0.5)()
        2.0
    """

    def __init__(
        self, temperature: float = 0.07, learnable: bool = False, max_scale: float = 100.0
    ) -> None:
        super().__init__()
        for name, value in (("temperature", temperature), ("max_scale", max_scale)):
            if not isinstance(value, numbers.Real) or isinstance(value, bool):
                raise TypeError(f"{name} must be a float, got {type(value).__name__}")
        if not temperature > 0 or math.isinf(temperature):
            raise ValueError(f"temperature must be a finite number > 0, got {temperature}")
        if not max_scale > 0:
            raise ValueError(f"max_scale must be > 0, got {max_scale}")
        self.learnable = bool(learnable)
        self.max_scale = float(max_scale)
        self._fixed_scale = 1.0 / float(temperature)
        if self.learnable:
            self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / temperature)))

    def forward(self) -> float | Tensor:
        """The current scale: a python float when fixed, a differentiable scalar when learnable."""
        if self.learnable:
            return _ClampMax.apply(self.logit_scale, math.log(self.max_scale)).exp()
        return self._fixed_scale

    @property
    def temperature(self) -> float:
        scale = self.forward()
        return 1.0 / float(scale.detach() if isinstance(scale, Tensor) else scale)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature:.4g}, learnable={self.learnable}"
