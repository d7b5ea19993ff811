"""Engines compute the logits and execute an objective's per-row reductions.

Every engine exposes the same two functions (see :mod:`contrastkit.engine.dense`):

- ``infonce_rows(query, key, pairing, scale, spec, negatives, shared_negatives, both_directions)``
  returning ``[(loss_rows, valid_rows)]`` for query->key, plus key->query when
  ``both_directions``;
- ``sigmoid_rows(query, key, pairing, scale, bias, similarity)`` returning per-row sums.

``dense`` materialises the ``B x N`` logits; other engines register themselves in ``ENGINES``.
"""

from __future__ import annotations

from types import ModuleType

from torch import Tensor

from contrastkit.engine import dense

ENGINES: dict[str, ModuleType] = {"dense": dense}
ENGINE_NAMES = ("auto", "dense", "streaming", "fused")


def select_engine(name: str, query: Tensor, key: Tensor) -> ModuleType:
    """Resolve ``engine=`` to an engine module; ``"auto"`` picks the fastest that fits."""
    if name not in ENGINE_NAMES:
        raise ValueError(f"engine must be one of {list(ENGINE_NAMES)}, got {name!r}")
    if name == "auto":
        return ENGINES["dense"]
    if name not in ENGINES:
        raise ValueError(
            f"engine={name!r} is not available in this installation (available: {sorted(ENGINES)})"
        )
    return ENGINES[name]
