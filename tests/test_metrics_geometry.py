"""Geometry metrics against loop-level float64 references written here."""

from __future__ import annotations

import doctest
import math

import numpy as np
import pytest
import torch

import contrastkit.metrics.geometry as G
from contrastkit.metrics import (
    alignment,
    class_center_similarity,
    class_collapse,
    effective_rank,
    info_nce_mi_bound,
    modality_gap,
    neural_collapse,
    representation_harm,
    tolerance,
    uniformity,
)

SEEDS = [0, 1, 2]
SHAPES = [(7, 3), (12, 5), (20, 16)]


def rand(seed, *shape):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def unit(v):
    """A row normalised with scalar tensor ops (keeps autograd)."""
    n = torch.sqrt(sum(c * c for c in v))
    return [c / n for c in v]


def sqdist(a, b):
    return sum((x - y) ** 2 for x, y in zip(a, b, strict=True))


def dot(a, b):
    return sum(x * y for x, y in zip(a, b, strict=True))


# ---------------------------------------------------------------- alignment and uniformity
def ref_alignment(x, y, alpha):
    terms = [torch.sqrt(sqdist(unit(x[i]), unit(y[i]))) ** alpha for i in range(len(x))]
    return sum(terms) / len(terms)


def ref_uniformity(x, t):
    z = [unit(x[i]) for i in range(len(x))]
    pairs = [
        torch.exp(-t * sqdist(z[i], z[j])) for i in range(len(z)) for j in range(i + 1, len(z))
    ]
    return torch.log(sum(pairs) / len(pairs))


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("shape", SHAPES[:2])
@pytest.mark.parametrize("alpha", [1.0, 2.0, 3.0])
def test_alignment_value_and_gradient(seed, shape, alpha):
    x = rand(seed, *shape).requires_grad_(True)
    y = rand(seed + 10, *shape).requires_grad_(True)
    got = alignment(x, y, alpha)
    want = ref_alignment(x, y, alpha)
    assert float(got.detach()) == pytest.approx(float(want.detach()), abs=1e-12)
    gx, gy = torch.autograd.grad(got, (x, y))
    wx, wy = torch.autograd.grad(want, (x, y))
    assert torch.allclose(gx, wx, atol=1e-10) and torch.allclose(gy, wy, atol=1e-10)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("shape", SHAPES[:2])
@pytest.mark.parametrize("t", [0.5, 2.0, 10.0])
def test_uniformity_value_and_gradient(seed, shape, t):
    x = rand(seed, *shape).requires_grad_(True)
    got = uniformity(x, t, chunk_size=3)
    want = ref_uniformity(x, t)
    assert float(got.detach()) == pytest.approx(float(want.detach()), abs=1e-12)
    assert torch.allclose(
        torch.autograd.grad(got, x)[0], torch.autograd.grad(want, x)[0], atol=1e-10
    )


def test_alignment_uniformity_gradcheck_and_chunking():
    x = rand(3, 6, 4).requires_grad_(True)
    y = rand(4, 6, 4).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b: alignment(a, b), (x, y))
    assert torch.autograd.gradcheck(lambda a: uniformity(a, chunk_size=4), (x,))
    big = rand(5, 50, 8)
    assert float(uniformity(big, chunk_size=7)) == pytest.approx(float(uniformity(big)), abs=1e-12)
    assert float(alignment(big, big, normalize=False)) == 0.0
    assert float(alignment(big, 2 * big, normalize=False)) == pytest.approx(
        float((big**2).sum(1).mean())
    )


def test_low_precision_inputs_accumulate_in_float32():
    x = rand(0, 30, 8)
    u = uniformity(x.bfloat16(), t=2.0)
    assert u.dtype == torch.float32
    assert float(u) == pytest.approx(float(uniformity(x)), abs=2e-2)


# ---------------------------------------------------------------- gap, rank
@pytest.mark.parametrize("seed", SEEDS)
def test_modality_gap(seed):
    x, y = rand(seed, 9, 5), rand(seed + 1, 14, 5) + 2.0
    zx = [unit(r) for r in x]
    zy = [unit(r) for r in y]
    cx = [sum(r[d] for r in zx) / 9 for d in range(5)]
    cy = [sum(r[d] for r in zy) / 14 for d in range(5)]
    want = math.sqrt(sum(float(a - b) ** 2 for a, b in zip(cx, cy, strict=True)))
    assert float(modality_gap(x, y)) == pytest.approx(want, abs=1e-12)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("center", [False, True])
def test_effective_rank(seed, center):
    x = rand(seed, 12, 6) @ torch.diag(
        torch.tensor([5.0, 3, 1, 0.5, 0.1, 0.0], dtype=torch.float64)
    )
    a = x.numpy()
    if center:
        a = a - a.mean(axis=0)
    s = np.linalg.svd(a, compute_uv=False)
    p = s / s.sum()
    h = -sum(pi * math.log(pi) for pi in p if pi > 0)
    assert float(effective_rank(x, center=center)) == pytest.approx(math.exp(h), rel=1e-10)


# ---------------------------------------------------------------- collapse measures
def ref_neural_collapse(h, y):
    h = h.numpy()
    classes = sorted(set(y.tolist()))
    c = len(classes)
    mu = np.array([np.mean([h[i] for i in range(len(h)) if y[i] == k], axis=0) for k in classes])
    mu_g = h.mean(axis=0)
    sw = np.zeros((h.shape[1], h.shape[1]))
    for i in range(len(h)):
        d = h[i] - mu[classes.index(int(y[i]))]
        sw += np.outer(d, d)
    sw /= len(h)
    sb = sum(np.outer(m - mu_g, m - mu_g) for m in mu) / c
    nc1 = np.trace(sw @ np.linalg.pinv(sb, hermitian=True)) / c
    m = mu - mu_g
    norms = [np.linalg.norm(v) for v in m]
    cos = [m[a] @ m[b] / (norms[a] * norms[b]) for a in range(c) for b in range(c) if a != b]
    gram = m @ m.T
    etf = (np.eye(c) - np.ones((c, c)) / c) / math.sqrt(c - 1)
    gu = mu @ mu.T
    return dict(
        nc1=nc1,
        equinorm=np.std(norms, ddof=1) / np.mean(norms),
        equiangularity=np.std(cos, ddof=1),
        max_equiangularity=np.mean([abs(v + 1 / (c - 1)) for v in cos]),
        etf_distance=np.linalg.norm(gram / np.linalg.norm(gram) - etf),
        orthogonal_frame_distance=np.linalg.norm(
            gu / np.linalg.norm(gu) - np.eye(c) / math.sqrt(c)
        ),
    )


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("shape", [(30, 8), (24, 3)])
def test_neural_collapse_matches_loop(seed, shape):
    h = rand(seed, *shape).relu() + 0.1
    y = torch.randint(0, 4, (shape[0],), generator=torch.Generator().manual_seed(seed)) * 3 + 1
    got = neural_collapse(h, y)
    want = ref_neural_collapse(h, y)
    for name, v in want.items():
        assert float(getattr(got, name)) == pytest.approx(v, rel=1e-9, abs=1e-12), name


def test_neural_collapse_recognises_etf_and_orthogonal_frame():
    c = 4
    etf = torch.eye(c, dtype=torch.float64) - 1.0 / c
    nc = neural_collapse(etf.repeat(5, 1), torch.arange(c).repeat(5))
    assert float(nc.etf_distance) == pytest.approx(0, abs=1e-12)
    assert float(nc.nc1) == pytest.approx(0, abs=1e-12)
    assert float(nc.max_equiangularity) == pytest.approx(0, abs=1e-12)
    of = torch.eye(c, dtype=torch.float64).repeat(5, 1) + 0.01 * rand(1, 20, c).abs()
    assert float(neural_collapse(of, torch.arange(c).repeat(5)).orthogonal_frame_distance) < 0.05


@pytest.mark.parametrize("seed", SEEDS)
def test_class_collapse_matches_loop(seed):
    x = rand(seed, 24, 4)
    g = torch.Generator().manual_seed(seed)
    cls = torch.randint(0, 3, (24,), generator=g)
    sub = torch.randint(0, 3, (24,), generator=g)
    x = x + sub[:, None].double()  # subclasses apart
    ratios = []
    for c in sorted(set(cls.tolist())):
        members = [i for i in range(24) if cls[i] == c]
        subs = sorted({int(sub[i]) for i in members})
        if len(subs) < 2:
            continue
        mu_c = x[members].mean(0)
        total = sum(float(((x[i] - mu_c) ** 2).sum()) for i in members)
        between = 0.0
        for s in subs:
            ms = [i for i in members if sub[i] == s]
            between += len(ms) * float(((x[ms].mean(0) - mu_c) ** 2).sum())
        ratios.append(between / total)
    assert float(class_collapse(x, cls, sub)) == pytest.approx(1 - np.mean(ratios), abs=1e-12)


@pytest.mark.parametrize("seed", SEEDS)
def test_representation_harm_matches_loop(seed):
    x = rand(seed, 15, 4)
    grp = torch.randint(5, 8, (15,), generator=torch.Generator().manual_seed(seed))
    z = [unit(r) for r in x]
    ids = sorted(set(grp.tolist()))
    got = representation_harm(x, grp)
    for a, ga in enumerate(ids):
        for b, gb in enumerate(ids):
            vals = [
                float(dot(z[i], z[j]))
                for i in range(15)
                for j in range(15)
                if grp[i] == ga and grp[j] == gb and i != j
            ]
            if vals:
                assert float(got[a, b]) == pytest.approx(np.mean(vals), abs=1e-12)
            else:
                assert math.isnan(float(got[a, b]))


@pytest.mark.parametrize("seed", SEEDS)
def test_tolerance_and_class_centres_match_loop(seed):
    x = rand(seed, 16, 5)
    y = torch.randint(0, 3, (16,), generator=torch.Generator().manual_seed(seed))
    z = [unit(r) for r in x]
    same = [float(dot(z[i], z[j])) for i in range(16) for j in range(16) if i != j and y[i] == y[j]]
    assert float(tolerance(x, y)) == pytest.approx(np.mean(same), abs=1e-12)
    ids = sorted(set(y.tolist()))
    mus = [
        [
            sum(float(z[i][d]) for i in range(16) if y[i] == c) / int((y == c).sum())
            for d in range(5)
        ]
        for c in ids
    ]
    want = [
        [sum(a * b for a, b in zip(mus[k], mus[m], strict=True)) for m in range(len(ids))]
        for k in range(len(ids))
    ]
    assert torch.allclose(class_center_similarity(x, y), torch.tensor(want, dtype=torch.float64))


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("temperature", [0.05, 0.5])
def test_info_nce_mi_bound_matches_loop(seed, temperature):
    q, k = rand(seed, 10, 6), rand(seed + 1, 12, 6)
    zq = [unit(r) for r in q]
    zk = [unit(r) for r in k]
    losses = []
    for i in range(10):
        logits = [float(dot(zq[i], zk[j])) / temperature for j in range(12)]
        m = max(logits)
        losses.append(-logits[i] + m + math.log(sum(math.exp(v - m) for v in logits)))
    want = math.log(12) - np.mean(losses)
    assert float(info_nce_mi_bound(q, k, temperature=temperature)) == pytest.approx(want, abs=1e-10)


# ---------------------------------------------------------------- bad input
def test_bad_input_errors_name_the_argument():
    x = rand(0, 6, 3)
    nan = x.clone()
    nan[1, 1] = float("nan")
    with pytest.raises(ValueError, match="x contains NaN"):
        uniformity(nan)
    with pytest.raises(ValueError, match="y contains NaN"):
        alignment(x, nan)
    with pytest.raises(ValueError, match="paired row by row"):
        alignment(x, x[:4])
    with pytest.raises(ValueError, match="at least 2 rows"):
        uniformity(x[:1])
    with pytest.raises(ValueError, match="labels must have shape"):
        neural_collapse(x, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="at least 2 classes"):
        neural_collapse(x, torch.zeros(6, dtype=torch.long))
    with pytest.raises(ValueError, match="no class of labels has two members"):
        tolerance(x, torch.arange(6))
    with pytest.raises(ValueError, match="two or more subclasses"):
        class_collapse(x, torch.arange(6), torch.zeros(6, dtype=torch.long))
    with pytest.raises(ValueError, match="alpha must be"):
        alignment(x, x, alpha=0.0)
    with pytest.raises(TypeError, match="labels must be an integer"):
        tolerance(x, torch.zeros(6))
    with pytest.raises(ValueError, match="feature sizes must match"):
        modality_gap(x, rand(1, 6, 4))


def test_inputs_are_not_modified():
    x, y = rand(0, 8, 3), rand(1, 8, 3)
    x0, y0 = x.clone(), y.clone()
    alignment(x, y), uniformity(x), neural_collapse(x, torch.arange(8) % 2)
    assert torch.equal(x, x0) and torch.equal(y, y0)


def test_docstring_examples_run():
    assert doctest.testmod(G, raise_on_error=False).failed == 0


def test_uniformity_chunk_size_is_validated():
    x = torch.randn(6, 3, dtype=torch.float64)
    for bad in (0, -2, 1.5):
        with pytest.raises(ValueError, match="chunk_size"):
            uniformity(x, chunk_size=bad)
    z = torch.nn.functional.normalize(x, dim=1)
    ref = math.log(
        sum(math.exp(-2 * float((z[i] - z[j]).pow(2).sum())) for i in range(6) for j in range(i))
        / 15
    )
    assert float(uniformity(x, chunk_size=1)) == pytest.approx(ref, abs=1e-12)
