"""Data for the command: the digits split and views, digit captions, and the user's pair files."""

from __future__ import annotations

import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from contrastkit.cli.config import CLIError, RunConfig


@dataclass
class Split:
    """Train and held-out rows: ``x`` inputs (images or embeddings), ``y`` labels or ``None``,
    ``x2`` the second modality for paired data."""

    x_train: Tensor
    x_test: Tensor
    y_train: Tensor | None = None
    y_test: Tensor | None = None
    x2_train: Tensor | None = None
    x2_test: Tensor | None = None


def digits_test_indices() -> Tensor:
    text = resources.files("contrastkit.cli").joinpath("digits_test_indices.txt").read_text()
    rows = [line for line in text.splitlines() if not line.startswith("#")]
    return torch.tensor([int(t) for t in " ".join(rows).split()], dtype=torch.long)


def digits_split() -> Split:
    """The fixed stratified 70/30 split of the bundled digits (1,257 train, 540 test images)."""
    from contrastkit.data import load_digits

    images, labels = load_digits()
    test = digits_test_indices()
    keep = torch.ones(len(labels), dtype=torch.bool)
    keep[test] = False
    return Split(images[keep], images[test], labels[keep], labels[test])


def augment(images: Tensor, cfg: RunConfig, generator: torch.Generator) -> Tensor:
    """Random affine (rotation, zoom, shear, shift) plus Gaussian noise, ``(B, 8, 8)`` ->
    ``(B, 1, 8, 8)``; every random number comes from ``generator``."""
    n = images.shape[0]

    def uniform(*shape: int) -> Tensor:
        return torch.rand(*shape, generator=generator) * 2 - 1

    angle = uniform(n) * cfg.rotate * math.pi / 180
    zoom = 1 + uniform(n) * cfg.scale
    shear = uniform(n) * cfg.shear
    shift = uniform(n, 2) * cfg.translate
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    theta = torch.stack(
        [
            torch.stack([cos, -sin + shear, shift[:, 0]], 1),
            torch.stack([sin, cos, shift[:, 1]], 1),
        ],
        1,
    )
    x = images[:, None].float()
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, align_corners=False, padding_mode="zeros")
    return out + cfg.noise * torch.randn(out.shape, generator=generator)


# -- captions --------------------------------------------------------------------------------

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
CAPTION_TEMPLATES = (
    "a handwritten {word}",
    "the digit {word}",
    "a scan of the number {digit}",
    "{word}, written by hand",
    "a small grey picture of a {word}",
    "the numeral {digit} in pixels",
    "someone wrote the number {word}",
    "digit {digit}",
)
# Zero-shot prompts: word orders not used for training, averaged per class (CLIP's ensembling).
PROMPT_TEMPLATES = ("the number {word}", "a {word}", "a picture of the digit {digit}")


def caption(label: int, template: int) -> str:
    t = CAPTION_TEMPLATES[template % len(CAPTION_TEMPLATES)]
    return t.format(word=DIGIT_WORDS[label], digit=label)


def all_captions() -> list[str]:
    """Every (class, template) caption, index ``label * T + template``."""
    return [caption(c, t) for c in range(10) for t in range(len(CAPTION_TEMPLATES))]


def prompts() -> list[list[str]]:
    return [[p.format(word=DIGIT_WORDS[c], digit=c) for p in PROMPT_TEMPLATES] for c in range(10)]


# -- the user's pair files ---------------------------------------------------------------------


def load_matrix(path: str, what: str) -> Tensor:
    """A 2-D float array from ``.npy``, ``.pt`` or ``.parquet`` (numeric columns, or one column
    of equal-length lists)."""
    p = Path(path)
    if not p.is_file():
        raise CLIError(f"{what} file {path} does not exist; pass an existing .npy, .pt or .parquet")
    suffix = p.suffix.lower()
    try:
        if suffix == ".npy":
            arr = np.load(p, allow_pickle=False)
        elif suffix == ".pt":
            obj = torch.load(p, map_location="cpu", weights_only=True)
            if not isinstance(obj, torch.Tensor):
                raise ValueError(f"holds a {type(obj).__name__}, not a tensor")
            arr = obj.detach().float().numpy()
        elif suffix == ".parquet":
            arr = _load_parquet(p)
        else:
            raise CLIError(f"{what} file {path} must end in .npy, .pt or .parquet")
    except CLIError:
        raise
    except Exception as e:  # malformed file: any reader error becomes one line
        raise CLIError(f"{what} file {path} could not be read ({type(e).__name__}: {e})") from None
    arr = np.asarray(arr)
    if arr.dtype.kind not in "fiu":
        raise CLIError(f"{what} file {path} must hold numbers, got dtype {arr.dtype}")
    if arr.ndim == 1 and what == "labels":
        if arr.dtype.kind == "f" and not (np.isfinite(arr).all() and (arr == np.round(arr)).all()):
            raise CLIError(
                f"labels file {path} must hold integer classes, got non-integer {arr.dtype} values"
            )
        return torch.from_numpy(arr.astype(np.int64))
    if arr.ndim != 2 or arr.shape[0] < 2 or arr.shape[1] < 1:
        raise CLIError(
            f"{what} file {path} must hold a (rows, dim) matrix, got shape {tuple(arr.shape)}"
        )
    out = torch.from_numpy(arr.astype(np.float32))
    if not bool(torch.isfinite(out).all()):
        raise CLIError(f"{what} file {path} contains NaN or Inf values")
    return out


def _load_parquet(p: Path) -> np.ndarray:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise CLIError(
            f"reading {p} needs pyarrow: pip install pyarrow (or save the array as .npy)"
        ) from None
    table = pq.read_table(p)
    cols = [table.column(i).to_numpy(zero_copy_only=False) for i in range(table.num_columns)]
    if len(cols) == 1 and cols[0].dtype == object:
        return np.stack([np.asarray(v, dtype=np.float32) for v in cols[0]])
    return np.stack(cols, axis=1)


def load_pair(path_a: str, path_b: str, what: tuple[str, str]) -> tuple[Tensor, Tensor]:
    """Two matrices whose rows are pairs (row ``i`` of one with row ``i`` of the other)."""
    a, b = load_matrix(path_a, what[0]), load_matrix(path_b, what[1])
    if a.shape[0] != b.shape[0]:
        raise CLIError(
            f"{path_a} has {a.shape[0]} rows but {path_b} has {b.shape[0]}: row i of each must "
            "be a pair, so the files need the same number of rows"
        )
    return a, b


def load_labels(path: str, rows: int, of: str) -> Tensor:
    """One integer label per row of the file ``of`` (``rows`` rows)."""
    y = load_matrix(path, "labels")
    if y.dim() != 1 or y.shape[0] != rows:
        raise CLIError(
            f"labels file {path} must hold one integer per row of {of} ({rows}), "
            f"got shape {tuple(y.shape)}"
        )
    return y


def pairs_split(cfg: RunConfig) -> Split:
    """Load the two aligned files (and labels), check them, split off ``test_fraction``."""
    a, b = load_pair(cfg.a, cfg.b, ("a", "b"))
    y = load_labels(cfg.labels, a.shape[0], cfg.a) if cfg.labels else None
    n = a.shape[0]
    n_test = max(1, round(n * cfg.test_fraction))
    if n - n_test < 2:
        raise CLIError(f"only {n} pairs: need at least 2 training rows after the held-out split")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.seed))
    te, tr = perm[:n_test].sort().values, perm[n_test:].sort().values
    return Split(
        a[tr],
        a[te],
        None if y is None else y[tr],
        None if y is None else y[te],
        b[tr],
        b[te],
    )
