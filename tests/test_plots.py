"""Plots: each returns a Figure that saves to PNG and shows the data it was given."""

from __future__ import annotations

import doctest

import numpy as np
import pytest
import torch

matplotlib = pytest.importorskip("matplotlib")

import contrastkit.plots as PL  # noqa: E402
from contrastkit.metrics import fit_power_law, relevant_ranks  # noqa: E402
from contrastkit.plots import (  # noqa: E402
    plot_alignment_uniformity,
    plot_embedding_2d,
    plot_loss_curve,
    plot_recall_curve,
    plot_similarity_matrix,
)
from contrastkit.similarity import similarity_matrix  # noqa: E402

PNG = b"\x89PNG\r\n\x1a\n"


def saved(fig, tmp_path, name):
    from matplotlib.figure import Figure

    assert isinstance(fig, Figure)
    path = tmp_path / f"{name}.png"
    fig.savefig(path)
    data = path.read_bytes()
    assert data[:8] == PNG and len(data) > 1000
    return data


def test_alignment_uniformity_plane(tmp_path):
    fig = plot_alignment_uniformity({"a": (0.5, -2.0), "b": (0.2, -3.5)})
    saved(fig, tmp_path, "au")
    offsets = np.concatenate([c.get_offsets() for c in fig.axes[0].collections])
    assert offsets.tolist() == [[-2.0, 0.5], [-3.5, 0.2]]  # x = uniformity, y = alignment


def test_similarity_heatmap(tmp_path):
    q, k = torch.randn(6, 4), torch.randn(9, 4)
    s = similarity_matrix(q, k)
    fig = plot_similarity_matrix(s)
    saved(fig, tmp_path, "sim")
    assert np.allclose(fig.axes[0].images[0].get_array(), s.numpy())


def test_embedding_projection(tmp_path):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 6, generator=g, dtype=torch.float64)
    y = torch.arange(40) % 4
    fig = plot_embedding_2d(x, y)
    saved(fig, tmp_path, "pca")
    pts = np.concatenate([c.get_offsets() for c in fig.axes[0].collections])
    # the projection keeps the variance of the top two principal components
    centred = x.numpy() - x.numpy().mean(0)
    top2 = np.sort(np.linalg.svd(centred, compute_uv=False) ** 2)[::-1][:2]
    assert np.allclose(np.sort((pts**2).sum(0))[::-1], top2)
    assert len(fig.axes[0].collections) == 4
    saved(plot_embedding_2d(x), tmp_path, "pca_nolabels")


def test_recall_curve(tmp_path):
    q, k = torch.randn(30, 8), torch.randn(30, 8)
    first = relevant_ranks(q, k).first()
    fig = plot_recall_curve({"model": first, "same": first.clone()}, max_k=10)
    saved(fig, tmp_path, "recall")
    line = fig.axes[0].lines[0]
    want = [(first <= kk).double().mean().item() for kk in range(1, 11)]
    assert np.allclose(line.get_ydata(), want) and line.get_xdata().tolist() == list(range(1, 11))


def test_loss_curve_with_power_law(tmp_path):
    steps = torch.logspace(2, 5, 12, dtype=torch.float64)
    losses = 8.0 * steps**-0.3 + 0.5
    law = fit_power_law(steps, losses)
    fig = plot_loss_curve(losses, steps, power_law=law, log_scale=True)
    saved(fig, tmp_path, "loss")
    data, fit = fig.axes[0].lines
    assert np.allclose(data.get_ydata(), losses.numpy())
    assert np.allclose(fit.get_ydata(), losses.numpy(), rtol=1e-4)


def test_panels_of_one_figure_through_ax(tmp_path):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 3.5), layout="constrained")
    left, right = fig.subplots(1, 2)
    s = similarity_matrix(torch.randn(5, 4), torch.randn(5, 4))
    assert plot_similarity_matrix(s, vmin=-1, vmax=1, ax=left) is fig
    assert plot_loss_curve([3.0, 2.0, 1.5], ax=right) is fig
    saved(fig, tmp_path, "panels")
    assert left.images[0].get_clim() == (-1.0, 1.0)
    assert right.lines[0].get_ydata().tolist() == [3.0, 2.0, 1.5]
    assert len(fig.axes) == 3  # two panels + the heatmap's colour bar
    with pytest.raises(TypeError, match="ax must be a matplotlib Axes"):
        plot_loss_curve([1.0, 0.5], ax="left")
    with pytest.raises(ValueError, match="vmin must be below vmax"):
        plot_similarity_matrix(s, vmin=1, vmax=-1)


def test_recall_curve_leaves_out_queries_without_a_relevant_key():
    from contrastkit.metrics import relevant_ranks

    q = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    labels = torch.tensor([0, 1, 2])
    keys, key_labels = torch.tensor([[1.0, 0.1], [0.2, 1.0]]), torch.tensor([0, 1])
    first = relevant_ranks(q, keys, labels=labels, key_labels=key_labels).first()
    assert first.tolist() == [1, 1, 0]  # the third query has no relevant key
    fig = plot_recall_curve(first, max_k=2)
    assert fig.axes[0].lines[0].get_ydata().tolist() == [1.0, 1.0]  # of the two valid queries


def test_bad_input_errors_name_the_argument():
    with pytest.raises(ValueError, match="similarity must be a non-empty"):
        plot_similarity_matrix(torch.zeros(3))
    with pytest.raises(ValueError, match="losses contains NaN"):
        plot_loss_curve([1.0, float("nan")])
    with pytest.raises(ValueError, match="steps has 2 values but losses has 3"):
        plot_loss_curve([3.0, 2.0, 1.0], [1, 2])
    with pytest.raises(ValueError, match="1-based ranks"):
        plot_recall_curve(torch.tensor([-1, 1]))
    with pytest.raises(ValueError, match="no query with a relevant key"):
        plot_recall_curve(torch.tensor([0, 0]))
    with pytest.raises(ValueError, match="labels must have shape"):
        plot_embedding_2d(torch.randn(5, 3), torch.arange(4))
    with pytest.raises(ValueError, match="points must be a non-empty mapping"):
        plot_alignment_uniformity({})


def test_docstring_examples_run():
    assert doctest.testmod(PL, raise_on_error=False).failed == 0


def test_embedding_2d_labels_must_be_a_tensor():
    with pytest.raises(TypeError, match="labels must be a torch.Tensor"):
        plot_embedding_2d(torch.randn(4, 3), [0, 1, 0, 1])
