"""Negative sources beyond the batch: a queue / memory bank (MoCo, XBM), momentum (EMA) encoders,
past models (Sy-CON), and gradient accumulation that keeps its negatives (ContAccum).  Negatives
from other processes are the losses' ``distributed=True``."""

from contrastkit.negatives.accumulation import AccumulatedBatch, ContAccum
from contrastkit.negatives.momentum import (
    MomentumEncoder,
    cosine_momentum,
    frozen_copy,
    momentum_update_,
)
from contrastkit.negatives.queue import NegativeQueue, QueueSnapshot
from contrastkit.negatives.sycon import sycon_loss

__all__ = [
    "NegativeQueue",
    "QueueSnapshot",
    "MomentumEncoder",
    "momentum_update_",
    "cosine_momentum",
    "frozen_copy",
    "sycon_loss",
    "ContAccum",
    "AccumulatedBatch",
]
