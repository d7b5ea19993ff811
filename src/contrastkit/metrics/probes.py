r"""Probes: how well a frozen embedding classifies.

Each probe fits on ``(train_x, train_labels)`` and scores on ``(test_x, test_labels)``; labels
are integer class ids.  A test class without any training example is an error (the probe could
never predict it).  Nothing here builds an autograd graph.

- :func:`knn_accuracy` / :func:`knn_predict`: weighted kNN (Wu et al. 2018, as in DINO).
- :func:`linear_probe`: L2-regularised logistic regression (L-BFGS) or ridge (closed form).
- :func:`zero_shot_accuracy`: CLIP zero-shot classification (Radford et al. 2021).
- :func:`mean_classifier_accuracy`: the mean classifier (Arora et al. 2019).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from contrastkit._validation import (
    check_choice,
    check_embeddings,
    check_labels,
    check_positive_scalar,
    check_same_dim,
)
from contrastkit.similarity import compute_dtype

__all__ = [
    "knn_predict",
    "knn_accuracy",
    "LinearProbe",
    "linear_probe",
    "zero_shot_accuracy",
    "mean_classifier_accuracy",
]


def _split(
    train_x: Tensor, train_labels: Tensor, test_x: Tensor, test_labels: Tensor | None
) -> tuple[Tensor, Tensor, Tensor, Tensor | None, Tensor]:
    """Validated float inputs, train labels as class indices, and the sorted class ids."""
    train_x = check_embeddings("train_x", train_x)
    test_x = check_embeddings("test_x", test_x)
    check_same_dim(("train_x", "test_x"), (train_x, test_x))
    dtype = compute_dtype(torch.promote_types(train_x.dtype, test_x.dtype))
    train_labels = check_labels("train_labels", train_labels, train_x.shape[0], train_x.device)
    classes, train_idx = torch.unique(train_labels, return_inverse=True)
    test_idx = None
    if test_labels is not None:
        test_labels = check_labels("test_labels", test_labels, test_x.shape[0], test_x.device)
        pos = torch.searchsorted(classes, test_labels).clamp(max=len(classes) - 1)
        missing = classes[pos] != test_labels
        if bool(missing.any()):
            c = int(test_labels[missing][0])
            raise ValueError(
                f"test_labels holds class {c}, which has no example in train_labels "
                "(an empty class cannot be predicted)"
            )
        test_idx = pos
    return train_x.to(dtype), train_idx, test_x.to(dtype), test_idx, classes


def knn_predict(
    train_x: Tensor,
    train_labels: Tensor,
    test_x: Tensor,
    *,
    k: int = 20,
    temperature: float = 0.07,
    weighted: bool = True,
    chunk_size: int = 16384,
) -> Tensor:
    r"""Weighted k-nearest-neighbour classification by cosine similarity (Wu et al. 2018).

    Each test point takes its ``k`` most cosine-similar training points :math:`N_k` and predicts

    .. math::  \hat y = \arg\max_c \sum_{j \in N_k} w_j [y_j = c], \qquad
               w_j = \exp(s_j / \tau) \text{ (weighted) or } 1

    (ties go to the smallest class id).  Training points are scanned in chunks with a running
    top-``k``.

    Returns:
        ``(M,)`` predicted labels (original ids).

    Example:
        >>> import torch
        >>> train = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
        >>> knn_predict(train, torch.tensor([3, 3, 7]), torch.tensor([[1.0, 0.2]]), k=2).tolist()
        [3]
    """
    tr, tr_idx, te, _, classes = _split(train_x, train_labels, test_x, None)
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be an int >= 1, got {k!r}")
    if k > tr.shape[0]:
        raise ValueError(f"k={k} is larger than the number of training points ({tr.shape[0]})")
    check_positive_scalar("temperature", temperature)
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be an int >= 1, got {chunk_size!r}")
    with torch.no_grad():
        tr = F.normalize(tr, dim=1)
        te = F.normalize(te, dim=1)
        best_s = te.new_empty(te.shape[0], 0)
        best_i = torch.empty(te.shape[0], 0, dtype=torch.long, device=te.device)
        for c0 in range(0, tr.shape[0], chunk_size):
            s = te @ tr[c0 : c0 + chunk_size].T
            v, i = s.topk(min(k, s.shape[1]), dim=1)
            best_s = torch.cat([best_s, v], dim=1)
            best_i = torch.cat([best_i, i + c0], dim=1)
            if best_s.shape[1] > k:
                best_s, sel = best_s.topk(k, dim=1)
                best_i = best_i.gather(1, sel)
        w = (best_s / temperature).exp() if weighted else torch.ones_like(best_s)
        votes = torch.zeros(te.shape[0], len(classes), dtype=w.dtype, device=w.device)
        votes.scatter_add_(1, tr_idx[best_i], w)
        return classes[votes.argmax(dim=1)]


def knn_accuracy(
    train_x: Tensor,
    train_labels: Tensor,
    test_x: Tensor,
    test_labels: Tensor,
    *,
    k: int = 20,
    temperature: float = 0.07,
    weighted: bool = True,
    chunk_size: int = 16384,
) -> Tensor:
    """Accuracy of :func:`knn_predict` on ``(test_x, test_labels)``.

    Example:
        >>> import torch
        >>> x, y = torch.randn(40, 8), torch.arange(40) % 2
        >>> float(knn_accuracy(x, y, x, y, k=1))
        1.0
    """
    _split(train_x, train_labels, test_x, test_labels)
    pred = knn_predict(
        train_x,
        train_labels,
        test_x,
        k=k,
        temperature=temperature,
        weighted=weighted,
        chunk_size=chunk_size,
    )
    return (pred == test_labels).double().mean()


@dataclass(frozen=True)
class LinearProbe:
    """A fitted linear probe: ``logits = x @ weight.T + bias`` over ``classes``.

    Attributes:
        accuracy: test accuracy.
        weight: ``(C, D)``.
        bias: ``(C,)``.
        classes: ``(C,)`` the class ids, in the order of the rows of ``weight``.

    Example:
        >>> import torch
        >>> x = torch.cat([torch.randn(20, 2) + 4, torch.randn(20, 2) - 4])
        >>> y = torch.tensor([3] * 20 + [7] * 20)
        >>> probe = linear_probe(x, y, x, y)
        >>> probe.weight.shape, probe.classes.tolist(), float(probe.accuracy)
        (torch.Size([2, 2]), [3, 7], 1.0)
    """

    accuracy: Tensor
    weight: Tensor
    bias: Tensor
    classes: Tensor

    def predict(self, x: Tensor) -> Tensor:
        """Predicted class ids of ``x`` ``(M, D)``."""
        x = check_embeddings("x", x).to(self.weight.dtype)
        return self.classes[(x @ self.weight.T + self.bias).argmax(dim=1)]


def linear_probe(
    train_x: Tensor,
    train_labels: Tensor,
    test_x: Tensor,
    test_labels: Tensor,
    *,
    method: str = "logistic",
    l2: float = 1e-4,
    max_iter: int = 500,
) -> LinearProbe:
    r"""Linear probe on frozen features.

    - ``"logistic"``: multinomial logistic regression, minimising with L-BFGS
      :math:`\frac1N \sum_i \mathrm{CE}(W x_i + b, y_i) + \frac{\lambda}{2}\|W\|_F^2` (the bias
      is not penalised) — scikit-learn's ``LogisticRegression(C=1/(N*l2))``.
    - ``"ridge"``: closed-form least squares onto one-hot targets,
      :math:`\min \|XW^\top + b - Y\|_F^2 + \lambda N \|W\|_F^2`, solved on centred data.

    Args:
        l2: :math:`\lambda \ge 0`.
        max_iter: L-BFGS iterations.

    Returns:
        :class:`LinearProbe` with the test accuracy and the fitted weights.

    Example:
        >>> import torch
        >>> x = torch.cat([torch.randn(30, 4) + 3, torch.randn(30, 4) - 3])
        >>> y = torch.arange(60) // 30
        >>> float(linear_probe(x, y, x, y).accuracy)
        1.0
    """
    tr, tr_idx, te, te_idx, classes = _split(train_x, train_labels, test_x, test_labels)
    check_choice("method", method, ("logistic", "ridge"))
    if not isinstance(l2, (int, float)) or isinstance(l2, bool) or not l2 >= 0:
        raise ValueError(f"l2 must be a number >= 0, got {l2!r}")
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
        raise ValueError(f"max_iter must be an int >= 1, got {max_iter!r}")
    n, d = tr.shape
    num_c = len(classes)
    with torch.no_grad():
        if method == "ridge":
            mean_x = tr.mean(dim=0)
            y = F.one_hot(tr_idx, num_c).to(tr.dtype)
            mean_y = y.mean(dim=0)
            xc = tr - mean_x
            a = xc.T @ xc + l2 * n * torch.eye(d, dtype=tr.dtype, device=tr.device)
            weight = torch.linalg.lstsq(a, xc.T @ (y - mean_y)).solution.T
            bias = mean_y - weight @ mean_x
        else:
            weight, bias = _logistic(tr, tr_idx, num_c, l2, max_iter)
    acc = ((te @ weight.T + bias).argmax(dim=1) == te_idx).double().mean()
    return LinearProbe(acc, weight, bias, classes)


def _logistic(x: Tensor, y: Tensor, num_c: int, l2: float, max_iter: int) -> tuple[Tensor, Tensor]:
    w = torch.zeros(num_c, x.shape[1], dtype=x.dtype, device=x.device, requires_grad=True)
    b = torch.zeros(num_c, dtype=x.dtype, device=x.device, requires_grad=True)
    opt = torch.optim.LBFGS(
        [w, b],
        lr=1.0,
        max_iter=max_iter,
        tolerance_grad=1e-10,
        tolerance_change=1e-14,
        history_size=20,
        line_search_fn="strong_wolfe",
    )

    def closure() -> Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(x @ w.T + b, y) + 0.5 * l2 * (w * w).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return w.detach(), b.detach()


def zero_shot_accuracy(x: Tensor, labels: Tensor, class_embeddings: Tensor) -> Tensor:
    r"""Zero-shot classification accuracy (CLIP, Radford et al. 2021): each embedding takes the
    class whose prompt embedding is most cosine-similar.

    ``class_embeddings`` is ``(C, D)``, or ``(C, P, D)`` for ``P`` prompts per class, which are
    ensembled as CLIP does: normalise each prompt embedding, average, renormalise.  ``labels``
    hold class indices ``0..C-1``.

    Example:
        >>> import torch
        >>> prompts = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
        >>> x = torch.tensor([[2.0, 0.1], [0.3, 1.0], [1.0, 0.9]])
        >>> round(float(zero_shot_accuracy(x, torch.tensor([0, 1, 1]), prompts)), 4)
        0.6667
    """
    x = check_embeddings("x", x)
    if isinstance(class_embeddings, Tensor) and class_embeddings.dim() == 3:
        ce = check_embeddings("class_embeddings", class_embeddings, ndim=3)
        ce = F.normalize(F.normalize(ce.to(compute_dtype(ce.dtype)), dim=-1).mean(dim=1), dim=-1)
    else:
        ce = check_embeddings("class_embeddings", class_embeddings)
        ce = F.normalize(ce.to(compute_dtype(ce.dtype)), dim=-1)
    check_same_dim(("x", "class_embeddings"), (x, ce))
    labels = check_labels("labels", labels, x.shape[0], x.device)
    if int(labels.min()) < 0 or int(labels.max()) >= ce.shape[0]:
        raise ValueError(
            f"labels must be class indices in [0, {ce.shape[0]}) (one per row of class_embeddings)"
        )
    with torch.no_grad():
        z = F.normalize(x.to(ce.dtype), dim=-1)
        return ((z @ ce.T).argmax(dim=1) == labels).double().mean()


def mean_classifier_accuracy(
    train_x: Tensor, train_labels: Tensor, test_x: Tensor, test_labels: Tensor
) -> Tensor:
    r"""Accuracy of the mean classifier (Arora et al. 2019, "A Theoretical Analysis of
    Contrastive Unsupervised Representation Learning"): the linear classifier whose row for
    class :math:`c` is the mean training representation :math:`\mu_c = \frac{1}{n_c}
    \sum_{y_i = c} f(x_i)`, predicting :math:`\arg\max_c \mu_c^\top f(x)`.  The paper bounds
    its loss by the unsupervised contrastive loss.

    Example:
        >>> import torch
        >>> x = torch.tensor([[1.0, 0.0], [3.0, 0.0], [0.0, 1.0]])
        >>> float(mean_classifier_accuracy(x, torch.tensor([5, 5, 9]), x, torch.tensor([5, 5, 9])))
        1.0
    """
    tr, tr_idx, te, te_idx, classes = _split(train_x, train_labels, test_x, test_labels)
    with torch.no_grad():
        counts = torch.bincount(tr_idx, minlength=len(classes)).to(tr.dtype)
        mu = torch.zeros(len(classes), tr.shape[1], dtype=tr.dtype, device=tr.device)
        mu = mu.index_add(0, tr_idx, tr) / counts[:, None]
        return ((te @ mu.T).argmax(dim=1) == te_idx).double().mean()
