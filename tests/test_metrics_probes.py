"""Probes against loops and scikit-learn; power-law fits against known laws and scipy."""

from __future__ import annotations

import doctest
import math

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.neighbors import KNeighborsClassifier

import contrastkit.metrics.curves as C
import contrastkit.metrics.probes as P
from contrastkit.metrics import (
    fit_power_law,
    knn_accuracy,
    knn_predict,
    linear_probe,
    mean_classifier_accuracy,
    zero_shot_accuracy,
)


def blobs(seed, n=60, d=5, classes=3, spread=1.5, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, d, generator=g, dtype=dtype) * spread
    y = torch.randint(0, classes, (n,), generator=g)
    return centres[y] + torch.randn(n, d, generator=g, dtype=dtype), y


def cos(a, b):
    return sum(x * y for x, y in zip(a, b, strict=True)) / (
        math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    )


# ---------------------------------------------------------------- kNN
def ref_knn(tr, ytr, te, k, temperature, weighted):
    preds = []
    for row in te.tolist():
        sims = sorted(((cos(row, t), j) for j, t in enumerate(tr.tolist())), reverse=True)[:k]
        votes = {}
        for s, j in sims:
            c = int(ytr[j])
            votes[c] = votes.get(c, 0.0) + (math.exp(s / temperature) if weighted else 1.0)
        best = max(votes.values())
        preds.append(min(c for c, v in votes.items() if v == best))
    return preds


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("k", [1, 5, 12])
@pytest.mark.parametrize("weighted", [True, False])
def test_knn_matches_loop(seed, k, weighted):
    tr, ytr = blobs(seed, spread=0.7)
    te, _ = blobs(seed + 5, n=25, spread=0.7)
    ytr = ytr * 10 + 3  # arbitrary class ids
    got = knn_predict(tr, ytr, te, k=k, temperature=0.1, weighted=weighted, chunk_size=7)
    assert got.tolist() == ref_knn(tr, ytr, te, k, 0.1, weighted)


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("k", [1, 3, 7])
def test_unweighted_knn_matches_sklearn(seed, k):
    tr, ytr = blobs(seed, spread=0.8)
    te, yte = blobs(seed + 7, n=30, spread=0.8)
    clf = KNeighborsClassifier(n_neighbors=k, metric="cosine", algorithm="brute").fit(tr, ytr)
    want = clf.predict(te.numpy())
    got = knn_predict(tr, ytr, te, k=k, weighted=False)
    assert got.tolist() == want.tolist()
    acc = knn_accuracy(tr, ytr, te, yte, k=k, weighted=False)
    assert float(acc) == pytest.approx(float(np.mean(want == yte.numpy())))


# ---------------------------------------------------------------- linear probes
@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("l2", [1e-2, 1e-1])
def test_logistic_probe_matches_sklearn(seed, l2):
    tr, ytr = blobs(seed, spread=1.0)
    te, yte = blobs(seed + 3, n=40, spread=1.0)
    probe = linear_probe(tr, ytr, te, yte, method="logistic", l2=l2)
    n = tr.shape[0]
    sk = LogisticRegression(C=1.0 / (n * l2), tol=1e-12, max_iter=10000).fit(tr.numpy(), ytr)
    assert np.allclose(probe.weight.numpy(), sk.coef_, atol=1e-5)
    assert np.allclose(probe.bias.numpy(), sk.intercept_, atol=1e-5)
    assert float(probe.accuracy) == pytest.approx(sk.score(te.numpy(), yte.numpy()))
    assert probe.predict(te).tolist() == sk.predict(te.numpy()).tolist()


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("l2", [0.0, 1e-2])
def test_ridge_probe_matches_sklearn(seed, l2):
    tr, ytr = blobs(seed)
    te, yte = blobs(seed + 3, n=40)
    probe = linear_probe(tr, ytr, te, yte, method="ridge", l2=l2)
    onehot = np.eye(3)[ytr.numpy()]
    sk = Ridge(alpha=l2 * tr.shape[0], fit_intercept=True, solver="svd").fit(tr.numpy(), onehot)
    assert np.allclose(probe.weight.numpy(), sk.coef_, atol=1e-9)
    assert np.allclose(probe.bias.numpy(), sk.intercept_, atol=1e-9)
    want = np.mean(sk.predict(te.numpy()).argmax(1) == yte.numpy())
    assert float(probe.accuracy) == pytest.approx(want)


# ---------------------------------------------------------------- zero-shot, mean classifier
@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("prompts", [None, 3])
def test_zero_shot_matches_loop(seed, prompts):
    x, y = blobs(seed, n=30, classes=4, spread=0.7)
    g = torch.Generator().manual_seed(seed)
    shape = (4, 5) if prompts is None else (4, prompts, 5)
    ce = torch.randn(*shape, generator=g, dtype=torch.float64)
    if prompts is None:
        protos = ce.tolist()
    else:
        protos = []
        for c in range(4):
            units = [[v / math.sqrt(sum(w * w for w in p)) for v in p] for p in ce[c].tolist()]
            protos.append([sum(u[d] for u in units) / prompts for d in range(5)])
    correct = 0
    for row, label in zip(x.tolist(), y.tolist(), strict=True):
        scores = [cos(row, p) for p in protos]
        correct += int(scores.index(max(scores)) == label)
    assert float(zero_shot_accuracy(x, y, ce)) == pytest.approx(correct / 30)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mean_classifier_matches_loop(seed):
    tr, ytr = blobs(seed, spread=0.8)
    te, yte = blobs(seed + 9, n=30, spread=0.8)
    classes = sorted(set(ytr.tolist()))
    mus = {
        c: [
            np.mean([r[d] for r, l in zip(tr.tolist(), ytr.tolist(), strict=True) if l == c])
            for d in range(5)
        ]
        for c in classes
    }
    correct = 0
    for row, label in zip(te.tolist(), yte.tolist(), strict=True):
        scores = {c: sum(a * b for a, b in zip(row, mus[c], strict=True)) for c in classes}
        correct += int(max(scores, key=scores.get) == label)
    assert float(mean_classifier_accuracy(tr, ytr, te, yte)) == pytest.approx(correct / 30)


# ---------------------------------------------------------------- power laws
@pytest.mark.parametrize("alpha,l_inf", [(0.3, 1.5), (0.7, 0.2)])
def test_power_law_recovers_exact_law(alpha, l_inf):
    n = torch.logspace(5, 9, 9, dtype=torch.float64)
    law = fit_power_law(n, 40.0 * n**-alpha + l_inf)
    assert float(law.alpha[0]) == pytest.approx(alpha, abs=1e-4)
    assert law.l_inf == pytest.approx(l_inf, abs=1e-4)
    assert law.beta == pytest.approx(40.0, rel=1e-3)


def test_bivariate_power_law_recovers_law():
    g = torch.Generator().manual_seed(0)
    sizes = 10 ** (6 + 3 * torch.rand(20, 2, generator=g, dtype=torch.float64))
    y = 3000.0 * sizes[:, 0] ** -0.25 * sizes[:, 1] ** -0.4 + 0.9  # 0.91 .. 1.08
    law = fit_power_law(sizes, y)
    assert law.alpha.tolist() == pytest.approx([0.25, 0.4], abs=1e-3)
    assert law.l_inf == pytest.approx(0.9, abs=1e-3)
    assert torch.allclose(law(sizes), y, rtol=1e-5)
    with pytest.raises(ValueError, match=r"sizes must have shape \(n, 2\) for this law"):
        law(sizes[:, 0])  # one size column for a law of two


def test_power_law_agrees_with_scipy_on_noisy_data():
    scipy_optimize = pytest.importorskip("scipy.optimize")
    g = torch.Generator().manual_seed(1)
    n = torch.logspace(4, 8, 12, dtype=torch.float64)
    y = 20.0 * n**-0.35 + 2.0 + 0.01 * torch.randn(12, generator=g, dtype=torch.float64)
    law = fit_power_law(n, y)

    def f(x, log_beta, a, c):
        return np.exp(log_beta - a * np.log(x)) + c

    p, _ = scipy_optimize.curve_fit(f, n.numpy(), y.numpy(), p0=[3.0, 0.3, 1.9], maxfev=20000)
    ours = ((law(n) - y) ** 2).sum()
    theirs = ((torch.from_numpy(f(n.numpy(), *p)) - y) ** 2).sum()
    assert float(ours) <= float(theirs) * (1 + 1e-6)
    assert float(law.alpha[0]) == pytest.approx(p[1], rel=1e-3)


# ---------------------------------------------------------------- bad input
def test_bad_input_errors_name_the_argument():
    tr, ytr = blobs(0)
    te, yte = blobs(1, n=10)
    with pytest.raises(ValueError, match="test_labels holds class 7, which has no example"):
        knn_accuracy(tr, ytr, te, torch.full((10,), 7))
    with pytest.raises(ValueError, match=r"k=61 is larger than the number of training points"):
        knn_predict(tr, ytr, te, k=61)
    with pytest.raises(ValueError, match="train_labels must have shape"):
        linear_probe(tr, ytr[:5], te, yte)
    nan = te.clone()
    nan[0, 0] = float("nan")
    with pytest.raises(ValueError, match="test_x contains NaN"):
        mean_classifier_accuracy(tr, ytr, nan, yte)
    with pytest.raises(ValueError, match="labels must be class indices"):
        zero_shot_accuracy(te, torch.full((10,), 5), torch.randn(3, 5, dtype=torch.float64))
    with pytest.raises(ValueError, match="method must be one of"):
        linear_probe(tr, ytr, te, yte, method="svm")
    with pytest.raises(ValueError, match="max_iter must be an int >= 1"):
        linear_probe(tr, ytr, te, yte, max_iter=0)
    with pytest.raises(ValueError, match="losses has 2 points"):
        fit_power_law(torch.tensor([1.0, 2.0]), torch.tensor([1.0, 0.5]))
    with pytest.raises(ValueError, match="sizes must be finite and > 0"):
        fit_power_law(torch.tensor([0.0, 1, 2, 3]), torch.ones(4))


def test_docstring_examples_run():
    assert doctest.testmod(P, raise_on_error=False).failed == 0
    assert doctest.testmod(C, raise_on_error=False).failed == 0


def test_knn_chunk_size_is_validated():
    x, y = blobs(0)
    for bad in (0, -1, 2.0):
        with pytest.raises(ValueError, match="chunk_size"):
            knn_predict(x, y, x, k=3, chunk_size=bad)
    sk = KNeighborsClassifier(n_neighbors=3, metric="cosine", algorithm="brute")
    pred = knn_predict(x, y, x[:10], k=3, weighted=False, chunk_size=1)
    assert pred.tolist() == sk.fit(x.numpy(), y.numpy()).predict(x[:10].numpy()).tolist()
