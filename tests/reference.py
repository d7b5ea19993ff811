"""Loop-level float64 reference implementations of the foundation objectives, written from the
papers' equations with Python loops and ``math`` (no contrastkit code).

Every similarity, logit and log-sum-exp is computed one scalar at a time (0-d float64 tensors, so
that autograd through the loops gives reference gradients); nothing is shared with the library's
vectorised code path.
"""

from __future__ import annotations

import math

import torch


def _sim(a: torch.Tensor, b: torch.Tensor, similarity: str) -> torch.Tensor:
    """Similarity of two 1-D float64 vectors, written out elementwise."""
    if similarity == "cosine":
        na = torch.sqrt(sum(x * x for x in a))
        nb = torch.sqrt(sum(x * x for x in b))
        return sum(x * y for x, y in zip(a, b, strict=True)) / (na * nb)
    if similarity == "dot":
        return sum(x * y for x, y in zip(a, b, strict=True))
    if similarity == "neg_sq_euclidean":
        return -sum((x - y) ** 2 for x, y in zip(a, b, strict=True))
    raise AssertionError(similarity)


def _logsumexp(values: list[torch.Tensor]) -> torch.Tensor:
    m = max(float(torch.as_tensor(v).detach()) for v in values)
    return m + torch.log(sum(torch.exp(v - m) for v in values))


def infonce_reference(
    query,
    key,
    *,
    positive,  # callable (i, j) -> weight
    excluded,  # callable (i, j) -> bool
    tau,
    similarity="cosine",
    variant="out",
    decoupled=False,
    margin=0.0,
    extra=None,  # callable i -> list of extra negative vectors
):
    """Mean over valid rows of the InfoNCE row loss, one row at a time with scalar ops."""
    losses = []
    for i in range(query.shape[0]):
        weights, logits, den = [], [], []
        for j in range(key.shape[0]):
            if excluded(i, j):
                continue
            w = positive(i, j)
            s = _sim(query[i], key[j], similarity)
            l = (s - (margin if w > 0 else 0.0)) / tau
            if w > 0:
                weights.append(w)
                logits.append(l)
            if not (decoupled and w > 0):
                den.append(l)
        if extra is not None:
            for n in extra(i):
                den.append(_sim(query[i], n, similarity) / tau)
        if not weights or not den:
            continue
        lse = _logsumexp(den)
        total_w = sum(weights)
        if variant == "out":
            li = -sum(w * (l - lse) for w, l in zip(weights, logits, strict=True)) / total_w
        else:
            li = -(
                _logsumexp([l + math.log(w) for w, l in zip(weights, logits, strict=True)])
                - math.log(total_w)
                - lse
            )
        losses.append(li)
    return sum(losses) / len(losses)


def ntxent_reference(z1, z2, tau):
    """SimCLR (Chen et al. 2020), Algorithm 1: l(i,j) over all 2N anchors."""
    z = torch.cat([z1, z2])
    n2 = z.shape[0]
    n = n2 // 2
    total = 0.0
    for a in range(n2):
        p = (a + n) % n2
        num = _sim(z[a], z[p], "cosine") / tau
        den = [_sim(z[a], z[b], "cosine") / tau for b in range(n2) if b != a]
        total = total + (_logsumexp(den) - num)
    return total / n2


def supcon_reference(features, labels, tau, variant="out"):
    """Khosla et al. 2020, eq. (2) (out) and (3) (in), averaged over anchors with a positive."""
    b, v, _ = features.shape
    z = [features[i, a] for a in range(v) for i in range(b)]
    lab = [int(labels[i]) for _ in range(v) for i in range(b)]
    total, count = 0.0, 0
    for a in range(len(z)):
        pos = [p for p in range(len(z)) if p != a and lab[p] == lab[a]]
        if not pos:
            continue
        den = _logsumexp([_sim(z[a], z[o], "cosine") / tau for o in range(len(z)) if o != a])
        logps = [_sim(z[a], z[p], "cosine") / tau - den for p in pos]
        if variant == "out":
            total = total - sum(logps) / len(pos)
        else:
            total = total - (_logsumexp(logps) - math.log(len(pos)))
        count += 1
    return total / count


def siglip_reference(query, key, t, bias, positive):
    """Zhai et al. 2023, Algorithm 1: -1/|B| sum_ij log sigmoid(z_ij (t x_i.y_j + b))."""
    total = 0.0
    for i in range(query.shape[0]):
        for j in range(key.shape[0]):
            z = 1.0 if positive(i, j) else -1.0
            x = z * (t * _sim(query[i], key[j], "cosine") + bias)
            total = total - torch.log(1.0 / (1.0 + torch.exp(-x)))
    return total / query.shape[0]


REFERENCE_TOL = 1e-10


def leaf(*shape: int, seed: int) -> torch.Tensor:
    """A float64 leaf tensor of standard normals from ``seed``."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64).requires_grad_(True)


def compare_with_reference(lib_fn, ref_fn, inputs, tol: float = REFERENCE_TOL) -> None:
    """The library's loss and every input gradient against the reference's, in float64."""
    out = lib_fn(*inputs)
    grads = torch.autograd.grad(out, inputs)
    ref_inputs = [x.detach().clone().requires_grad_(True) for x in inputs]
    ref = ref_fn(*ref_inputs)
    ref_grads = torch.autograd.grad(ref, ref_inputs)
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, ref.reshape(()), rtol=tol, atol=tol)
    for g, rg in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(g, rg, rtol=tol, atol=tol)
