"""``engine="auto"``: pick the engine per call from the device, the sizes and the configuration
(see :func:`contrastkit.engine.choose`), then run it."""

from __future__ import annotations

from torch import Tensor

from contrastkit import engine as _engines
from contrastkit.objectives.infonce import InfoNCESpec
from contrastkit.pairing import Pairing


def infonce_rows(
    query: Tensor,
    key: Tensor,
    pairing: Pairing,
    scale: float | Tensor,
    spec: InfoNCESpec,
    negatives: Tensor | None = None,
    shared_negatives: Tensor | None = None,
    both_directions: bool = False,
) -> list[tuple[Tensor, Tensor]]:
    chosen = _engines.choose(query, key, pairing, spec=spec, similarity=spec.similarity)
    return chosen.infonce_rows(
        query, key, pairing, scale, spec, negatives, shared_negatives, both_directions
    )


def sigmoid_rows(
    query: Tensor,
    key: Tensor,
    pairing: Pairing,
    scale: float | Tensor,
    bias: float | Tensor,
    similarity: str,
) -> Tensor:
    chosen = _engines.choose(query, key, pairing, similarity=similarity)
    return chosen.sigmoid_rows(query, key, pairing, scale, bias, similarity)
