"""Real data bundled with contrastkit, so that examples and the command run with no download."""

from __future__ import annotations

from importlib import resources

import numpy as np
import torch
from torch import Tensor

__all__ = ["load_digits"]


def load_digits() -> tuple[Tensor, Tensor]:
    """The 1,797 8x8 handwritten digits of UCI/scikit-learn (see ``data/README.md``).

    Returns:
        ``images`` ``(1797, 8, 8)`` float32 in ``[0, 1]`` and ``labels`` ``(1797,)`` int64.

    Example:
        >>> from contrastkit.data import load_digits
        >>> images, labels = load_digits()
        >>> tuple(images.shape), int(labels.max())
        ((1797, 8, 8), 9)
    """
    with resources.files("contrastkit.data").joinpath("digits.npz").open("rb") as f:
        archive = np.load(f)
        images = torch.from_numpy(archive["images"].astype(np.float32) / 16.0)
        labels = torch.from_numpy(archive["labels"].astype(np.int64))
    return images, labels
