"""Engines compute the logits and execute an objective's per-row reductions.

Every engine exposes the same two functions (see :mod:`contrastkit.engine.dense`):

- ``infonce_rows(query, key, pairing, scale, spec, negatives, shared_negatives, both_directions)``
  returning ``[(loss_rows, valid_rows)]`` for query->key, plus key->query when
  ``both_directions``;
- ``sigmoid_rows(query, key, pairing, scale, bias, similarity)`` returning per-row sums.

==============  ==========================================================================
``dense``       materialises the ``B x N`` logits; the reference, fastest for small batches
``streaming``   ``tile x tile`` blocks with an online log-sum-exp, recomputed in backward;
                ``O(B D + tile^2)`` memory, every objective, CPU and GPU
``fused``       Triton kernels (the ``gpu`` extra): the tile lives in registers / shared
                memory; diagonal and label pairings, cosine and dot similarity
``auto``        per call: ``fused`` on CUDA when it supports the configuration, else
                ``streaming`` when the logits are large (:data:`STREAMING_MIN_LOGITS`) or would
                not fit in free GPU memory, else ``dense``
==============  ==========================================================================
"""

from __future__ import annotations

import importlib.util
from types import ModuleType

import torch
from torch import Tensor

from contrastkit.engine import auto, dense, streaming
from contrastkit.pairing import Pairing

ENGINES: dict[str, ModuleType] = {"dense": dense, "streaming": streaming, "auto": auto}
if importlib.util.find_spec("triton") is not None:
    from contrastkit.engine import fused

    ENGINES["fused"] = fused
ENGINE_NAMES = ("auto", "dense", "streaming", "fused")

#: ``auto`` streams when ``B * N`` exceeds this many logits (4096 x 4096: 64 MiB in float32,
#: several times that for the dense engine's masks and autograd buffers).
STREAMING_MIN_LOGITS = 4096 * 4096
#: The dense engine's peak, in ``B x N`` float32 matrices (logits, masks, softmax in backward).
DENSE_MATRICES = 8


def select_engine(name: str, query: Tensor, key: Tensor) -> ModuleType:
    """Resolve ``engine=`` to an engine module; ``"auto"`` decides per call (:func:`choose`)."""
    if name not in ENGINE_NAMES:
        raise ValueError(f"engine must be one of {list(ENGINE_NAMES)}, got {name!r}")
    if name not in ENGINES:
        raise ValueError(
            f"engine={name!r} is not available in this installation (available: {sorted(ENGINES)}"
            "); the fused engine needs Triton: pip install 'contrastkit[gpu]'"
        )
    return ENGINES[name]


def choose(query: Tensor, key: Tensor, pairing: Pairing, **config) -> ModuleType:
    """The engine ``"auto"`` runs for this call; ``config`` is what the fused engine must support
    (``spec=``, ``negatives=``, ``similarity=`` ...: see :func:`contrastkit.engine.fused.supports`).
    """
    fused = ENGINES.get("fused")
    if query.is_cuda and fused is not None and fused.supports(query, pairing, **config):
        return fused
    if pairing.weights is not None and pairing.weights.requires_grad:
        return dense  # the other engines treat soft-positive weights as constants
    logits = query.shape[0] * key.shape[0]
    if logits > STREAMING_MIN_LOGITS:
        return streaming
    if query.is_cuda:
        free, _ = torch.cuda.mem_get_info(query.device)
        if DENSE_MATRICES * 4 * logits > free:
            return streaming
    return dense
