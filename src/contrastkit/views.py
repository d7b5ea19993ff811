"""Views, pooling and augmentations that create positives.

Contrastive objectives learn whatever their positive pairs share; these functions build the pairs.

- pooling: :func:`mean_pool`, :func:`mean_std_pool` (Prot2Text-V2's H-SCALE),
- text views (token-id tensors; the catalogue of the text-transformations review, Bhattacharjee
  et al.): :func:`token_dropout` (CLaMP's text dropout, word deletion), :func:`token_mask`,
  :func:`token_swap`, :func:`span_crop`,
- model views: :func:`dropout_views` (SimCSE, SupCL-Seq: the same input through an encoder with
  dropout twice),
- compositional positives: :func:`compose` (composition-contrastive sentence embeddings),
- image views: :func:`random_shift`, :func:`gaussian_noise`.

Every function returns new tensors; its inputs are never modified.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from contrastkit._validation import check_choice, check_tensor

__all__ = [
    "mean_pool",
    "mean_std_pool",
    "token_dropout",
    "token_mask",
    "token_swap",
    "span_crop",
    "dropout_views",
    "compose",
    "random_shift",
    "gaussian_noise",
]


def _check_tokens(tokens: Tensor, mask: Tensor | None) -> Tensor:
    tokens = check_tensor("tokens", tokens)
    if tokens.dim() != 3:
        raise ValueError(f"tokens must be (batch, length, dim), got {tuple(tokens.shape)}")
    if mask is None:
        return torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
    mask = check_tensor("mask", mask)
    if tuple(mask.shape) != tuple(tokens.shape[:2]):
        raise ValueError(f"mask must have shape {tuple(tokens.shape[:2])}, got {tuple(mask.shape)}")
    if not bool(mask.any(dim=1).all()):
        raise ValueError("mask must keep at least one token in every row")
    return mask.bool()


def mean_pool(tokens: Tensor, mask: Tensor | None = None) -> Tensor:
    """Mean of the unmasked token embeddings: ``(B, T, D) -> (B, D)``.

    Example:
        >>> import torch
        >>> mean_pool(torch.ones(2, 3, 4)).shape
        torch.Size([2, 4])
    """
    m = _check_tokens(tokens, mask).to(tokens.dtype)[..., None]
    return (tokens * m).sum(1) / m.sum(1)


def mean_std_pool(tokens: Tensor, mask: Tensor | None = None, eps: float = 1e-6) -> Tensor:
    r"""Mean- and std-pooled sequence embedding (Prot2Text-V2, H-SCALE, 2025):
    ``[mu, sigma]`` with ``mu = 1/T sum_t h_t`` and ``sigma = sqrt(1/T sum_t (h_t - mu)^2 + eps)``
    over unmasked tokens: ``(B, T, D) -> (B, 2D)``; align it with text by symmetric InfoNCE.

    Example:
        >>> import torch
        >>> mean_std_pool(torch.randn(2, 5, 4)).shape
        torch.Size([2, 8])
    """
    m = _check_tokens(tokens, mask).to(tokens.dtype)[..., None]
    count = m.sum(1)
    mu = (tokens * m).sum(1) / count
    var = (((tokens - mu[:, None]) ** 2) * m).sum(1) / count
    return torch.cat([mu, (var + eps).sqrt()], dim=-1)


def _check_ids(ids: Tensor, p: float) -> Tensor:
    ids = check_tensor("ids", ids)
    if ids.is_floating_point() or ids.dim() != 2:
        raise ValueError(
            f"ids must be an integer (batch, length) tensor, got {ids.dtype} {tuple(ids.shape)}"
        )
    if not 0.0 <= p < 1.0:
        raise ValueError(f"p must lie in [0, 1), got {p}")
    return ids


def token_dropout(
    ids: Tensor, p: float, pad_id: int, generator: torch.Generator | None = None
) -> Tensor:
    """Delete each non-pad token with probability ``p`` and left-pack the rest (text dropout /
    random word deletion); at least one token of each non-empty row is kept.

    Example:
        >>> import torch
        >>> ids = torch.tensor([[5, 6, 7, 0]])
        >>> token_dropout(ids, 0.0, pad_id=0)
        tensor([[5, 6, 7, 0]])
    """
    ids = _check_ids(ids, p)
    real = ids != pad_id
    keep = real & (torch.rand(ids.shape, generator=generator, device=ids.device) >= p)
    # keep the first real token of any row that would lose everything
    first = real & (real.cumsum(1) == 1)
    empty = ~keep.any(1, keepdim=True)
    keep = keep | (first & empty)
    order = torch.argsort((~keep).to(torch.int8), dim=1, stable=True)
    packed = torch.gather(ids, 1, order)
    kept = torch.gather(keep, 1, order)
    return packed.masked_fill(~kept, pad_id)


def token_mask(
    ids: Tensor,
    p: float,
    mask_id: int,
    pad_id: int | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Replace each (non-pad) token with ``mask_id`` with probability ``p``.

    Example:
        >>> import torch
        >>> token_mask(torch.tensor([[3, 4]]), 0.0, mask_id=1)
        tensor([[3, 4]])
    """
    ids = _check_ids(ids, p)
    hit = torch.rand(ids.shape, generator=generator, device=ids.device) < p
    if pad_id is not None:
        hit &= ids != pad_id
    return ids.masked_fill(hit, mask_id)


def token_swap(
    ids: Tensor, num_swaps: int, pad_id: int, generator: torch.Generator | None = None
) -> Tensor:
    """Swap ``num_swaps`` random pairs of real tokens in each row (random word swap).

    Example:
        >>> import torch
        >>> sorted(token_swap(torch.tensor([[1, 2, 3]]), 1, pad_id=0)[0].tolist())
        [1, 2, 3]
    """
    ids = _check_ids(ids, 0.0)
    if isinstance(num_swaps, bool) or not isinstance(num_swaps, int) or num_swaps < 0:
        raise ValueError(f"num_swaps must be an int >= 0, got {num_swaps!r}")
    out = ids.clone()
    lengths = (ids != pad_id).sum(1)
    for row in range(ids.shape[0]):
        n = int(lengths[row])
        if n < 2:
            continue
        for _ in range(num_swaps):
            i, j = torch.randint(0, n, (2,), generator=generator).tolist()
            real = (ids[row] != pad_id).nonzero().flatten()
            a, b = int(real[i]), int(real[j])
            out[row, a], out[row, b] = out[row, b].clone(), out[row, a].clone()
    return out


def span_crop(
    ids: Tensor, min_fraction: float, pad_id: int, generator: torch.Generator | None = None
) -> Tensor:
    """Keep one random contiguous span of at least ``min_fraction`` of each row's real tokens
    (random cropping, as in DeCLUTR-style span views), left-aligned and padded.

    Example:
        >>> import torch
        >>> span_crop(torch.tensor([[1, 2, 3, 4]]), 1.0, pad_id=0)
        tensor([[1, 2, 3, 4]])
    """
    ids = _check_ids(ids, 0.0)
    if not 0.0 < min_fraction <= 1.0:
        raise ValueError(f"min_fraction must lie in (0, 1], got {min_fraction}")
    out = torch.full_like(ids, pad_id)
    for row in range(ids.shape[0]):
        real = ids[row][ids[row] != pad_id]
        n = real.numel()
        if n == 0:
            continue
        low = max(1, int(round(min_fraction * n)))
        length = int(torch.randint(low, n + 1, (1,), generator=generator))
        start = int(torch.randint(0, n - length + 1, (1,), generator=generator))
        out[row, :length] = real[start : start + length]
    return out


def dropout_views(
    encoder: nn.Module | Callable[[Tensor], Tensor], x: Tensor, num_views: int = 2
) -> list[Tensor]:
    """The same batch through ``encoder`` ``num_views`` times with its dropout active (SimCSE,
    Gao et al. 2021; SupCL-Seq): each pass draws new dropout masks, so the outputs are
    positive views of each other.  The encoder is put in train mode for the passes and restored.

    Example:
        >>> import torch
        >>> enc = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Dropout(0.1))
        >>> a, b = dropout_views(enc, torch.randn(3, 4))
        >>> a.shape
        torch.Size([3, 8])
    """
    if num_views < 2:
        raise ValueError(f"num_views must be >= 2, got {num_views}")
    was_training = getattr(encoder, "training", None)
    if isinstance(encoder, nn.Module):
        encoder.train(True)
    try:
        return [encoder(x) for _ in range(num_views)]
    finally:
        if isinstance(encoder, nn.Module) and was_training is not None:
            encoder.train(was_training)


def compose(parts: Tensor, mask: Tensor | None = None, mode: str = "mean") -> Tensor:
    r"""Composition of phrase (constituent) embeddings into a positive for the whole text
    (Chanchani & Huang 2023, composition-contrastive learning): ``(B, P, D) -> (B, D)`` by
    ``"mean"``, ``"sum"`` or ``"concat_mean"`` (mean of the first and second halves of the parts;
    a row whose mask empties one half takes the other half's mean).

    Example:
        >>> import torch
        >>> compose(torch.ones(2, 3, 4), mode="sum")[0, 0].item()
        3.0
    """
    check_choice("mode", mode, ("mean", "sum", "concat_mean"))
    m = _check_tokens(parts, mask).to(parts.dtype)[..., None]
    if mode == "sum":
        return (parts * m).sum(1)
    if mode == "mean":
        return (parts * m).sum(1) / m.sum(1)
    half = parts.shape[1] // 2
    if half == 0:
        raise ValueError("concat_mean needs at least 2 parts")
    means, present = [], []
    for part, keep in ((parts[:, :half], m[:, :half]), (parts[:, half:], m[:, half:])):
        count = keep.sum(1)
        means.append((part * keep).sum(1) / count.clamp_min(1))
        present.append((count > 0).to(parts.dtype))
    # the mean over the halves that hold a part (the mask keeps at least one per row)
    return (means[0] * present[0] + means[1] * present[1]) / (present[0] + present[1])


def random_shift(
    images: Tensor, max_shift: int = 1, generator: torch.Generator | None = None
) -> Tensor:
    """Translate each image ``(B, C, H, W)`` or ``(B, H, W)`` by up to ``max_shift`` pixels in
    each direction, zero-filling (a cheap affine augmentation for small images).

    Example:
        >>> import torch
        >>> random_shift(torch.ones(2, 8, 8)).shape
        torch.Size([2, 8, 8])
    """
    images = check_tensor("images", images)
    squeeze = images.dim() == 3
    x = images[:, None] if squeeze else images
    if x.dim() != 4:
        raise ValueError(f"images must be (B, H, W) or (B, C, H, W), got {tuple(images.shape)}")
    if isinstance(max_shift, bool) or not isinstance(max_shift, int) or max_shift < 0:
        raise ValueError(f"max_shift must be an int >= 0, got {max_shift!r}")
    b, _, h, w = x.shape
    s = max_shift
    padded = torch.nn.functional.pad(x, (s, s, s, s))
    dx = torch.randint(0, 2 * s + 1, (b,), generator=generator).tolist()
    dy = torch.randint(0, 2 * s + 1, (b,), generator=generator).tolist()
    out = torch.stack([padded[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w] for i in range(b)])
    return out[:, 0] if squeeze else out


def gaussian_noise(x: Tensor, std: float, generator: torch.Generator | None = None) -> Tensor:
    """``x + std * N(0, 1)`` (a new tensor).

    Example:
        >>> import torch
        >>> gaussian_noise(torch.zeros(3), 0.0)
        tensor([0., 0., 0.])
    """
    x = check_tensor("x", x)
    if isinstance(std, bool) or not isinstance(std, (int, float)) or not 0 <= std < math.inf:
        raise ValueError(f"std must be a finite number >= 0, got {std!r}")
    noise = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    return x + std * noise
