"""``nn.Module`` losses: thin wrappers that hold configuration and learnable parameters and
call :mod:`contrastkit.functional`.

=====================  =============================  ==========================================
loss                   inputs                         paper
=====================  =============================  ==========================================
:class:`InfoNCE`       ``query (B,D), key (N,D)``     van den Oord 2018; CLIP (Radford 2021)
:class:`NTXent`        ``z1, z2, ... (N,D)``          SimCLR (Chen 2020); CMC (Tian 2020)
:class:`SupCon`        ``features (B,V,D), labels``   Khosla 2020
:class:`SigLIP`        ``query (B,D), key (N,D)``     Zhai 2023
=====================  =============================  ==========================================
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from contrastkit import functional as CF
from contrastkit._validation import check_choice, check_finite_scalar, check_positive_scalar
from contrastkit.engine import ENGINE_NAMES
from contrastkit.objectives.infonce import VARIANTS
from contrastkit.similarity import SIMILARITIES, LogitScale

__all__ = ["InfoNCE", "NTXent", "SupCon", "SigLIP"]


class InfoNCE(nn.Module):
    r"""InfoNCE / CLIP loss with one or many positives (see :func:`contrastkit.functional.info_nce`
    for the equation).

    ``loss(query, key)`` takes query ``i`` and key ``i`` as the positive pair;
    ``loss(query, key, labels=y)`` makes every pair with equal labels positive ("out": mean over a
    row's positives, then over rows); ``loss(query, key, negatives=n)`` adds hard negatives
    (``(B, K, D)`` per query or ``(M, D)`` shared); ``loss(x, labels=y)`` contrasts a set with
    itself, self-pairs excluded.

    Args:
        temperature: initial :math:`\tau` (0.07 as in CLIP and MoCo).
        symmetric: average query->key and key->query (CLIP).
        learnable_temperature: learn :math:`\log(1/\tau)` as the parameter ``logit_scale``,
            clamped to ``max_scale`` (100).
        similarity, variant, decoupled, margin, engine: see the functional form.
        distributed: contrast with every ``torch.distributed`` rank's keys; the loss is the
            global batch's (see :mod:`contrastkit.engine.distributed`).

    Example:
        >>> import torch
        >>> from contrastkit.losses import InfoNCE
        >>> loss_fn = InfoNCE(temperature=0.07, symmetric=True, learnable_temperature=True)
        >>> image, text = torch.randn(32, 64), torch.randn(32, 64)
        >>> loss = loss_fn(image, text)
        >>> loss.backward()
        >>> loss_fn.logit_scale.logit_scale.grad is not None
        True
    """

    def __init__(
        self,
        temperature: float = 0.07,
        symmetric: bool = False,
        learnable_temperature: bool = False,
        *,
        similarity: str = "cosine",
        variant: str = "out",
        decoupled: bool = False,
        margin: float = 0.0,
        max_scale: float = 100.0,
        engine: str = "auto",
        distributed: bool = False,
    ) -> None:
        super().__init__()
        self.logit_scale = LogitScale(temperature, learnable_temperature, max_scale)
        self.distributed = bool(distributed)
        self.symmetric = bool(symmetric)
        self.similarity = check_choice("similarity", similarity, SIMILARITIES)
        self.variant = check_choice("variant", variant, VARIANTS)
        self.decoupled = bool(decoupled)
        check_finite_scalar("margin", margin)
        self.margin = float(margin)
        self.engine = check_choice("engine", engine, ENGINE_NAMES)

    @property
    def temperature(self) -> float | Tensor:
        """The current temperature (a differentiable tensor when learnable)."""
        scale = self.logit_scale()
        return 1.0 / scale

    def forward(
        self,
        query: Tensor,
        key: Tensor | None = None,
        *,
        labels: Tensor | None = None,
        key_labels: Tensor | None = None,
        positives: Tensor | None = None,
        exclude: Tensor | None = None,
        negatives: Tensor | None = None,
    ) -> Tensor:
        return CF.info_nce(
            query,
            key,
            labels=labels,
            key_labels=key_labels,
            positives=positives,
            exclude=exclude,
            negatives=negatives,
            temperature=self.temperature,
            similarity=self.similarity,
            variant=self.variant,
            symmetric=self.symmetric,
            decoupled=self.decoupled,
            margin=self.margin,
            engine=self.engine,
            distributed=self.distributed,
        )

    def extra_repr(self) -> str:
        return (
            f"symmetric={self.symmetric}, similarity={self.similarity!r}, "
            f"variant={self.variant!r}, decoupled={self.decoupled}, margin={self.margin}"
            + (f", engine={self.engine!r}" if self.engine != "auto" else "")
            + (", distributed=True" if self.distributed else "")
        )


class NTXent(nn.Module):
    r"""NT-Xent (SimCLR) over two or more views; see :func:`contrastkit.functional.nt_xent`.

    Example:
        >>> import torch
        >>> from contrastkit.losses import NTXent
        >>> z1, z2 = torch.randn(16, 32), torch.randn(16, 32)
        >>> NTXent(temperature=0.5)(z1, z2).shape
        torch.Size([])
    """

    def __init__(
        self,
        temperature: float = 0.5,
        *,
        similarity: str = "cosine",
        engine: str = "auto",
        distributed: bool = False,
    ) -> None:
        super().__init__()
        self.logit_scale = LogitScale(temperature)
        self.distributed = bool(distributed)
        self.similarity = check_choice("similarity", similarity, SIMILARITIES)
        self.engine = check_choice("engine", engine, ENGINE_NAMES)

    def forward(self, *views: Tensor) -> Tensor:
        return CF.nt_xent(
            *views,
            temperature=self.logit_scale.temperature,
            similarity=self.similarity,
            engine=self.engine,
            distributed=self.distributed,
        )

    def extra_repr(self) -> str:
        return (
            f"similarity={self.similarity!r}"
            + (f", engine={self.engine!r}" if self.engine != "auto" else "")
            + (", distributed=True" if self.distributed else "")
        )


class SupCon(nn.Module):
    r"""Supervised contrastive loss; see :func:`contrastkit.functional.supcon`.

    Example:
        >>> import torch
        >>> from contrastkit.losses import SupCon
        >>> features = torch.randn(8, 2, 16)            # 8 samples, 2 views
        >>> labels = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
        >>> SupCon(temperature=0.1)(features, labels).shape
        torch.Size([])
    """

    def __init__(
        self,
        temperature: float = 0.1,
        variant: str = "out",
        *,
        similarity: str = "cosine",
        engine: str = "auto",
        distributed: bool = False,
    ) -> None:
        super().__init__()
        self.logit_scale = LogitScale(temperature)
        self.distributed = bool(distributed)
        self.variant = check_choice("variant", variant, VARIANTS)
        self.similarity = check_choice("similarity", similarity, SIMILARITIES)
        self.engine = check_choice("engine", engine, ENGINE_NAMES)

    def forward(self, features: Tensor, labels: Tensor | None = None) -> Tensor:
        return CF.supcon(
            features,
            labels,
            temperature=self.logit_scale.temperature,
            variant=self.variant,
            similarity=self.similarity,
            engine=self.engine,
            distributed=self.distributed,
        )

    def extra_repr(self) -> str:
        return (
            f"variant={self.variant!r}, similarity={self.similarity!r}"
            + (f", engine={self.engine!r}" if self.engine != "auto" else "")
            + (", distributed=True" if self.distributed else "")
        )


class SigLIP(nn.Module):
    r"""Pairwise sigmoid loss with learnable scale and bias; see
    :func:`contrastkit.functional.siglip`.

    The scale is learned as ``log_scale`` (:math:`t = e^{\text{log\_scale}}`, initialised to
    ``init_scale = 10``) and the bias as ``bias`` (initialised to ``-10``), as in the paper.

    Example:
        >>> import torch
        >>> from contrastkit.losses import SigLIP
        >>> loss_fn = SigLIP()
        >>> loss = loss_fn(torch.randn(8, 16), torch.randn(8, 16))
        >>> loss.backward()
        >>> loss_fn.bias.grad is not None
        True
    """

    def __init__(
        self,
        init_scale: float = 10.0,
        init_bias: float = -10.0,
        learnable: bool = True,
        *,
        similarity: str = "cosine",
        engine: str = "auto",
        distributed: bool = False,
    ) -> None:
        super().__init__()
        check_positive_scalar("init_scale", init_scale)
        check_finite_scalar("init_bias", init_bias)
        log_scale = torch.tensor(math.log(init_scale))
        bias = torch.tensor(float(init_bias))
        if learnable:
            self.log_scale = nn.Parameter(log_scale)
            self.bias = nn.Parameter(bias)
        else:
            self.register_buffer("log_scale", log_scale)
            self.register_buffer("bias", bias)
        self.similarity = check_choice("similarity", similarity, SIMILARITIES)
        self.engine = check_choice("engine", engine, ENGINE_NAMES)
        self.distributed = bool(distributed)

    def forward(
        self,
        query: Tensor,
        key: Tensor,
        *,
        labels: Tensor | None = None,
        key_labels: Tensor | None = None,
        positives: Tensor | None = None,
        exclude: Tensor | None = None,
    ) -> Tensor:
        return CF.siglip(
            query,
            key,
            scale=self.log_scale.exp(),
            bias=self.bias,
            labels=labels,
            key_labels=key_labels,
            positives=positives,
            exclude=exclude,
            similarity=self.similarity,
            engine=self.engine,
            distributed=self.distributed,
        )

    def extra_repr(self) -> str:
        scale, bias = float(self.log_scale.detach().exp()), float(self.bias.detach())
        return (
            f"scale={scale:.4g}, bias={bias:.4g}, "
            f"learnable={isinstance(self.log_scale, nn.Parameter)}, similarity={self.similarity!r}"
            + (f", engine={self.engine!r}" if self.engine != "auto" else "")
            + (", distributed=True" if self.distributed else "")
        )


# --- issue 5 part A re-exports ---
# nn.Module forms of the MARGIN, HARD, SOFT and RANK objectives.
from contrastkit.objectives.hardness import (  # noqa: E402
    CACR,
    MACL,
    FocalInfoNCE,
    FocalSigmoidLoss,
    HardNegativeInfoNCE,
    ISogCLR,
    NegativeWeightedInfoNCE,
    TopKNegativesInfoNCE,
)
from contrastkit.objectives.margin import (  # noqa: E402
    CircleLoss,
    CorruptedMarginLoss,
    NTXentAM,
    PairContrastiveLoss,
    PromCSELoss,
    QuadrupletLoss,
    TripletLoss,
)
from contrastkit.objectives.ranking import (  # noqa: E402
    CoSENTLoss,
    CPRDLoss,
    DecoupledSoftmax,
    ListwiseDistillation,
    ListwiseRerankLoss,
    MannWhitneyLoss,
    PairScoreDistillation,
    PearsonLoss,
    PointwiseRerankLoss,
    SoftTopKLoss,
)
from contrastkit.objectives.soft import (  # noqa: E402
    CWCL,
    BagInfoNCE,
    BestAlignmentConsistency,
    CosineDistillationLoss,
    GraphInfoNCE,
    MomentumDistillationITC,
    OneToKInfoNCE,
    SelfDistillationLoss,
    SoftCrossEntropy,
)

__all__ += [
    # MARGIN
    "NTXentAM",
    "CircleLoss",
    "PromCSELoss",
    "TripletLoss",
    "QuadrupletLoss",
    "PairContrastiveLoss",
    "CorruptedMarginLoss",
    # HARD
    "FocalInfoNCE",
    "FocalSigmoidLoss",
    "HardNegativeInfoNCE",
    "NegativeWeightedInfoNCE",
    "TopKNegativesInfoNCE",
    "CACR",
    "MACL",
    "ISogCLR",
    # SOFT
    "CWCL",
    "MomentumDistillationITC",
    "OneToKInfoNCE",
    "GraphInfoNCE",
    "BagInfoNCE",
    "SoftCrossEntropy",
    "SelfDistillationLoss",
    "CosineDistillationLoss",
    "BestAlignmentConsistency",
    # RANK
    "MannWhitneyLoss",
    "ListwiseDistillation",
    "CPRDLoss",
    "DecoupledSoftmax",
    "SoftTopKLoss",
    "ListwiseRerankLoss",
    "PointwiseRerankLoss",
    "CoSENTLoss",
    "PearsonLoss",
    "PairScoreDistillation",
]

# --- issue 5 part B re-exports ---
from contrastkit.objectives.classification import (  # noqa: E402
    BalancedMSELoss,
    BalancedSoftmaxLoss,
    ClassIndependentBCELoss,
    CompSumLoss,
    HarmonicLoss,
    InformationMaximizationLoss,
    MultiLabelBCELoss,
    NumberTokenLoss,
    SmoothAdversarialCompSumLoss,
    Squentropy,
)
from contrastkit.objectives.composite import (  # noqa: E402
    MinNormBalancer,
    WeightedSum,
)
from contrastkit.objectives.geometry import (  # noqa: E402
    AlignmentUniformityLoss,
    CLIPAlignmentUniformityLoss,
    CrossCorrelationLoss,
    CrossCosineSimilarityLoss,
    CrossSigmoidSimilarityLoss,
    KernelMixtureLoss,
    ScatteringLoss,
    SepCLRLoss,
)
from contrastkit.objectives.mixup import (  # noqa: E402
    FocalSupConLoss,
    MetrixLoss,
    MixupInfoNCE,
    SupReMixLoss,
)
from contrastkit.objectives.prototype import (  # noqa: E402
    PrototypeContrastLoss,
)
from contrastkit.objectives.token import (  # noqa: E402
    ContrastiveTokenLoss,
    DistiLLM2Loss,
    SimCTGLoss,
)

__all__ += [
    "AlignmentUniformityLoss",
    "CLIPAlignmentUniformityLoss",
    "KernelMixtureLoss",
    "ScatteringLoss",
    "CrossCorrelationLoss",
    "CrossCosineSimilarityLoss",
    "CrossSigmoidSimilarityLoss",
    "SepCLRLoss",
    "MixupInfoNCE",
    "MetrixLoss",
    "SupReMixLoss",
    "FocalSupConLoss",
    "SimCTGLoss",
    "ContrastiveTokenLoss",
    "DistiLLM2Loss",
    "HarmonicLoss",
    "Squentropy",
    "NumberTokenLoss",
    "CompSumLoss",
    "SmoothAdversarialCompSumLoss",
    "BalancedSoftmaxLoss",
    "BalancedMSELoss",
    "ClassIndependentBCELoss",
    "MultiLabelBCELoss",
    "InformationMaximizationLoss",
    "PrototypeContrastLoss",
    "WeightedSum",
    "MinNormBalancer",
]
