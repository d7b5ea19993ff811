"""The contract every loss module of :mod:`contrastkit.losses` keeps, checked on each one:

- forward and backward run and give a finite scalar with finite gradients;
- nothing the caller passed is changed (values compared after forward and backward);
- bf16 inputs give a float32 loss (fp32 accumulation) close to the float32 loss; float64 inputs
  (and a float64 module) give a float64 loss;
- a NaN in any floating-point input is a ``ValueError`` that names that input;
- losses with a temperature stay finite, with finite gradients, at temperature 0.01.

The per-paper equations are checked in the ``test_objectives_*`` files; this file checks the
conventions across all of them, and fails when a new loss is added without a case here.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable

import pytest
import torch

import contrastkit.losses as L

VAR_POSITIONAL = inspect.Parameter.VAR_POSITIONAL

B, D, C, T, V = 6, 8, 4, 5, 11
LABELS = torch.tensor([0, 1, 2, 0, 1, 2])
ONE_HOT = LABELS[:, None] == torch.arange(C)[None, :]

Case = tuple[dict, Callable[[Callable], tuple[tuple, dict]]]


def _pair(**kw) -> Case:
    return kw, lambda r: ((r(B, D), r(B, D)), {})


CASES: dict[str, Case] = {
    # two embedding sets (query, key)
    "InfoNCE": _pair(temperature=0.07),
    "NTXent": _pair(temperature=0.5),
    "SigLIP": _pair(),
    "NTXentAM": _pair(temperature=0.2),
    "CircleLoss": _pair(),
    "PromCSELoss": ({}, lambda r: ((r(B, D), r(B, D), r(B, D)), {})),
    "FocalInfoNCE": _pair(temperature=0.07),
    "FocalSigmoidLoss": _pair(temperature=0.07),
    "HardNegativeInfoNCE": _pair(temperature=0.5),
    "CACR": _pair(),
    "MACL": _pair(temperature=0.1),
    "CWCL": ({"temperature": 0.07}, lambda r: ((r(B, D), r(B, D), r(B, 5)), {})),
    "AlignmentUniformityLoss": _pair(),
    "CLIPAlignmentUniformityLoss": _pair(temperature=0.07),
    "KernelMixtureLoss": _pair(),
    "CrossCorrelationLoss": _pair(),
    "CrossCosineSimilarityLoss": _pair(),
    "CrossSigmoidSimilarityLoss": _pair(),
    "CosineDistillationLoss": _pair(),
    "OneToKInfoNCE": ({"temperature": 0.07}, lambda r: ((r(B, D), r(B, 3, D)), {})),
    "SupCon": ({"temperature": 0.1}, lambda r: ((r(B, 2, D),), {"labels": LABELS})),
    "TripletLoss": ({}, lambda r: ((r(B, D), r(B, D)), {"labels": LABELS})),
    "QuadrupletLoss": ({}, lambda r: ((r(B, D), r(B, D)), {"labels": LABELS})),
    "PairContrastiveLoss": ({}, lambda r: ((r(B, D), r(B, D)), {"similar": LABELS == 0})),
    "NegativeWeightedInfoNCE": (
        {"temperature": 0.07},
        lambda r: ((r(B, D), r(B, D)), {"negative_weights": r(B, B).exp()}),
    ),
    "TopKNegativesInfoNCE": (
        {"k": 3, "temperature": 0.07},
        lambda r: ((r(B, D), r(B, D), r(10, D)), {}),
    ),
    "ISogCLR": ({"num_samples": B}, lambda r: ((r(B, D), r(B, D), torch.arange(B)), {})),
    "MomentumDistillationITC": (
        {"temperature": 0.07},
        lambda r: ((r(B, D), r(B, D), r(B, D), r(B, D), r(7, D), r(7, D)), {}),
    ),
    "GraphInfoNCE": (
        {"temperature": 0.07},
        lambda r: ((r(B, D), r(B, D), LABELS[:, None] == LABELS[None, :]), {}),
    ),
    "BagInfoNCE": (
        {"temperature": 0.07},
        lambda r: ((r(B, D), r(B, D), LABELS, LABELS), {}),
    ),
    "BestAlignmentConsistency": ({}, lambda r: ((r(B, T, D), r(B, T - 2, D)), {})),
    "ScatteringLoss": ({}, lambda r: ((r(B, D),), {})),
    "SepCLRLoss": ({}, lambda r: ((r(B, D), r(B, D), r(B, D), r(B, D), LABELS == 0), {})),
    "MixupInfoNCE": (
        {"temperature": 0.07},
        lambda r: ((r(B, D), r(B, D), 0.3, torch.tensor([3, 0, 5, 1, 2, 4])), {}),
    ),
    "MetrixLoss": ({}, lambda r: ((r(B, D), r(B, D), r(B, B).sigmoid()), {})),
    "SupReMixLoss": ({"temperature": 0.1}, lambda r: ((r(B, D), r(B)), {})),
    "FocalSupConLoss": ({"temperature": 0.07}, lambda r: ((r(B, D), LABELS), {})),
    "PrototypeContrastLoss": (
        {"num_prototypes": C, "dim": D, "temperature": 0.1},
        lambda r: ((r(B, D), LABELS), {}),
    ),
    "HarmonicLoss": ({"in_features": D, "num_classes": C}, lambda r: ((r(B, D), LABELS), {})),
    # scores and logits
    "SoftCrossEntropy": ({}, lambda r: ((r(B, C), r(B, C).softmax(1)), {})),
    "SelfDistillationLoss": ({"num_outputs": C}, lambda r: ((r(B, C), r(B, C)), {})),
    "MannWhitneyLoss": ({}, lambda r: ((r(B, C), ONE_HOT), {})),
    "ListwiseDistillation": ({}, lambda r: ((r(B, C), r(B, C)), {})),
    "CPRDLoss": ({"num_hard": 2, "temperature": 0.05}, lambda r: ((r(B, C), r(B, C)), {})),
    "DecoupledSoftmax": ({}, lambda r: ((r(B, C), ONE_HOT), {})),
    "SoftTopKLoss": ({"k": 2}, lambda r: ((r(B, C), ONE_HOT), {})),
    "ListwiseRerankLoss": ({}, lambda r: ((r(B, C),), {})),
    "PointwiseRerankLoss": ({}, lambda r: ((r(B), (LABELS == 0).float(), r(B)), {})),
    "CoSENTLoss": ({}, lambda r: ((r(B), r(B)), {})),
    "PearsonLoss": ({}, lambda r: ((r(B), r(B)), {})),
    "PairScoreDistillation": ({}, lambda r: ((r(B), r(B)), {})),
    "CorruptedMarginLoss": ({}, lambda r: ((r(B), r(B)), {})),
    "SimCTGLoss": (
        {},
        lambda r: ((r(2, T, V), torch.tensor([[1, 2, 3, 5, 6], [3, 3, 1, 0, 2]]), r(2, T, D)), {}),
    ),
    "ContrastiveTokenLoss": (
        {},
        lambda r: ((r(2, T, V), torch.tensor([[1, 2, 3, 5, 6], [3, 3, 1, 0, 2]])), {}),
    ),
    "DistiLLM2Loss": ({}, lambda r: ((r(2, T, V), r(2, T, V), r(2, 3, V), r(2, 3, V)), {})),
    "Squentropy": ({}, lambda r: ((r(B, C), LABELS), {})),
    "NumberTokenLoss": (
        {"number_token_ids": torch.tensor([1, 2, 3]), "number_values": torch.tensor([0.0, 1, 2])},
        lambda r: ((r(2, T, V), torch.tensor([[1, 2, 3, 5, 6], [3, 3, 1, 0, 2]])), {}),
    ),
    "CompSumLoss": ({}, lambda r: ((r(B, C), LABELS), {})),
    "SmoothAdversarialCompSumLoss": ({}, lambda r: ((r(B, C), r(B, C), LABELS), {})),
    "BalancedSoftmaxLoss": (
        {"class_counts": torch.tensor([10, 5, 2, 1])},
        lambda r: ((r(B, C), LABELS), {}),
    ),
    "BalancedMSELoss": ({}, lambda r: ((r(B), r(B)), {})),
    "ClassIndependentBCELoss": ({}, lambda r: ((r(B, C), LABELS), {})),
    "MultiLabelBCELoss": ({}, lambda r: ((r(B, C), (r(B, C) > 0).float()), {})),
    "InformationMaximizationLoss": ({}, lambda r: ((r(B, C),), {})),
}
# Compositions of other losses, tested in test_objectives_composite.py.
COMPOSITES = {"WeightedSum", "MinNormBalancer"}


def _inputs(name: str) -> tuple[tuple, dict]:
    g = torch.Generator().manual_seed(sum(map(ord, name)))
    return CASES[name][1](lambda *shape: torch.randn(*shape, generator=g))


def _module(name: str, **override) -> torch.nn.Module:
    torch.manual_seed(0)  # same initial parameters for every call (HarmonicLoss' centres)
    return getattr(L, name)(**{**CASES[name][0], **override})


def _floats(args: tuple) -> list[int]:
    return [i for i, a in enumerate(args) if isinstance(a, torch.Tensor) and a.is_floating_point()]


def _cast(args: tuple, kwargs: dict, dtype: torch.dtype) -> tuple[tuple, dict]:
    def cast(a):
        return a.to(dtype) if isinstance(a, torch.Tensor) and a.is_floating_point() else a

    return tuple(cast(a) for a in args), {k: cast(v) for k, v in kwargs.items()}


def test_every_loss_has_a_case():
    assert set(L.__all__) - COMPOSITES == set(CASES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_loss_contract(name):
    args, kwargs = _inputs(name)
    before = [a.clone() if isinstance(a, torch.Tensor) else a for a in args]
    kw_before = {k: v.clone() for k, v in kwargs.items()}
    loss_fn = _module(name)
    params = list(inspect.signature(loss_fn.forward).parameters)

    # forward + backward: a finite scalar, finite gradients, inputs unchanged
    leaves = [a.clone().requires_grad_() if i in _floats(args) else a for i, a in enumerate(args)]
    loss = loss_fn(*leaves, **kwargs)
    assert loss.shape == () and loss.dtype == torch.float32 and bool(torch.isfinite(loss))
    loss.backward()
    grads = [leaves[i].grad for i in _floats(args) if leaves[i].grad is not None]
    assert grads, f"{name}: no input received a gradient"
    assert all(bool(torch.isfinite(gr).all()) for gr in grads)
    out = _module(name)(*args, **kwargs)
    for a, b in zip(args, before, strict=True):
        assert not isinstance(a, torch.Tensor) or torch.equal(a, b), f"{name} changed its input"
    for k, v in kwargs.items():
        assert torch.equal(v, kw_before[k]), f"{name} changed {k}="
    torch.testing.assert_close(out, loss.detach(), rtol=1e-5, atol=1e-6)

    # bf16 in, float32 out (fp32 accumulation); float64 in, float64 out
    value = float(loss.detach())
    low = _module(name)(
        *_cast(args, kwargs, torch.bfloat16)[0], **_cast(args, kwargs, torch.bfloat16)[1]
    )
    assert low.dtype == torch.float32 and bool(torch.isfinite(low))
    assert abs(float(low.detach()) - value) <= 0.03 * abs(value) + 0.03, (name, low, value)
    a64, k64 = _cast(args, kwargs, torch.float64)
    high = float(_module(name).double()(*a64, **k64).detach())
    assert _module(name).double()(*a64, **k64).dtype == torch.float64
    assert abs(high - value) <= 1e-4 * abs(high) + 1e-5, (name, high, value)

    # a NaN in any floating-point input: a ValueError naming that input
    variadic = inspect.signature(loss_fn.forward).parameters[params[0]].kind
    for i in _floats(args):
        bad = list(args)
        bad[i] = args[i].clone()
        bad[i].view(-1)[1] = float("nan")
        arg = re.escape(f"views[{i}]") if variadic is VAR_POSITIONAL else params[i]
        with pytest.raises(ValueError, match=rf"^{arg} .*NaN"):
            _module(name)(*bad, **kwargs)


LOW_TEMPERATURE = sorted(
    n for n, (kw, _) in CASES.items() if "temperature" in kw and n not in {"CPRDLoss"}
)


@pytest.mark.parametrize("name", LOW_TEMPERATURE)
def test_temperature_001_stays_finite(name):
    args, kwargs = _inputs(name)
    leaves = [(a * 30).requires_grad_() if i in _floats(args) else a for i, a in enumerate(args)]
    loss = _module(name, temperature=0.01)(*leaves, **kwargs)
    loss.backward()
    assert bool(torch.isfinite(loss)), name
    for i in _floats(args):
        if leaves[i].grad is not None:
            assert bool(torch.isfinite(leaves[i].grad).all()), name


def test_prototype_module_names_a_feature_size_mismatch():
    loss_fn = _module("PrototypeContrastLoss")
    with pytest.raises(ValueError, match=r"features has 9 features .*\(dim=8\)"):
        loss_fn(torch.randn(B, D + 1), LABELS)


@pytest.mark.parametrize("name", sorted(CASES))
def test_state_dict_round_trip(name):
    """A checkpoint resumes a loss exactly: parameters (temperatures, SigLIP's bias) and state
    (ISogCLR's per-sample temperatures, DINO's centre, running prototypes) after a step."""
    args, kwargs = _inputs(name)
    trained = _module(name)
    trained(*args, **kwargs)  # a training step updates whatever state the loss keeps
    with torch.no_grad():
        for p in trained.parameters():
            p.add_(0.01)
    state = {k: v.clone() for k, v in trained.state_dict().items()}
    torch.manual_seed(1)  # a different initialisation, which the checkpoint must replace
    restored = getattr(L, name)(**CASES[name][0])
    restored.load_state_dict(state)
    assert restored.state_dict().keys() == trained.state_dict().keys()
    for k, v in trained.state_dict().items():
        assert torch.equal(restored.state_dict()[k], v), f"{name}: {k} not restored"
    torch.testing.assert_close(
        restored.eval()(*args, **kwargs), trained.eval()(*args, **kwargs), rtol=0, atol=0
    )
