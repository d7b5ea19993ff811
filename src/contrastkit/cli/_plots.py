"""PNG plots of a run (matplotlib, imported lazily; ``pip install 'contrastkit[plots]'``).

CLI-INTERNAL STAND-IN for :mod:`contrastkit.plots`: loss curve, alignment-uniformity
trajectory, similarity heatmap and a 2-D PCA projection of the held-out embeddings.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def pca_2d(x: Tensor) -> Tensor:
    """The first two principal components of the rows of ``x``."""
    x = x.double() - x.double().mean(0)
    _, _, v = torch.linalg.svd(x, full_matrices=False)
    return x @ v[:2].T


def save_run_plots(run_dir: Path, history: dict[str, Any], data: dict[str, Any]) -> list[Path]:
    """Write the four plots of a training run; returns their paths (empty without
    matplotlib)."""
    plt = _pyplot()
    if plt is None:
        return []
    out = []
    out.append(_loss_curve(plt, run_dir / "loss_curve.png", history["loss"]))
    out.append(
        _align_uniform(
            plt, run_dir / "alignment_uniformity.png", history["geometry"], data["raw_geometry"]
        )
    )
    out.append(_heatmap(plt, run_dir / "similarity_heatmap.png", data))
    out.append(_projection(plt, run_dir / "projection.png", data))
    return out


def _loss_curve(plt, path: Path, losses: list[float]) -> Path:
    fig, ax = plt.subplots(figsize=(6, 4))
    steps = torch.arange(1, len(losses) + 1)
    ax.plot(steps, losses, lw=0.8, alpha=0.5, label="step")
    if len(losses) >= 10:
        w = max(2, len(losses) // 20)
        smooth = torch.tensor(losses).unfold(0, w, 1).mean(1)
        ax.plot(steps[w - 1 :], smooth, lw=2, label=f"mean of {w}")
    ax.set(xlabel="step", ylabel="loss", title="training loss")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _align_uniform(plt, path: Path, geometry: list, raw: tuple[float, float] | None) -> Path:
    fig, ax = plt.subplots(figsize=(5, 4))
    if geometry:
        g = torch.tensor(geometry, dtype=torch.float64)
        sc = ax.scatter(g[:, 2], g[:, 1], c=g[:, 0], cmap="viridis", s=18, label="each epoch")
        ax.plot(g[:, 2], g[:, 1], lw=0.6, color="grey")
        fig.colorbar(sc, ax=ax, label="step")
    if raw is not None:
        ax.scatter([raw[1]], [raw[0]], marker="x", s=60, color="red", label="raw input")
    ax.set(
        xlabel="uniformity (lower is better)",
        ylabel="alignment (lower is better)",
        title="alignment vs uniformity (Wang & Isola 2020)",
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _subset(labels: Tensor | None, n: int, per_class: int = 12) -> Tensor:
    if labels is None:
        return torch.arange(min(n, 96))
    rows = [torch.nonzero(labels == c).flatten()[:per_class] for c in labels.unique()]
    return torch.cat(rows)


def _heatmap(plt, path: Path, data: dict[str, Any]) -> Path:
    x, y = data["test"], data.get("labels")
    idx = _subset(y, x.shape[0])
    other = data.get("test_other")
    a = F.normalize(x[idx].double(), dim=1)
    b = F.normalize(other[idx].double(), dim=1) if other is not None else a
    fig, ax = plt.subplots(figsize=(5, 4.4))
    im = ax.imshow(a @ b.T, cmap="magma", vmin=-1, vmax=1)
    fig.colorbar(im, ax=ax, label="cosine similarity")
    what = "held-out rows" + (" sorted by class" if y is not None else "")
    ax.set(
        title="similarity heatmap" + (" (one modality vs the other)" if other is not None else ""),
        xlabel=what,
        ylabel=what,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _projection(plt, path: Path, data: dict[str, Any]) -> Path:
    y = data.get("labels")
    panels = [("raw input", data["raw"]), ("trained", data["test"])]
    fig, axes = plt.subplots(1, 2, figsize=(9, 4.2))
    for ax, (name, x) in zip(axes, panels, strict=True):
        p = pca_2d(x[:4000])
        c = None if y is None else y[: p.shape[0]]
        sc = ax.scatter(p[:, 0], p[:, 1], c=c, cmap="tab10", s=6)
        ax.set(title=f"{name}: PCA of held-out embeddings", xticks=[], yticks=[])
    if y is not None:
        fig.colorbar(sc, ax=axes, label="class")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def save_bench_plot(path: Path, rows: list[dict[str, Any]]) -> Path | None:
    """Time and peak memory against batch size, one line per engine."""
    plt = _pyplot()
    if plt is None:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(9, 4))
    for engine in sorted({r["engine"] for r in rows}):
        rs = [r for r in rows if r["engine"] == engine and r.get("ms") is not None]
        bs = [r["batch_size"] for r in rs]
        axes[0].plot(bs, [r["ms"] for r in rs], marker="o", label=engine)
        axes[1].plot(bs, [r["peak_mib"] for r in rs], marker="o", label=engine)
    axes[0].set(xscale="log", yscale="log", xlabel="batch size", ylabel="ms per forward+backward")
    axes[1].set(xscale="log", yscale="log", xlabel="batch size", ylabel="peak memory (MiB)")
    for ax in axes:
        ax.legend()
        ax.grid(alpha=0.3)
    fig.suptitle("contrastkit engines")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
