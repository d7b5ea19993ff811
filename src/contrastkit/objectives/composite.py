"""Composing objectives: a weighted sum as one module, and a gradient-based balancer (MGDA).

- :func:`weighted_sum` / :class:`WeightedSum`: ``L = sum_k w_k L_k`` over named terms, as in CoCa
  (contrastive + captioning), GOPro (CLIP + visual contrastive + prompt consistency), TCL
  (cross-modal + intra-modal + local-global MI) and TagAlign (contrastive + multi-tag BCE);
- :func:`min_norm_weights` / :class:`MinNormBalancer`: the multiple-gradient descent algorithm
  (MGDA; Désidéri 2012, Sener & Koltun 2018), which weights the losses by the minimum-norm point
  of the convex hull of their gradients, as the topic-modelling paper does for its ELBO and
  contrastive objectives (Nguyen et al. 2024).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from contrastkit._validation import check_choice, check_finite_scalar, check_tensor

__all__ = ["weighted_sum", "min_norm_weights", "WeightedSum", "MinNormBalancer"]

NORMALIZATIONS = ("none", "l2", "loss", "loss+")


def _scalar_loss(name: str, value: object) -> Tensor:
    value = check_tensor(name, value)
    if value.numel() != 1:
        raise ValueError(f"{name} must be a scalar loss, got shape {tuple(value.shape)}")
    return value.reshape(())


def weighted_sum(
    losses: Mapping[str, Tensor] | Sequence[Tensor],
    weights: Mapping[str, float] | Sequence[float] | None = None,
) -> Tensor:
    r"""``L = sum_k w_k L_k`` of scalar losses, named (mapping) or positional (sequence).

    Weights default to 1; a mapping of weights may leave names out (weight 1) but may not name a
    loss that is absent.

    Example:
        >>> import torch
        >>> losses = {"clip": torch.tensor(2.0), "caption": torch.tensor(3.0)}
        >>> weighted_sum(losses, {"caption": 2.0})
        tensor(8.)
    """
    if isinstance(losses, Mapping):
        names = list(losses)
        values = [_scalar_loss(f"losses[{n!r}]", losses[n]) for n in names]
        if weights is None:
            w = [1.0] * len(names)
        elif isinstance(weights, Mapping):
            unknown = set(weights) - set(names)
            if unknown:
                raise ValueError(f"weights name losses that are absent: {sorted(unknown)}")
            w = [weights.get(n, 1.0) for n in names]
        else:
            raise TypeError("named losses need named weights (a mapping) or None")
    else:
        values = [_scalar_loss(f"losses[{i}]", v) for i, v in enumerate(losses)]
        w = [1.0] * len(values) if weights is None else list(weights)  # type: ignore[arg-type]
        if len(w) != len(values):
            raise ValueError(f"got {len(values)} losses but {len(w)} weights")
    if not values:
        raise ValueError("weighted_sum needs at least one loss")
    for i, wi in enumerate(w):
        check_finite_scalar(f"weights[{i}]", wi)
    total = values[0] * w[0]
    for v, wi in zip(values[1:], w[1:], strict=True):
        total = total + v * wi
    return total


class WeightedSum(nn.Module):
    r"""A weighted sum of named objectives as one module::

        L = sum_k w_k L_k(*inputs_k)

    Terms that are ``nn.Module`` are registered as submodules, so their parameters (a learnable
    temperature, a logit bias) are trained and saved with this module; plain functions (e.g.
    ``torch.nn.functional.cross_entropy``) work too.  ``forward`` takes one keyword per term:
    a tuple of positional arguments, a dict of keyword arguments, or an already computed scalar
    loss.  The detached value of every term of the last call is kept in ``last_terms``.

    Args:
        terms: mapping from name to loss module or function.
        weights: mapping from name to weight (missing names: 1).

    Example (CoCa: contrastive + captioning):
        >>> import torch
        >>> from contrastkit.losses import InfoNCE
        >>> loss_fn = WeightedSum(
        ...     {"contrastive": InfoNCE(symmetric=True, learnable_temperature=True),
        ...      "caption": torch.nn.CrossEntropyLoss()},
        ...     weights={"contrastive": 1.0, "caption": 2.0})
        >>> img, txt = torch.randn(4, 8), torch.randn(4, 8)
        >>> logits, tokens = torch.randn(4 * 5, 30), torch.randint(0, 30, (4 * 5,))
        >>> loss = loss_fn(contrastive=(img, txt), caption=(logits, tokens))
        >>> sorted(loss_fn.last_terms)
        ['caption', 'contrastive']
        >>> len(list(loss_fn.parameters()))
        1
    """

    def __init__(
        self,
        terms: Mapping[str, nn.Module | Callable[..., Tensor]],
        weights: Mapping[str, float] | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(terms, Mapping) or not terms:
            raise ValueError("terms must be a non-empty mapping from name to loss")
        weights = dict(weights or {})
        unknown = set(weights) - set(terms)
        if unknown:
            raise ValueError(f"weights name terms that are absent: {sorted(unknown)}")
        self.names = list(terms)
        self.modules_ = nn.ModuleDict({k: v for k, v in terms.items() if isinstance(v, nn.Module)})
        self.functions = {k: v for k, v in terms.items() if not isinstance(v, nn.Module)}
        for k, v in self.functions.items():
            if not callable(v):
                raise TypeError(f"term {k!r} must be an nn.Module or a callable")
        for k, w in weights.items():
            check_finite_scalar(f"weights[{k!r}]", w)
        self.weights = {k: float(weights.get(k, 1.0)) for k in self.names}
        self.last_terms: dict[str, Tensor] = {}

    def term(self, name: str) -> nn.Module | Callable[..., Tensor]:
        return self.modules_[name] if name in self.modules_ else self.functions[name]

    def forward(self, **inputs: Any) -> Tensor:
        missing = [n for n in self.names if n not in inputs]
        extra = [n for n in inputs if n not in self.weights]
        if missing or extra:
            raise ValueError(
                f"forward needs one keyword per term {self.names}; missing {missing}, "
                f"unknown {extra}"
            )
        values = {}
        for name in self.names:
            arg = inputs[name]
            if isinstance(arg, Tensor):
                value = arg
            elif isinstance(arg, Mapping):
                value = self.term(name)(**arg)
            elif isinstance(arg, (tuple, list)):
                value = self.term(name)(*arg)
            else:
                raise TypeError(
                    f"input for term {name!r} must be a tuple of arguments, a dict of keyword "
                    f"arguments or a computed loss tensor, got {type(arg).__name__}"
                )
            values[name] = _scalar_loss(f"term {name!r}", value)
        self.last_terms = {k: v.detach() for k, v in values.items()}
        return weighted_sum(values, self.weights)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={w:g}" for k, w in self.weights.items())


# -- MGDA -------------------------------------------------------------------------------------
def _gram(grads: Sequence[Tensor]) -> Tensor:
    flat = []
    for i, g in enumerate(grads):
        g = check_tensor(f"grads[{i}]", g)
        if not g.is_floating_point():
            raise TypeError(f"grads[{i}] must be floating point, got {g.dtype}")
        flat.append(g.detach().reshape(-1).to(torch.float64))
    sizes = {f.numel() for f in flat}
    if len(sizes) != 1:
        raise ValueError(
            f"every gradient must have the same number of entries, got {sorted(sizes)}"
        )
    if not all(bool(torch.isfinite(f).all()) for f in flat):
        raise ValueError("grads contain NaN or Inf values")
    g = torch.stack(flat)
    return g @ g.T


def _min_norm_exact(gram: Tensor) -> Tensor:
    """Exact min of a^T G a over the simplex: the best affine minimiser over every face."""
    n = gram.shape[0]
    best, best_val = None, None
    for r in range(1, n + 1):
        for face in itertools.combinations(range(n), r):
            idx = torch.tensor(face)
            m = gram[idx][:, idx]
            kkt = torch.zeros(r + 1, r + 1, dtype=gram.dtype)
            kkt[:r, :r] = m
            kkt[:r, r] = 1.0
            kkt[r, :r] = 1.0
            rhs = torch.zeros(r + 1, dtype=gram.dtype)
            rhs[r] = 1.0
            try:
                sol = torch.linalg.solve(kkt, rhs)
            except RuntimeError:  # affinely dependent vertices: a sub-face does as well
                continue
            a_face = sol[:r]
            if bool((a_face < -1e-12).any()):
                continue
            a = torch.zeros(n, dtype=gram.dtype)
            a[idx] = a_face.clamp_min(0)
            a = a / a.sum()
            val = a @ gram @ a
            if best_val is None or val < best_val - 1e-15:
                best, best_val = a, val
    assert best is not None  # every single vertex is a feasible face
    return best


def _min_norm_frank_wolfe(gram: Tensor, max_iter: int, tol: float) -> Tensor:
    """Frank-Wolfe with away steps and exact line search (linear convergence on the simplex)."""
    n = gram.shape[0]
    a = torch.full((n,), 1.0 / n, dtype=gram.dtype)
    for _ in range(max_iter):
        ga = gram @ a
        val = a @ ga
        t = int(ga.argmin())
        support = a > 0
        s = int(torch.where(support, ga, -torch.inf).argmax())
        gap_fw, gap_away = float(val - ga[t]), float(ga[s] - val)
        if gap_fw <= tol:
            break
        if gap_fw >= gap_away:
            d = -a.clone()
            d[t] += 1.0
            gamma_max = 1.0
        else:
            d = a.clone()
            d[s] -= 1.0
            gamma_max = float(a[s] / (1 - a[s])) if a[s] < 1 else 1.0
        curv = float(d @ gram @ d)
        slope = float(ga @ d)
        gamma = gamma_max if curv <= 0 else min(max(-slope / curv, 0.0), gamma_max)
        a = (a + gamma * d).clamp_min(0)
        a = a / a.sum()
    return a


def min_norm_weights(
    grads: Sequence[Tensor], *, exact_max_tasks: int = 10, max_iter: int = 10000, tol: float = 1e-14
) -> Tensor:
    r"""Weights of MGDA (Désidéri 2012; Sener & Koltun 2018): the point of the convex hull of the
    task gradients with the smallest norm::

        alpha* = argmin_{alpha >= 0, sum alpha = 1} || sum_k alpha_k g_k ||_2^2

    ``d = -sum_k alpha*_k g_k`` is a descent direction for every task unless the point is Pareto
    stationary (``d = 0``).  Two tasks have the closed form
    ``alpha_1 = clip((g_2 - g_1) . g_2 / ||g_1 - g_2||^2, 0, 1)``; up to ``exact_max_tasks`` the
    quadratic program is solved exactly (every face of the simplex), beyond that by Frank-Wolfe
    with away steps (stopping when the duality gap is below ``tol``).

    Args:
        grads: one gradient per task, any shape, same number of entries (flattened).

    Returns:
        ``(K,)`` float64 weights on the simplex.

    Example:
        >>> import torch
        >>> min_norm_weights([torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])])
        tensor([0.5000, 0.5000], dtype=torch.float64)
    """
    if isinstance(grads, Tensor) or len(grads) == 0:
        raise ValueError("grads must be a non-empty sequence of tensors, one per task")
    gram = _gram(grads)
    n = gram.shape[0]
    if n == 1:
        return torch.ones(1, dtype=torch.float64)
    if n == 2:
        g11, g12, g22 = gram[0, 0], gram[0, 1], gram[1, 1]
        denom = g11 + g22 - 2 * g12
        a1 = (
            torch.tensor(0.5, dtype=torch.float64)
            if denom <= 0
            else ((g22 - g12) / denom).clamp(0, 1)
        )
        return torch.stack([a1, 1 - a1])
    if n <= exact_max_tasks:
        return _min_norm_exact(gram)
    return _min_norm_frank_wolfe(gram, max_iter, tol)


class MinNormBalancer(nn.Module):
    r"""Balance several losses with MGDA's min-norm weights (Sener & Koltun 2018), as in
    "Topic Modeling as Multi-Objective Contrastive Optimization" (Nguyen et al. 2024).

    ``forward(losses, shared)`` computes each loss's gradient w.r.t. the ``shared`` tensors (the
    shared parameters, or a shared representation for MGDA-UB), optionally normalises them
    (``"l2"``: ``g / ||g||``, ``"loss"``: ``g / L``, ``"loss+"``: ``g / (L ||g||)``), finds the
    min-norm weights :math:`\alpha` (:func:`min_norm_weights`) and returns
    ``sum_k alpha_k L_k`` with :math:`\alpha` detached, so that ``backward()`` follows the
    common descent direction.  The weights of the last call are in ``last_weights``.

    Example:
        >>> import torch
        >>> w = torch.nn.Parameter(torch.tensor([1.0, 1.0]))
        >>> l1, l2 = (w[0] - 2) ** 2, (w[1] + 1) ** 2
        >>> balancer = MinNormBalancer()
        >>> loss = balancer([l1, l2], [w])
        >>> loss.backward()
        >>> balancer.last_weights  # gradients (-2, 0) and (0, 4)
        tensor([0.8000, 0.2000], dtype=torch.float64)
    """

    def __init__(self, normalization: str = "none") -> None:
        super().__init__()
        self.normalization = check_choice("normalization", normalization, NORMALIZATIONS)
        self.last_weights: Tensor | None = None

    def forward(self, losses: Sequence[Tensor], shared: Tensor | Iterable[Tensor]) -> Tensor:
        losses = [_scalar_loss(f"losses[{i}]", v) for i, v in enumerate(losses)]
        if not losses:
            raise ValueError("MinNormBalancer needs at least one loss")
        params = [shared] if isinstance(shared, Tensor) else list(shared)
        if not params or not all(isinstance(p, Tensor) and p.requires_grad for p in params):
            raise ValueError("shared must be tensors that require grad (parameters or features)")
        grads = []
        for i, loss in enumerate(losses):
            parts = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
            flat = torch.cat(
                [
                    (torch.zeros_like(p) if g is None else g).reshape(-1).to(torch.float64)
                    for g, p in zip(parts, params, strict=True)
                ]
            )
            if self.normalization in ("l2", "loss+"):
                norm = flat.norm()
                flat = flat / norm if norm > 0 else flat
            if self.normalization in ("loss", "loss+"):
                value = float(loss.detach())
                if value == 0:
                    raise ValueError(f"losses[{i}] is 0: cannot normalise its gradient by it")
                flat = flat / value
            grads.append(flat)
        alpha = min_norm_weights(grads)
        self.last_weights = alpha
        total = losses[0] * float(alpha[0])
        for a, loss in zip(alpha[1:], losses[1:], strict=True):
            total = total + loss * float(a)
        return total
