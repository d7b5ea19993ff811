"""contrastkit: contrastive representation learning for PyTorch.

The public surface: :mod:`contrastkit.losses` (``nn.Module`` losses), :mod:`contrastkit.functional`
(the same objectives as functions), :mod:`contrastkit.similarity`, :mod:`contrastkit.pairing`,
:mod:`contrastkit.engine` (dense, streaming, fused, auto), :mod:`contrastkit.distributed`,
:mod:`contrastkit.negatives`, :mod:`contrastkit.training` (GradCache, miners, samplers),
:mod:`contrastkit.metrics`, :mod:`contrastkit.views`, :mod:`contrastkit.diagnostics` and, with the
``plots`` extra, :mod:`contrastkit.plots`.

Example:
    >>> import torch, contrastkit
    >>> loss = contrastkit.InfoNCE(temperature=0.07, symmetric=True)
    >>> float(loss(torch.eye(4), torch.eye(4))) < 0.01
    True
"""

from contrastkit import functional, losses
from contrastkit._validation import set_finite_checks
from contrastkit.losses import InfoNCE, NTXent, SigLIP, SupCon
from contrastkit.pairing import Pairing
from contrastkit.similarity import LogitScale, similarity_matrix

__version__ = "0.1.0"

__all__ = [
    "functional",
    "losses",
    "InfoNCE",
    "NTXent",
    "SupCon",
    "SigLIP",
    "Pairing",
    "LogitScale",
    "similarity_matrix",
    "set_finite_checks",
    "__version__",
]

# -- multi-process training, gradient caching, negative sources (issue 4) ------------------------
from contrastkit import distributed, metrics, negatives, training  # noqa: E402

__all__ += ["distributed", "metrics", "negatives", "training"]
