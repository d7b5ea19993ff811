"""The metrics that the ``contrastkit`` command prints, computed by :mod:`contrastkit.metrics`.

This module only fixes the CLI's settings (in float64): kNN is an unweighted majority vote of
the ``k`` most cosine-similar training points (scikit-learn's ``KNeighborsClassifier(k,
metric="cosine")``), the linear probe is a logistic regression on features standardised on the
train split, recall@K is class-level within the held-out set (self excluded) for classification
and row-to-row for paired data.  Every function returns Python floats (``None`` where a
held-out class has no training rows, so that no classifier can be scored).
"""

from __future__ import annotations

import torch
from torch import Tensor

from contrastkit import metrics

PROBE_L2 = 2e-4  # the probe minimises mean CE + PROBE_L2 / 2 * |W|^2
PROBE_ITERATIONS = 200
UNIFORMITY_ROWS = 2000  # uniformity and retrieval are O(N^2): measured on the first rows
RETRIEVAL_ROWS = 4000


def _unseen_class(train_labels: Tensor, test_labels: Tensor) -> bool:
    return not bool(torch.isin(test_labels, train_labels).all())


def knn_accuracy(
    train: Tensor, train_labels: Tensor, test: Tensor, test_labels: Tensor, k: int
) -> float | None:
    """Majority vote of the ``k`` nearest training points by cosine similarity."""
    if _unseen_class(train_labels, test_labels):
        return None
    k = min(k, train.shape[0])
    acc = metrics.knn_accuracy(
        train.double(), train_labels, test.double(), test_labels, k=k, weighted=False
    )
    return float(acc)


def linear_probe_accuracy(
    train: Tensor, train_labels: Tensor, test: Tensor, test_labels: Tensor
) -> float | None:
    """Logistic-regression probe (L-BFGS) on features standardised with the train statistics."""
    if _unseen_class(train_labels, test_labels):
        return None
    train, test = train.double(), test.double()
    mean, std = train.mean(0), train.std(0).clamp_min(1e-6)
    probe = metrics.linear_probe(
        (train - mean) / std,
        train_labels,
        (test - mean) / std,
        test_labels,
        l2=PROBE_L2,
        max_iter=PROBE_ITERATIONS,
    )
    return float(probe.accuracy)


def classification(
    train: Tensor, train_labels: Tensor, test: Tensor, test_labels: Tensor, k: int
) -> dict[str, float | None]:
    """kNN, linear probe and class-level recall@1/5 of held-out rows among the others."""
    return {
        "knn_accuracy": knn_accuracy(train, train_labels, test, test_labels, k),
        "linear_probe_accuracy": linear_probe_accuracy(train, train_labels, test, test_labels),
        **recall(test, test, labels=test_labels, exclude_self=True),
    }


def recall(query: Tensor, key: Tensor, **relevance) -> dict[str, float]:
    """``recall@1`` and ``recall@5`` (K capped at the number of candidate keys)."""
    candidates = key.shape[0] - int(relevance.get("exclude_self", False))
    ks = [min(k, candidates) for k in (1, 5)]
    r = metrics.recall_at_k(query.double(), key.double(), ks, **relevance)
    return {"recall@1": float(r[0]), "recall@5": float(r[1])}


def paired(x: Tensor, y: Tensor, labels: Tensor | None = None) -> dict[str, float]:
    """Retrieval ``x -> y`` (the keys of the query's class with ``labels``, else row ``i``),
    alignment, uniformity of ``x`` and the modality gap."""
    n = RETRIEVAL_ROWS
    relevance = {} if labels is None else {"labels": labels[:n], "key_labels": labels[:n]}
    return {
        **recall(x[:n], y[:n], **relevance),
        "alignment": float(metrics.alignment(x, y)),
        "uniformity": float(metrics.uniformity(x[:UNIFORMITY_ROWS])),
        "modality_gap": float(metrics.modality_gap(x.double(), y.double())),
    }
