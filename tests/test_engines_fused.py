"""The fused (Triton) engine against the dense engine.

On a machine without a GPU the kernels run in Triton's interpreter (``TRITON_INTERPRET=1``, set
below before Triton is imported), which is slow: sizes stay tiny, but larger than the
interpreter's 16 x 16 tiles and 16-wide feature slices, so every loop runs over several tiles
with ragged ends.  With CUDA the same tests run the compiled kernels.
"""

from __future__ import annotations

import os
import sys

import pytest
import torch

HAS_CUDA = torch.cuda.is_available()
if not HAS_CUDA:
    # Triton decides interpreted vs compiled when it defines its jit functions (its own library
    # included), so this must precede the first ``import triton`` in the process.
    _TRITON_IMPORTED_EARLY = "triton" in sys.modules
    os.environ["TRITON_INTERPRET"] = "1"
pytest.importorskip("triton")

from contrastkit import functional as CF  # noqa: E402
from contrastkit.engine import choose, dense, fused, streaming  # noqa: E402
from contrastkit.objectives.infonce import InfoNCESpec  # noqa: E402
from contrastkit.pairing import Pairing  # noqa: E402
from test_engines import _rel, _scalar_bound, assert_matches_dense, infonce, sigmoid  # noqa: E402

B, N, D = 33, 40, 20


@pytest.fixture
def device():
    if HAS_CUDA:
        return torch.device("cuda")
    assert not _TRITON_IMPORTED_EARLY, "triton was imported before TRITON_INTERPRET=1 was set"
    return torch.device("cpu")


def _pairing(kind: str, device: torch.device):
    if kind == "diagonal":
        return Pairing.diagonal(B, N, device=device), N
    if kind == "labels":
        labels = torch.randint(0, 4, (B,), device=device)
        return Pairing.from_labels(labels, torch.randint(0, 4, (N,), device=device)), N
    return Pairing.from_labels(torch.randint(0, 5, (B,), device=device), exclude_self=True), B


@pytest.mark.parametrize("option", ["plain", "decoupled_margin", "negatives_dot"])
@pytest.mark.parametrize("variant", ["out", "in"])
@pytest.mark.parametrize("kind", ["diagonal", "labels", "self"])
def test_fused_infonce_equals_dense(kind, variant, option, device):
    pairing, n = _pairing(kind, device)
    query = torch.randn(B, D, device=device)
    key = query if kind == "self" else torch.randn(n, D, device=device)
    similarity = "dot" if option == "negatives_dot" else "cosine"
    scale = torch.tensor(100.0 if similarity == "cosine" else 3.0, device=device)  # tau = 0.01
    negs = shared = None
    if option == "negatives_dot":
        negs = torch.randn(B, 3, D, device=device)
        shared = torch.randn(21, D, device=device)
    extra = dict(decoupled=True, margin=0.2) if option == "decoupled_margin" else {}
    spec = InfoNCESpec(similarity=similarity, variant=variant, **extra)
    assert_matches_dense(fused, infonce, (query, key, pairing, scale, spec, negs, shared), 1, 2)


def test_fused_one_direction_and_rows_with_all_or_no_positives(device):
    # 21 queries, 17 keys (fewer keys than queries); queries labelled 0 match every key
    query_labels = torch.tensor([0, 1, 0, 1, 2, 0, 2] * 3, device=device)
    pairing = Pairing.from_labels(query_labels, torch.zeros(17, dtype=torch.long, device=device))
    query, key = torch.randn(21, D, device=device), torch.randn(17, D, device=device)
    for decoupled in (False, True):
        spec = InfoNCESpec(decoupled=decoupled)
        args = (query, key, pairing, torch.tensor(10.0, device=device), spec, None, None, False)
        assert_matches_dense(fused, infonce, args, 1, 2)


@pytest.mark.parametrize("kind", ["diagonal", "labels", "self"])
def test_fused_sigmoid_equals_dense(kind, device):
    pairing, n = _pairing(kind, device)
    query = torch.randn(B, D, device=device)
    key = torch.randn(n, D, device=device)
    scale, bias = torch.tensor(10.0, device=device), torch.tensor(-10.0, device=device)
    assert_matches_dense(fused, sigmoid, (query, key, pairing, scale, bias, "cosine"), 2, n)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_fused_half_inputs(dtype, device):
    query = torch.randn(B, D, device=device).to(dtype)
    key = torch.randn(N, D, device=device).to(dtype)
    pairing = Pairing.diagonal(B, N, device=device)
    scale = torch.tensor(100.0, device=device)
    args = (query, key, pairing, scale, InfoNCESpec(), None, None, True)
    loss, _, grads = infonce(fused, *args)
    ref_loss, _, ref_grads = infonce(dense, *args)
    for a, b in zip(loss, ref_loss, strict=True):
        assert a.dtype == torch.float32 and torch.isfinite(a).all()
        # the kernel rounds the normalised inputs back to the input dtype
        assert _rel(a, b) <= 2e-2
    for g, rg in zip(grads[:2], ref_grads[:2], strict=True):
        assert g.dtype == rg.dtype and torch.isfinite(g).all()
        assert _rel(g, rg) <= 5e-2
    # the scale's gradient cancels to a small sum: compare it with its a-priori bound
    bound = _scalar_bound(args, [(r, None) for r in loss], 2)
    assert abs(float(grads[2]) - float(ref_grads[2])) <= 1e-3 * bound
    rows = fused.sigmoid_rows(query, key, pairing, 10.0, -10.0, "cosine")
    ref_rows = dense.sigmoid_rows(query, key, pairing, 10.0, -10.0, "cosine")
    assert torch.isfinite(rows).all() and _rel(rows, ref_rows) <= 2e-2


def test_fused_float16_backward_keeps_tiny_gradients(device):
    # a mean over a huge batch makes dLoss/dlogits tiny: rounding it to float16 for the tensor
    # cores must not flush it to zero (the kernel scales it by a power of two first)
    x = torch.nn.functional.normalize(torch.randn(B, D, device=device), dim=1)
    y = torch.nn.functional.normalize(torch.randn(N, D, device=device), dim=1)
    prob = fused._problem(Pairing.diagonal(B, N, device=device), device)
    scale = torch.tensor([100.0], device=device)
    dx = {}
    for dtype in (torch.float16, torch.float32):
        xd, yd = x.to(dtype), y.to(dtype)
        (lse_r, _, _), (lse_c, _, _) = fused._lse_forward(xd, yd, scale, prob, True)
        g_r, g_c = torch.full((B,), 1e-9, device=device), torch.full((N,), 1e-9, device=device)
        stats_r = (fused._bw_lse(lse_r), g_r, -g_r)
        stats_c = (fused._bw_lse(lse_c), g_c, -g_c)
        dx[dtype] = fused._backward_rows(xd, yd, scale, None, prob, stats_r, stats_c, 0, False)[0]
    assert dx[torch.float32].abs().max() > 0
    assert _rel(dx[torch.float16], dx[torch.float32]) <= 1e-2


def test_fused_is_deterministic_and_matches_streaming(device):
    query, key = torch.randn(B, D, device=device), torch.randn(N, D, device=device)
    pairing = Pairing.from_labels(
        torch.arange(B, device=device) % 5, torch.arange(N, device=device) % 5
    )
    args = (query, key, pairing, torch.tensor(20.0, device=device), InfoNCESpec())
    first, second = infonce(fused, *args), infonce(fused, *args)
    for a, b in zip(first[0] + first[2], second[0] + second[2], strict=True):
        assert torch.equal(a, b)
    other = infonce(streaming, *args, tile=16)
    for a, b in zip(first[0] + first[2][:2], other[0] + other[2][:2], strict=True):
        assert _rel(a, b) <= 1e-5


def test_fused_through_the_losses(device):
    x, y = torch.randn(B, D, device=device), torch.randn(B, D, device=device)
    labels = torch.randint(0, 4, (B,), device=device)
    for call in (
        lambda e: CF.info_nce(x, y, symmetric=True, engine=e),
        lambda e: CF.supcon(torch.stack([x, y], 1), labels, engine=e),
        lambda e: CF.siglip(x, y, engine=e),
    ):
        assert abs(float(call("fused")) - float(call("dense"))) <= 1e-5 * abs(float(call("dense")))


def test_fused_supports_and_refuses(device, monkeypatch):
    q = torch.randn(8, 4, device=device)
    diag = Pairing.diagonal(8, device=device)
    assert fused.supports(q, diag)
    assert fused.supports(q.half(), diag, similarity="dot")
    assert not fused.supports(q.double(), diag)
    assert not fused.supports(q, diag, similarity="neg_sq_euclidean")
    matrix = Pairing.from_matrix(torch.eye(8, dtype=torch.bool, device=device))
    assert not fused.supports(q, matrix)
    excl = Pairing.diagonal(8, exclude=torch.eye(8, dtype=torch.bool, device=device))
    assert not fused.supports(q, excl)
    with pytest.raises(ValueError, match="fused"):
        fused.infonce_rows(q, q, matrix, 1.0, InfoNCESpec())
    with pytest.raises(ValueError, match="similarity"):
        fused.sigmoid_rows(q, q, diag, 1.0, 0.0, "neg_sq_euclidean")
    if device.type == "cpu":
        monkeypatch.setenv("TRITON_INTERPRET", "0")
        assert not fused.supports(q, diag)  # compiled Triton needs a GPU
        with pytest.raises(ValueError, match="CUDA"):
            fused.infonce_rows(q, q, diag, 1.0, InfoNCESpec())
        assert choose(q, q, diag) is dense  # auto never picks fused for CPU tensors
