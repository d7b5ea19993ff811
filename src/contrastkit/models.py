"""Small encoders for examples and the ``contrastkit`` command: a CNN for 8x8 images, an MLP
projection head and a bag-of-words caption tower.

They are deliberately tiny (a few hundred thousand parameters) so that the recipes train in
seconds on a CPU; swap in any ``nn.Module`` that maps a batch to ``(B, D)`` embeddings.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = ["SmallCNN", "MLP", "ImageTower", "WordTokenizer", "CaptionTower"]


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "group":
        return nn.GroupNorm(8 if channels % 8 == 0 else 1, channels)
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    raise ValueError(f"norm must be 'group' or 'batch', got {kind!r}")


class SmallCNN(nn.Module):
    """Three 3x3 convolutions, each followed by a normalisation and a ReLU, pooled to one vector.

    ``norm="group"`` (GroupNorm, Wu & He 2018): a sample's features do not depend on the rest of
    its batch, so gradient caching and data-parallel runs reproduce one-process training exactly.
    ``norm="batch"`` (BatchNorm): centres features across the batch, which two-tower training
    from scratch (CLIP, SigLIP) needs to escape the collapsed start; statistics are per process
    and per gradient-cache chunk.  The convolutions have no bias (the normalisation removes it).

    Args:
        width: channels of the first convolution (then ``2 * width`` and ``4 * width``).
        norm: ``"group"`` or ``"batch"``.

    Shape:
        input ``(B, 1, H, W)`` or ``(B, H, W)``, output ``(B, 4 * width)``.

    Example:
        >>> import torch
        >>> from contrastkit.models import SmallCNN
        >>> SmallCNN(width=8)(torch.rand(5, 8, 8)).shape
        torch.Size([5, 32])
    """

    def __init__(self, width: int = 32, norm: str = "group") -> None:
        super().__init__()
        if width < 1:
            raise ValueError(f"width must be >= 1, got {width}")
        w = width
        self.out_dim = 4 * w
        self.net = nn.Sequential(
            nn.Conv2d(1, w, 3, padding=1, bias=False),
            _norm(norm, w),
            nn.ReLU(),
            nn.Conv2d(w, 2 * w, 3, padding=1, bias=False),
            _norm(norm, 2 * w),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(2 * w, 4 * w, 3, padding=1, bias=False),
            _norm(norm, 4 * w),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )

    def forward(self, images: Tensor) -> Tensor:
        if images.dim() == 3:
            images = images[:, None]
        return self.net(images)


class MLP(nn.Module):
    """``Linear -> ReLU -> Linear`` (SimCLR's projection head, Chen et al. 2020), or one
    ``Linear`` when ``hidden_dim == 0``.

    Example:
        >>> import torch
        >>> from contrastkit.models import MLP
        >>> MLP(16, 32, 8)(torch.randn(4, 16)).shape
        torch.Size([4, 8])
    """

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int) -> None:
        super().__init__()
        if hidden_dim > 0:
            self.net = nn.Sequential(
                nn.Linear(in_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, out_dim)
            )
        else:
            self.net = nn.Linear(in_dim, out_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class ImageTower(nn.Module):
    """A :class:`SmallCNN` backbone followed by an :class:`MLP` projection head.

    ``features(x)`` gives the backbone output (used for kNN and linear probes, as in SimCLR);
    ``forward(x)`` the projection that the loss sees.

    Example:
        >>> import torch
        >>> from contrastkit.models import ImageTower
        >>> tower = ImageTower(width=8, hidden_dim=32, embed_dim=16)
        >>> x = torch.rand(3, 8, 8)
        >>> tower(x).shape, tower.features(x).shape
        (torch.Size([3, 16]), torch.Size([3, 32]))
    """

    def __init__(
        self, width: int = 32, hidden_dim: int = 128, embed_dim: int = 64, norm: str = "group"
    ) -> None:
        super().__init__()
        self.backbone = SmallCNN(width, norm)
        self.head = MLP(self.backbone.out_dim, hidden_dim, embed_dim)

    def features(self, images: Tensor) -> Tensor:
        return self.backbone(images)

    def forward(self, images: Tensor) -> Tensor:
        return self.head(self.backbone(images))


class WordTokenizer:
    """Lower-case word tokenizer over a fixed vocabulary; index 0 pads and unknown words are
    dropped.

    Example:
        >>> from contrastkit.models import WordTokenizer
        >>> tok = WordTokenizer.from_texts(["a digit three", "the number 3"])
        >>> ids = tok(["a digit 3", "unknown words only"])
        >>> ids.shape, int((ids[1] > 0).sum())
        (torch.Size([2, 3]), 0)
    """

    def __init__(self, vocabulary: Sequence[str]) -> None:
        self.vocabulary = list(vocabulary)
        self.index = {w: i + 1 for i, w in enumerate(self.vocabulary)}

    @staticmethod
    def words(text: str) -> list[str]:
        return re.findall(r"[a-z0-9]+", text.lower())

    @classmethod
    def from_texts(cls, texts: Sequence[str]) -> WordTokenizer:
        return cls(sorted({w for t in texts for w in cls.words(t)}))

    def __len__(self) -> int:
        return len(self.vocabulary) + 1

    def __call__(self, texts: Sequence[str]) -> Tensor:
        rows = [[self.index[w] for w in self.words(t) if w in self.index] for t in texts]
        width = max(1, max((len(r) for r in rows), default=1))
        out = torch.zeros(len(rows), width, dtype=torch.long)
        for i, r in enumerate(rows):
            out[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        return out


class CaptionTower(nn.Module):
    """A bag-of-words text encoder: the mean of learned word embeddings, then an :class:`MLP`.

    Args:
        vocab_size: number of token ids including the padding id 0 (``len(tokenizer)``).
        word_dim: size of a word embedding.
        hidden_dim, embed_dim: the MLP's hidden and output sizes.

    Shape:
        input ``(B, L)`` token ids (0 = padding), output ``(B, embed_dim)``.

    Example:
        >>> import torch
        >>> from contrastkit.models import CaptionTower
        >>> tower = CaptionTower(vocab_size=20, word_dim=8, hidden_dim=16, embed_dim=4)
        >>> tower(torch.tensor([[1, 2, 0], [3, 0, 0]])).shape
        torch.Size([2, 4])
    """

    def __init__(
        self, vocab_size: int, word_dim: int = 64, hidden_dim: int = 128, embed_dim: int = 64
    ) -> None:
        super().__init__()
        self.embedding = nn.EmbeddingBag(vocab_size, word_dim, mode="mean", padding_idx=0)
        self.head = MLP(word_dim, hidden_dim, embed_dim)

    def forward(self, token_ids: Tensor) -> Tensor:
        return self.head(self.embedding(token_ids))
