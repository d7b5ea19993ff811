"""contrastkit: contrastive representation learning for PyTorch.

The public surface: :mod:`contrastkit.losses` (``nn.Module`` losses), :mod:`contrastkit.functional`
(the same objectives as functions), :mod:`contrastkit.similarity`, :mod:`contrastkit.pairing`.
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
from contrastkit import distributed, negatives, training  # noqa: E402

__all__ += ["distributed", "negatives", "training"]
