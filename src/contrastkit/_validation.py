"""Up-front argument checks shared by every public entry point.

Each check raises ``ValueError`` (or ``TypeError`` for a wrong type) whose message names the
argument and says what was expected, so that bad input never becomes a silent NaN, a broadcast
or a hang.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import torch
from torch import Tensor

_CHECK_FINITE = True


def set_finite_checks(enabled: bool) -> None:
    """Turn on or off (on by default) the checks that need a host synchronisation on a GPU:
    the NaN/Inf scan of embeddings, scores and logits, and the InfoNCE-family check that at
    least one row has a positive (off: such a batch gives a loss of 0 instead of a ValueError).

    Each costs one reduction and, on a GPU, one host synchronisation per call; switch them off in
    a tuned training loop once the pipeline is known to be sound.

    Example:
        >>> import contrastkit
        >>> contrastkit.set_finite_checks(False)  # a tuned GPU loop: no per-step host syncs
        >>> contrastkit.set_finite_checks(True)
    """
    global _CHECK_FINITE
    _CHECK_FINITE = bool(enabled)


def finite_checks_enabled() -> bool:
    return _CHECK_FINITE


def check_finite(name: str, x: Tensor) -> Tensor:
    """``x`` unchanged, or a ``ValueError`` naming it if it holds NaN or Inf (scores, logits,
    targets: the values a loss would silently turn into a NaN).  Off with
    :func:`set_finite_checks`."""
    if _CHECK_FINITE and x.is_floating_point() and not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains NaN or Inf values")
    return x


def check_tensor(name: str, x: object) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    return x


def check_embeddings(name: str, x: object, ndim: int = 2) -> Tensor:
    """An embedding tensor: floating point, ``ndim`` dims, non-empty, finite."""
    x = check_tensor(name, x)
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if x.dim() != ndim:
        shape = {2: "(batch, dim)", 3: "(batch, views, dim)"}.get(ndim, f"{ndim} dims")
        raise ValueError(f"{name} must have shape {shape}, got shape {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise ValueError(f"{name} is an empty batch (shape {tuple(x.shape)}); expected >= 1 row")
    if x.shape[-1] == 0:
        raise ValueError(f"{name} has feature size 0 (shape {tuple(x.shape)})")
    if _CHECK_FINITE and not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains NaN or Inf values")
    return x


def check_same_dim(names: Sequence[str], tensors: Sequence[Tensor]) -> None:
    dims = [t.shape[-1] for t in tensors]
    if len(set(dims)) > 1:
        desc = ", ".join(f"{n}: {d}" for n, d in zip(names, dims, strict=True))
        raise ValueError(f"feature sizes must match ({desc})")
    devices = {t.device for t in tensors}
    if len(devices) > 1:
        desc = ", ".join(f"{n}: {t.device}" for n, t in zip(names, tensors, strict=True))
        raise ValueError(f"tensors must be on one device ({desc})")


def check_views(loss: str, views: Sequence[object]) -> tuple[Tensor, ...]:
    """At least two ``(B, D)`` views of the same ``B`` samples, one feature size, one device."""
    if len(views) < 2:
        raise ValueError(f"{loss} needs at least 2 views, got {len(views)}")
    checked = tuple(check_embeddings(f"views[{i}]", v) for i, v in enumerate(views))
    n = checked[0].shape[0]
    for i, v in enumerate(checked):
        if v.shape[0] != n:
            raise ValueError(f"views[{i}] has {v.shape[0]} rows but views[0] has {n}")
    check_same_dim([f"views[{i}]" for i in range(len(checked))], checked)
    return checked


def check_labels(name: str, labels: object, length: int, device: torch.device) -> Tensor:
    labels = check_tensor(name, labels)
    if labels.is_floating_point() or labels.is_complex():
        raise TypeError(f"{name} must be an integer or bool tensor, got dtype {labels.dtype}")
    if labels.dim() != 1 or labels.shape[0] != length:
        raise ValueError(f"{name} must have shape ({length},), got shape {tuple(labels.shape)}")
    if labels.device != device:
        raise ValueError(f"{name} is on {labels.device} but the embeddings are on {device}")
    return labels


def check_matrix(name: str, m: object, shape: tuple[int, int], device: torch.device) -> Tensor:
    m = check_tensor(name, m)
    if tuple(m.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(m.shape)}")
    if m.device != device:
        raise ValueError(f"{name} is on {m.device} but the embeddings are on {device}")
    return m


def check_positive_scalar(name: str, value: float | Tensor) -> None:
    if isinstance(value, Tensor):
        if value.numel() != 1:
            raise ValueError(f"{name} must be a scalar, got shape {tuple(value.shape)}")
        v = float(value.detach())
    elif isinstance(value, numbers.Real) and not isinstance(value, bool):
        v = float(value)
    else:
        raise TypeError(f"{name} must be a float or a scalar tensor, got {type(value).__name__}")
    if not (v > 0) or math.isinf(v):
        raise ValueError(f"{name} must be a finite number > 0, got {v}")


def check_choice(name: str, value: object, choices: Sequence[str]) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")
    return value  # type: ignore[return-value]


def check_finite_scalar(name: str, value: float | Tensor) -> None:
    if isinstance(value, Tensor):
        if value.numel() != 1:
            raise ValueError(f"{name} must be a scalar, got shape {tuple(value.shape)}")
        v = float(value.detach())
    elif isinstance(value, numbers.Real) and not isinstance(value, bool):
        v = float(value)
    else:
        raise TypeError(f"{name} must be a float or a scalar tensor, got {type(value).__name__}")
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite, got {v}")
