"""PNG plots of a run, drawn by :mod:`contrastkit.plots` (matplotlib, imported lazily;
``pip install 'contrastkit[plots]'``): the loss curve, the alignment-uniformity trajectory, a
similarity heatmap and 2-D PCA projections of the held-out embeddings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from contrastkit import plots

DPI = 100


def available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _save(fig, path: Path) -> Path:
    fig.savefig(path, dpi=DPI)
    return path


def save_run_plots(run_dir: Path, history: dict[str, Any], data: dict[str, Any]) -> list[Path]:
    """Write the four plots of a training run; returns their paths (empty without
    matplotlib)."""
    if not available():
        return []
    return [
        _save(_loss_curve(history["loss"]), run_dir / "loss_curve.png"),
        _save(
            _align_uniform(history["geometry"], data["raw_geometry"]),
            run_dir / "alignment_uniformity.png",
        ),
        _save(_heatmap(data), run_dir / "similarity_heatmap.png"),
        _projection(run_dir / "projection.png", data),
    ]


def _loss_curve(losses: list[float]):
    fig = plots.plot_loss_curve(losses)
    ax = fig.axes[0]
    if len(losses) >= 10:  # the step losses are noisy: overlay a running mean
        w = max(2, len(losses) // 20)
        smooth = torch.tensor(losses).unfold(0, w, 1).mean(1)
        ax.plot(range(w, len(losses) + 1), smooth.tolist(), lw=2, label=f"mean of {w}")
        ax.legend()
    ax.set_title("training loss")
    return fig


def _align_uniform(geometry: list, raw: tuple[float, float] | None):
    """The held-out (alignment, uniformity) after the first and the last epoch (and of the raw
    input), with the path through every epoch in between."""
    points = {} if raw is None else {"raw input": raw}
    if geometry:
        for step, a, u in (geometry[0], geometry[-1]):
            points[f"step {int(step)}"] = (a, u)
    fig = plots.plot_alignment_uniformity(points)
    if len(geometry) > 2:
        g = torch.tensor(geometry, dtype=torch.float64)
        fig.axes[0].plot(g[:, 2].tolist(), g[:, 1].tolist(), lw=0.8, color="grey", marker=".")
    return fig


def _subset(labels: Tensor | None, n: int, per_class: int = 12) -> Tensor:
    if labels is None:
        return torch.arange(min(n, 96))
    rows = [torch.nonzero(labels == c).flatten()[:per_class] for c in labels.unique()]
    return torch.cat(rows)


def _heatmap(data: dict[str, Any]):
    x, y = data["test"], data.get("labels")
    idx = _subset(y, x.shape[0])
    other = data.get("test_other")
    a = F.normalize(x[idx].double(), dim=1)
    b = F.normalize(other[idx].double(), dim=1) if other is not None else a
    title = "cosine similarity" + (" (one modality vs the other)" if other is not None else "")
    fig = plots.plot_similarity_matrix(a @ b.T, title=title, cmap="magma")
    order = " sorted by class" if y is not None else ""
    if other is not None:  # rows: the first modality's embeddings, columns: the other's
        fig.axes[0].set(xlabel=f"held-out rows{order}, other modality",
                        ylabel=f"held-out rows{order}, first modality")  # fmt: skip
    else:
        fig.axes[0].set(xlabel=f"held-out rows{order}", ylabel=f"held-out rows{order}")
    return fig


def _projection(path: Path, data: dict[str, Any]) -> Path:
    """The PCA projections of the raw input and of the trained embeddings, side by side."""
    import matplotlib.image
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    y = data.get("labels")
    panels = []
    for name, x in (("raw input", data["raw"]), ("trained", data["test"])):
        x = x[:4000]
        fig = plots.plot_embedding_2d(x, None if y is None else y[: x.shape[0]], title=name)
        canvas = FigureCanvasAgg(fig)
        fig.set_dpi(DPI)
        canvas.draw()
        panels.append(np.asarray(canvas.buffer_rgba()))
    matplotlib.image.imsave(path, np.concatenate(panels, axis=1))
    return path


def save_bench_plot(path: Path, rows: list[dict[str, Any]]) -> Path | None:
    """Time and peak memory against batch size, one line per engine."""
    if not available():
        return None
    from matplotlib.figure import Figure
    from matplotlib.ticker import LogFormatter, NullLocator

    class Plain(LogFormatter):  # 0.6, 20, 300 rather than 6e-01, 2x10^1, 3x10^2
        def __call__(self, x, pos=None):
            return f"{x:g}" if super().__call__(x, pos) else ""

    fig = Figure(figsize=(9, 4), layout="constrained")
    axes = fig.subplots(1, 2)
    for engine in sorted({r["engine"] for r in rows}):
        rs = [r for r in rows if r["engine"] == engine and r.get("ms") is not None]
        bs = [r["batch_size"] for r in rs]
        axes[0].plot(bs, [r["ms"] for r in rs], marker="o", label=engine)
        axes[1].plot(bs, [r["peak_mib"] for r in rs], marker="o", label=engine)
    axes[0].set(xscale="log", yscale="log", xlabel="batch size", ylabel="ms per forward+backward")
    # symlog: a batch that fits in memory already held reads 0 MiB, which a log axis cannot show
    axes[1].set_yscale("symlog", linthresh=1.0)
    axes[1].set(xscale="log", xlabel="batch size", ylabel="peak extra memory (MiB)")
    axes[1].set_ylim(bottom=0)
    sizes = sorted({r["batch_size"] for r in rows})
    for ax in axes:
        ax.set_xticks(sizes, [str(b) for b in sizes])  # the measured sizes, not 10^k labels
        ax.xaxis.set_minor_locator(NullLocator())
        ax.yaxis.set_major_formatter(Plain(labelOnlyBase=False, minor_thresholds=(2, 0.5)))
        ax.yaxis.set_minor_formatter(Plain(labelOnlyBase=False, minor_thresholds=(2, 0.5)))
        ax.legend()
        ax.grid(alpha=0.3)
    fig.suptitle("contrastkit engines")
    return _save(fig, path)
