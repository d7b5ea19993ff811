"""Plots of embeddings and training (matplotlib, ``pip install contrastkit[plots]``).

Every function returns a ``matplotlib.figure.Figure`` built without pyplot (no global state, no
display needed); save it with ``fig.savefig("name.png")``.  Pass ``ax=`` (a matplotlib ``Axes``)
to draw into a panel of your own figure instead; the function then returns that axes' figure.
matplotlib is imported on first use.

- :func:`plot_alignment_uniformity`: the alignment-uniformity plane (Wang & Isola 2020).
- :func:`plot_similarity_matrix`: a similarity heatmap.
- :func:`plot_embedding_2d`: a 2-D PCA projection coloured by class.
- :func:`plot_recall_curve`: Recall@K against K.
- :func:`plot_loss_curve`: a loss curve, optionally with a fitted power law.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from contrastkit._validation import check_embeddings, check_labels, check_tensor

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "plot_alignment_uniformity",
    "plot_similarity_matrix",
    "plot_embedding_2d",
    "plot_recall_curve",
    "plot_loss_curve",
]


def _figure(figsize: tuple[float, float]) -> Figure:
    try:
        from matplotlib.figure import Figure
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "contrastkit.plots needs matplotlib: pip install 'contrastkit[plots]'"
        ) from err
    return Figure(figsize=figsize, layout="constrained")


def _axes(ax: Axes | None, figsize: tuple[float, float]) -> tuple[Figure, Axes]:
    """The user's ``ax`` and its figure, or a new figure with one axes."""
    if ax is None:
        fig = _figure(figsize)
        return fig, fig.add_subplot()
    if not (hasattr(ax, "get_figure") and hasattr(ax, "scatter")):
        raise TypeError(f"ax must be a matplotlib Axes or None, got {type(ax).__name__}")
    return ax.get_figure(), ax


def _numbers(name: str, values: Any) -> Tensor:
    if isinstance(values, Tensor):
        t = values.detach().to("cpu", torch.float64).flatten()
    else:
        t = torch.as_tensor(values, dtype=torch.float64).flatten()
    if t.numel() == 0:
        raise ValueError(f"{name} is empty")
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} contains NaN or Inf values")
    return t


def plot_alignment_uniformity(
    points: Mapping[str, tuple[float, float]],
    *,
    figsize: tuple[float, float] = (4.5, 4.0),
    ax: Axes | None = None,
) -> Figure:
    """The alignment-uniformity plane of Wang & Isola 2020: one point per model.

    Args:
        points: ``{name: (alignment, uniformity)}``, e.g. from
            :func:`contrastkit.metrics.alignment` and :func:`contrastkit.metrics.uniformity`.
            Lower-left is better.

    Example:
        >>> fig = plot_alignment_uniformity({"tau=0.07": (0.4, -3.1), "tau=0.5": (0.2, -2.0)})
        >>> fig.axes[0].get_xlabel()
        'uniformity  (log E exp(-2 |x - y|^2))'
    """
    if not isinstance(points, Mapping) or not points:
        raise ValueError("points must be a non-empty mapping {name: (alignment, uniformity)}")
    fig, ax = _axes(ax, figsize)
    for name, pair in points.items():
        if len(pair) != 2:
            raise ValueError(f"points[{name!r}] must be (alignment, uniformity), got {pair!r}")
        a, u = (float(v) for v in pair)
        ax.scatter([u], [a], label=str(name))
        ax.annotate(str(name), (u, a), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xlabel("uniformity  (log E exp(-2 |x - y|^2))")
    ax.set_ylabel("alignment  (E |x - y|^2)")
    ax.set_title("alignment vs uniformity (lower-left is better)")
    return fig


def plot_similarity_matrix(
    similarity: Tensor,
    *,
    title: str = "similarity",
    cmap: str = "viridis",
    vmin: float | None = None,
    vmax: float | None = None,
    figsize: tuple[float, float] = (5.0, 4.0),
    ax: Axes | None = None,
) -> Figure:
    """A heatmap of a ``(Q, K)`` similarity matrix (e.g.
    :func:`contrastkit.similarity.similarity_matrix` of a batch), with a colour bar.
    ``vmin``/``vmax`` fix the colour range (e.g. ``-1, 1`` for cosine similarities, so that
    heatmaps of several models compare); by default it spans the data.

    Example:
        >>> import torch
        >>> fig = plot_similarity_matrix(torch.eye(4))
        >>> fig.axes[0].images[0].get_array().shape
        (4, 4)
    """
    s = check_tensor("similarity", similarity).detach().to("cpu", torch.float64)
    if s.dim() != 2 or s.numel() == 0:
        raise ValueError(f"similarity must be a non-empty (Q, K) matrix, got {tuple(s.shape)}")
    if not bool(torch.isfinite(s).all()):
        raise ValueError("similarity contains NaN or Inf values")
    fig, ax = _axes(ax, figsize)
    if vmin is not None and vmax is not None and not float(vmin) < float(vmax):
        raise ValueError(f"vmin must be below vmax, got vmin={vmin}, vmax={vmax}")
    im = ax.imshow(
        s.numpy(), cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto", interpolation="nearest"
    )
    fig.colorbar(im, ax=ax)
    ax.set_xlabel("key")
    ax.set_ylabel("query")
    ax.set_title(title)
    return fig


def plot_embedding_2d(
    x: Tensor,
    labels: Tensor | None = None,
    *,
    title: str = "PCA projection",
    figsize: tuple[float, float] = (5.0, 4.5),
    ax: Axes | None = None,
) -> Figure:
    """Embeddings projected on their first two principal components, coloured by ``labels``.

    Example:
        >>> import torch
        >>> fig = plot_embedding_2d(torch.randn(30, 8), torch.arange(30) % 3)
        >>> len(fig.axes[0].collections)       # one scatter per class
        3
    """
    x = check_embeddings("x", x).detach().to("cpu", torch.float64)
    if x.shape[0] < 2:
        raise ValueError(f"x needs at least 2 rows for a projection, got {x.shape[0]}")
    centered = x - x.mean(dim=0)
    _, _, v = torch.linalg.svd(centered, full_matrices=False)
    comps = v[:2].T
    if comps.shape[1] < 2:
        comps = torch.cat([comps, torch.zeros(x.shape[1], 1, dtype=x.dtype)], dim=1)
    xy = (centered @ comps).numpy()
    fig, ax = _axes(ax, figsize)
    if labels is None:
        ax.scatter(xy[:, 0], xy[:, 1], s=8)
    else:
        labels = check_tensor("labels", labels).cpu()
        labels = check_labels("labels", labels, x.shape[0], torch.device("cpu"))
        for c in torch.unique(labels).tolist():
            keep = (labels == c).numpy()
            ax.scatter(xy[keep, 0], xy[keep, 1], s=8, label=str(c))
        if len(torch.unique(labels)) <= 20:
            ax.legend(fontsize=7, markerscale=2)
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    ax.set_title(title)
    return fig


def plot_recall_curve(
    ranks: Mapping[str, Tensor] | Tensor,
    *,
    max_k: int | None = None,
    figsize: tuple[float, float] = (5.0, 4.0),
    ax: Axes | None = None,
) -> Figure:
    """Recall@K against K from the first-relevant ranks of each query.

    Args:
        ranks: ``(Q,)`` ranks (e.g. ``relevant_ranks(q, k).first()``), or ``{name: ranks}`` to
            compare several models.  A rank of ``0`` marks a query without a relevant key
            (as ``first()`` gives): it is left out, as the retrieval metrics leave it out.
        max_k: the largest K shown (default: the largest rank, at most 100).

    Example:
        >>> import torch
        >>> fig = plot_recall_curve(torch.tensor([1, 1, 2, 5]), max_k=5)
        >>> fig.axes[0].lines[0].get_ydata().tolist()
        [0.5, 0.75, 0.75, 0.75, 1.0]
    """
    curves = dict(ranks) if isinstance(ranks, Mapping) else {"recall": ranks}
    if not curves:
        raise ValueError("ranks is empty")
    data = {name: _numbers(f"ranks[{name!r}]", r) for name, r in curves.items()}
    for name, r in data.items():
        if bool((r < 0).any()):
            raise ValueError(f"ranks[{name!r}] must be 1-based ranks (>= 1, or 0: no relevant key)")
        if not bool((r >= 1).any()):
            raise ValueError(f"ranks[{name!r}] holds no query with a relevant key (all 0)")
        data[name] = r[r >= 1]
    if max_k is None:
        max_k = int(min(100, max(float(r.max()) for r in data.values())))
    if isinstance(max_k, bool) or not isinstance(max_k, int) or max_k < 1:
        raise ValueError(f"max_k must be an int >= 1, got {max_k!r}")
    ks = torch.arange(1, max_k + 1, dtype=torch.float64)
    fig, ax = _axes(ax, figsize)
    for name, r in data.items():
        recall = (r[None, :] <= ks[:, None]).double().mean(dim=1)
        ax.plot(ks.numpy(), recall.numpy(), marker="." if max_k <= 20 else None, label=name)
    ax.set_xlabel("K")
    ax.set_ylabel("Recall@K")
    ax.set_ylim(0, 1.02)
    if len(data) > 1:
        ax.legend()
    return fig


def plot_loss_curve(
    losses: Sequence[float] | Tensor,
    steps: Sequence[float] | Tensor | None = None,
    *,
    power_law: Any = None,
    log_scale: bool = False,
    figsize: tuple[float, float] = (5.0, 3.5),
    ax: Axes | None = None,
) -> Figure:
    """A loss curve; with ``power_law`` (a :class:`contrastkit.metrics.PowerLaw`, e.g. from
    :func:`contrastkit.metrics.fit_power_law` on ``(steps, losses)``) its fit is overlaid.

    Example:
        >>> fig = plot_loss_curve([3.0, 2.0, 1.5, 1.2], log_scale=True)
        >>> fig.axes[0].lines[0].get_ydata().tolist()
        [3.0, 2.0, 1.5, 1.2]
    """
    y = _numbers("losses", losses)
    x = (
        torch.arange(1, len(y) + 1, dtype=torch.float64)
        if steps is None
        else _numbers("steps", steps)
    )
    if x.shape != y.shape:
        raise ValueError(f"steps has {x.numel()} values but losses has {y.numel()}")
    fig, ax = _axes(ax, figsize)
    ax.plot(x.numpy(), y.numpy(), label="loss")
    if power_law is not None:
        ax.plot(x.numpy(), power_law(x).numpy(), linestyle="--", label="power-law fit")
        ax.legend()
    if log_scale:
        ax.set_xscale("log")
        ax.set_yscale("log")
    ax.set_xlabel("step" if steps is None else "scale")
    ax.set_ylabel("loss")
    return fig
