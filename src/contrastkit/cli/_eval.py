"""Minimal evaluation metrics for the ``contrastkit`` command.

CLI-INTERNAL STAND-INS: kept small and self-contained until :mod:`contrastkit.metrics` lands;
each function here is meant to be replaced by the library's version of the same name
(``knn_accuracy``, ``linear_probe_accuracy``, ``recall_at_k``, ``alignment``, ``uniformity``,
``modality_gap``, ``zero_shot_accuracy``).  All take ``(N, D)`` float tensors and return a Python
float; the embeddings are L2-normalised where the metric is defined on the sphere.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def _normalize(x: Tensor) -> Tensor:
    return F.normalize(x.double(), dim=1)


def knn_accuracy(
    train: Tensor, train_labels: Tensor, test: Tensor, test_labels: Tensor, k: int = 5
) -> float:
    """Cosine k-nearest-neighbour accuracy with a majority vote (ties go to the smaller class,
    as in scikit-learn's ``KNeighborsClassifier(metric="cosine")``)."""
    k = min(k, train.shape[0])
    sim = _normalize(test) @ _normalize(train).T
    idx = sim.topk(k, dim=1).indices
    num_classes = int(max(train_labels.max(), test_labels.max())) + 1
    votes = torch.zeros(test.shape[0], num_classes, dtype=torch.long)
    votes.scatter_add_(1, train_labels[idx], torch.ones_like(idx))
    return float((votes.argmax(1) == test_labels).double().mean())


def linear_probe_accuracy(
    train: Tensor,
    train_labels: Tensor,
    test: Tensor,
    test_labels: Tensor,
    *,
    weight_decay: float = 1e-4,
    iterations: int = 200,
) -> float:
    """Accuracy of a multinomial logistic regression fitted (L-BFGS, full batch, features
    standardised on the train split) on frozen features."""
    mean, std = train.double().mean(0), train.double().std(0).clamp_min(1e-6)
    xtr, xte = (train.double() - mean) / std, (test.double() - mean) / std
    num_classes = int(max(train_labels.max(), test_labels.max())) + 1
    w = torch.zeros(xtr.shape[1], num_classes, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(num_classes, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=iterations, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(xtr @ w + b, train_labels) + weight_decay * (w * w).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    with torch.no_grad():
        return float(((xte @ w + b).argmax(1) == test_labels).double().mean())


def recall_at_k(
    queries: Tensor,
    keys: Tensor,
    ks: tuple[int, ...] = (1, 5),
    *,
    query_labels: Tensor | None = None,
    key_labels: Tensor | None = None,
    exclude_self: bool = False,
) -> dict[int, float]:
    """Recall@K by cosine similarity: the fraction of queries with a correct key among the K
    nearest.  A key is correct if it has the query's label (class-level, as in metric learning)
    or, without labels, if it is the query's own row (paired data)."""
    sim = _normalize(queries) @ _normalize(keys).T
    if exclude_self:
        sim.fill_diagonal_(-float("inf"))
    if query_labels is not None:
        correct = query_labels[:, None] == key_labels[None, :]
    else:
        correct = torch.eye(queries.shape[0], keys.shape[0], dtype=torch.bool)
    order = sim.argsort(dim=1, descending=True)
    hit = torch.gather(correct, 1, order)
    return {k: float(hit[:, :k].any(1).double().mean()) for k in ks}


def alignment(x: Tensor, y: Tensor, alpha: float = 2.0) -> float:
    """Alignment of positive pairs ``E ||f(x) - f(y)||^alpha`` on the unit sphere (Wang & Isola
    2020); lower is better."""
    return float((_normalize(x) - _normalize(y)).norm(dim=1).pow(alpha).mean())


def uniformity(x: Tensor, t: float = 2.0) -> float:
    """Uniformity ``log E exp(-t ||f(x) - f(y)||^2)`` over distinct pairs (Wang & Isola 2020);
    lower is better."""
    z = _normalize(x)
    sq = torch.pdist(z).pow(2)
    return float(torch.logsumexp(-t * sq, 0)) - math.log(sq.numel())


def modality_gap(x: Tensor, y: Tensor) -> float:
    """Distance between the centroids of two normalised embedding sets (Liang et al. 2022)."""
    return float((_normalize(x).mean(0) - _normalize(y).mean(0)).norm())


def zero_shot_accuracy(images: Tensor, labels: Tensor, class_embeddings: Tensor) -> float:
    """Accuracy of predicting the class whose prompt embedding is the most cosine-similar."""
    pred = (_normalize(images) @ _normalize(class_embeddings).T).argmax(1)
    return float((pred == labels).double().mean())
