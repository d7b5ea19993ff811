"""Foundation objectives against loop-level float64 references of the papers' equations."""

from __future__ import annotations

import math

import pytest
import torch

import contrastkit.functional as CF
from contrastkit.losses import InfoNCE, NTXent, SigLIP, SupCon
from reference import compare_with_reference as _compare
from reference import infonce_reference, ntxent_reference, siglip_reference, supcon_reference
from reference import leaf as _leaf

TOL = 1e-10


# ---------------------------------------------------------------------------- InfoNCE
@pytest.mark.parametrize("seed,b,n,d", [(0, 5, 5, 4), (1, 6, 9, 3), (2, 3, 3, 7)])
@pytest.mark.parametrize("similarity", ["cosine", "dot", "neg_sq_euclidean"])
def test_infonce_diagonal(seed, b, n, d, similarity):
    q, k = _leaf(b, d, seed=seed), _leaf(n, d, seed=seed + 100)
    tau = 0.3

    def ref(q, k):
        return infonce_reference(
            q,
            k,
            positive=lambda i, j: float(i == j),
            excluded=lambda i, j: False,
            tau=tau,
            similarity=similarity,
        )

    _compare(lambda q, k: CF.info_nce(q, k, temperature=tau, similarity=similarity), ref, [q, k])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_infonce_symmetric_is_mean_of_both_directions(seed):
    q, k = _leaf(6, 4, seed=seed), _leaf(6, 4, seed=seed + 1)
    tau = 0.1

    def ref(q, k):
        kw = dict(positive=lambda i, j: float(i == j), excluded=lambda i, j: False, tau=tau)
        return 0.5 * (infonce_reference(q, k, **kw) + infonce_reference(k, q, **kw))

    _compare(lambda q, k: InfoNCE(tau, symmetric=True)(q, k), ref, [q, k])


@pytest.mark.parametrize("variant", ["out", "in"])
@pytest.mark.parametrize("seed", [0, 3])
def test_infonce_labels_multi_positive(variant, seed):
    q, k = _leaf(7, 5, seed=seed), _leaf(7, 5, seed=seed + 1)
    labels = torch.tensor([0, 1, 0, 2, 1, 0, 3])
    tau = 0.2

    def ref(q, k):
        return infonce_reference(
            q,
            k,
            positive=lambda i, j: float(labels[i] == labels[j]),
            excluded=lambda i, j: False,
            tau=tau,
            variant=variant,
        )

    fn = InfoNCE(tau, variant=variant)
    _compare(lambda q, k: fn(q, k, labels=labels), ref, [q, k])


@pytest.mark.parametrize("variant", ["out", "in"])
def test_infonce_self_set_with_labels_excludes_self(variant):
    x = _leaf(8, 4, seed=5)
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 3, 4])  # rows 6, 7 have no positive
    tau = 0.5

    def ref(x):
        return infonce_reference(
            x,
            x,
            positive=lambda i, j: float(labels[i] == labels[j]),
            excluded=lambda i, j: i == j,
            tau=tau,
            variant=variant,
        )

    _compare(lambda x: CF.info_nce(x, labels=labels, temperature=tau, variant=variant), ref, [x])


@pytest.mark.parametrize("variant", ["out", "in"])
def test_infonce_soft_positive_matrix_and_exclude(variant):
    q, k = _leaf(5, 3, seed=7), _leaf(6, 3, seed=8)
    g = torch.Generator().manual_seed(9)
    weights = torch.rand(5, 6, generator=g, dtype=torch.float64)
    weights[weights < 0.4] = 0.0
    weights[2] = 0.0  # a row with no positive
    exclude = torch.rand(5, 6, generator=g) < 0.2
    tau = 0.25

    def ref(q, k):
        return infonce_reference(
            q,
            k,
            positive=lambda i, j: float(weights[i, j]),
            excluded=lambda i, j: bool(exclude[i, j]),
            tau=tau,
            variant=variant,
        )

    _compare(
        lambda q, k: CF.info_nce(
            q, k, positives=weights, exclude=exclude, temperature=tau, variant=variant
        ),
        ref,
        [q, k],
    )


def test_infonce_bool_positive_matrix_equals_labels():
    q, k = _leaf(6, 4, seed=1), _leaf(6, 4, seed=2)
    labels = torch.tensor([0, 1, 1, 2, 0, 2])
    mask = labels[:, None] == labels[None, :]
    a = CF.info_nce(q, k, positives=mask)
    b = CF.info_nce(q, k, labels=labels)
    torch.testing.assert_close(a, b, rtol=TOL, atol=TOL)


@pytest.mark.parametrize("per_query", [True, False])
def test_infonce_extra_negatives(per_query):
    q, k = _leaf(4, 3, seed=11), _leaf(4, 3, seed=12)
    neg = _leaf(4, 5, 3, seed=13) if per_query else _leaf(6, 3, seed=13)
    tau = 0.07

    def ref(q, k, neg):
        extra = (
            (lambda i: [neg[i, m] for m in range(neg.shape[1])])
            if per_query
            else (lambda i: [neg[m] for m in range(neg.shape[0])])
        )
        return infonce_reference(
            q,
            k,
            positive=lambda i, j: float(i == j),
            excluded=lambda i, j: False,
            tau=tau,
            extra=extra,
        )

    _compare(lambda q, k, n: InfoNCE(tau)(q, k, negatives=n), ref, [q, k, neg])


@pytest.mark.parametrize("seed", [0, 1])
def test_infonce_decoupled_and_margin(seed):
    q, k = _leaf(5, 4, seed=seed), _leaf(5, 4, seed=seed + 20)
    labels = torch.tensor([0, 1, 0, 2, 3])
    tau, margin = 0.1, 0.2

    def ref(q, k):
        return infonce_reference(
            q,
            k,
            positive=lambda i, j: float(labels[i] == labels[j]),
            excluded=lambda i, j: False,
            tau=tau,
            decoupled=True,
            margin=margin,
        )

    fn = InfoNCE(tau, decoupled=True, margin=margin)
    _compare(lambda q, k: fn(q, k, labels=labels), ref, [q, k])


def test_infonce_learnable_temperature_gradient():
    q, k = _leaf(6, 4, seed=3), _leaf(6, 4, seed=4)
    fn = InfoNCE(0.07, symmetric=True, learnable_temperature=True).double()
    loss = fn(q, k)
    (g,) = torch.autograd.grad(loss, [fn.logit_scale.logit_scale])
    log_scale = fn.logit_scale.logit_scale.detach().clone().requires_grad_(True)

    def ref(log_scale):
        tau = 1.0 / log_scale.exp()
        kw = dict(positive=lambda i, j: float(i == j), excluded=lambda i, j: False, tau=tau)
        qd, kd = q.detach(), k.detach()
        return 0.5 * (infonce_reference(qd, kd, **kw) + infonce_reference(kd, qd, **kw))

    r = ref(log_scale)
    (rg,) = torch.autograd.grad(r, [log_scale])
    torch.testing.assert_close(loss, r, rtol=TOL, atol=TOL)
    torch.testing.assert_close(g, rg, rtol=TOL, atol=TOL)


def test_learnable_temperature_is_clamped_at_max_scale():
    fn = InfoNCE(0.001, learnable_temperature=True).double()  # 1/0.001 = 1000 > 100
    assert abs(float(fn.logit_scale().detach()) - 100.0) < 1e-3
    # Above the cap the parameter gets the gradients that bring it back below (noisy pairs want a
    # lower scale: dL/dlog_scale > 0, as the reference at the cap says), never those that push it
    # further up (aligned pairs want a higher scale): a clamped parameter is never stuck.
    q = (_leaf(1, 8, seed=12) + 0.1 * _leaf(4, 8, seed=5)).detach()  # close, but not saturated
    aligned = q + 0.01 * _leaf(4, 8, seed=13).detach()
    for k, wants_lower in ((_leaf(4, 8, seed=6).detach(), True), (aligned, False)):
        fn.zero_grad()
        fn(q, k).backward()
        log_scale = torch.tensor(math.log(100.0), dtype=torch.float64, requires_grad=True)
        kw = dict(positive=lambda i, j: float(i == j), excluded=lambda i, j: False)
        ref = infonce_reference(q, k, tau=1.0 / log_scale.exp(), **kw)
        (ref_grad,) = torch.autograd.grad(ref, [log_scale])
        assert (float(ref_grad) > 0) == wants_lower
        expected = ref_grad if wants_lower else torch.zeros_like(ref_grad)
        torch.testing.assert_close(fn.logit_scale.logit_scale.grad, expected, rtol=TOL, atol=TOL)


def test_mixed_float_dtypes_are_promoted():
    # float64 with float32 (query/key, negatives) runs in float64, as torch's own promotion does,
    # instead of failing inside a matmul; the float32 tensors are exact in float64.
    q, k = _leaf(5, 4, seed=7), _leaf(5, 4, seed=8)
    k32, n32 = k.detach().float(), _leaf(3, 4, seed=9).detach().float()
    kw = dict(positive=lambda i, j: float(i == j), excluded=lambda i, j: False, tau=0.2)
    extra = [n32[m].double() for m in range(3)]
    for engine in ("dense", "streaming"):
        loss = CF.info_nce(q, k32, temperature=0.2, engine=engine)
        assert loss.dtype == torch.float64
        ref = infonce_reference(q.detach(), k32.double(), **kw)
        torch.testing.assert_close(loss, ref, rtol=TOL, atol=TOL)
        loss = CF.info_nce(q, k, negatives=n32, temperature=0.2, engine=engine)
        ref = infonce_reference(q.detach(), k.detach(), extra=lambda i: extra, **kw)
        torch.testing.assert_close(loss, ref, rtol=TOL, atol=TOL)
        loss = CF.info_nce(k32, q, temperature=0.2, engine=engine)
        ref = infonce_reference(k32.double(), q.detach(), **kw)
        torch.testing.assert_close(loss, ref, rtol=TOL, atol=TOL)
        loss = CF.siglip(q, k32, scale=5.0, bias=-2.0, engine=engine)
        assert loss.dtype == torch.float64
        ref = siglip_reference(q.detach(), k32.double(), 5.0, -2.0, lambda i, j: i == j)
        torch.testing.assert_close(loss, ref, rtol=TOL, atol=TOL)


def test_low_precision_temperature_tensor_is_inverted_in_float32():
    # tau = bfloat16(0.01) = 0.010009765625: its scale is 99.90..., not bfloat16(1 / tau) = 100
    tau = torch.tensor(0.01, dtype=torch.bfloat16)
    q, k = _leaf(6, 4, seed=10).detach(), _leaf(6, 4, seed=11).detach()
    kw = dict(positive=lambda i, j: float(i == j), excluded=lambda i, j: False, tau=float(tau))
    ref = infonce_reference(q, k, **kw)
    for engine in ("dense", "streaming"):
        loss = CF.info_nce(q.float(), k.float(), temperature=tau, engine=engine)
        torch.testing.assert_close(loss.double(), ref, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------- NT-Xent
@pytest.mark.parametrize("seed,n,d", [(0, 4, 3), (1, 6, 5), (2, 2, 8)])
def test_ntxent_matches_simclr(seed, n, d):
    z1, z2 = _leaf(n, d, seed=seed), _leaf(n, d, seed=seed + 1)
    _compare(lambda a, b: NTXent(0.5)(a, b), lambda a, b: ntxent_reference(a, b, 0.5), [z1, z2])


def test_ntxent_three_views_is_mean_over_view_pairs():
    zs = [_leaf(4, 3, seed=s) for s in range(3)]

    def ref(a, b, c):
        return (
            ntxent_reference(a, b, 0.3) + ntxent_reference(a, c, 0.3) + ntxent_reference(b, c, 0.3)
        ) / 3

    _compare(lambda a, b, c: CF.nt_xent(a, b, c, temperature=0.3), ref, zs)


# ---------------------------------------------------------------------------- SupCon
@pytest.mark.parametrize("variant", ["out", "in"])
@pytest.mark.parametrize("seed,b,v,d", [(0, 6, 2, 4), (1, 5, 3, 3), (2, 7, 1, 5)])
def test_supcon_matches_khosla(variant, seed, b, v, d):
    f = _leaf(b, v, d, seed=seed)
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 3, (b,), generator=g)
    labels[0] = labels[1]  # at least one positive even with one view
    _compare(
        lambda f: SupCon(0.1, variant=variant)(f, labels),
        lambda f: supcon_reference(f, labels, 0.1, variant),
        [f],
    )


def test_supcon_without_labels_is_simclr():
    f = _leaf(5, 2, 4, seed=4)
    a = CF.supcon(f, temperature=0.5)
    b = CF.nt_xent(f[:, 0], f[:, 1], temperature=0.5)
    torch.testing.assert_close(a, b, rtol=TOL, atol=TOL)


def test_supcon_no_positive_anywhere_raises():
    with pytest.raises(ValueError, match="positive"):
        CF.supcon(torch.randn(4, 1, 3), torch.tensor([0, 1, 2, 3]))


# ---------------------------------------------------------------------------- SigLIP
@pytest.mark.parametrize("seed,b,n", [(0, 5, 5), (1, 4, 7)])
def test_siglip_matches_zhai(seed, b, n):
    q, k = _leaf(b, 3, seed=seed), _leaf(n, 3, seed=seed + 1)
    fn = SigLIP(init_scale=10.0, init_bias=-10.0).double()
    loss = fn(q, k)
    params = [fn.log_scale, fn.bias]
    grads = torch.autograd.grad(loss, [q, k, *params])
    rq, rk = q.detach().clone().requires_grad_(), k.detach().clone().requires_grad_()
    rls = fn.log_scale.detach().clone().requires_grad_()
    rb = fn.bias.detach().clone().requires_grad_()
    ref = siglip_reference(rq, rk, rls.exp(), rb, lambda i, j: i == j)
    ref_grads = torch.autograd.grad(ref, [rq, rk, rls, rb])
    torch.testing.assert_close(loss, ref, rtol=TOL, atol=TOL)
    for g, rg in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(g, rg, rtol=TOL, atol=TOL)


def test_siglip_labels():
    q, k = _leaf(6, 3, seed=2), _leaf(6, 3, seed=3)
    labels = torch.tensor([0, 1, 0, 1, 2, 2])
    _compare(
        lambda q, k: CF.siglip(q, k, scale=5.0, bias=-2.0, labels=labels),
        lambda q, k: siglip_reference(q, k, 5.0, -2.0, lambda i, j: labels[i] == labels[j]),
        [q, k],
    )


# ---------------------------------------------------------------------------- gradcheck
def test_gradcheck_all_objectives():
    q, k = _leaf(4, 3, seed=0), _leaf(4, 3, seed=1)
    labels = torch.tensor([0, 1, 0, 1])
    tau = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda q, k, t: CF.info_nce(q, k, labels=labels, temperature=t, symmetric=True),
        (q, k, tau),
    )
    assert torch.autograd.gradcheck(lambda q, k: CF.nt_xent(q, k), (q, k))
    assert torch.autograd.gradcheck(
        lambda f: CF.supcon(f, labels, variant="in"), (_leaf(4, 2, 3, seed=2),)
    )
    s = torch.tensor(3.0, dtype=torch.float64, requires_grad=True)
    bias = torch.tensor(-1.0, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda q, k, s, b: CF.siglip(q, k, scale=s, bias=b), (q, k, s, bias)
    )


# ---------------------------------------------------------------------------- low precision
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_temperature_001_is_finite(dtype):
    g = torch.Generator().manual_seed(0)
    q = torch.randn(64, 32, generator=g).to(dtype).requires_grad_()
    k = torch.randn(64, 32, generator=g).to(dtype).requires_grad_()
    labels = torch.randint(0, 5, (64,), generator=g)
    for loss in (
        CF.info_nce(q, k, temperature=0.01, symmetric=True),
        CF.info_nce(q, k, labels=labels, temperature=0.01, variant="in", decoupled=True),
        CF.nt_xent(q, k, temperature=0.01),
        CF.supcon(torch.stack([q, k], 1), labels, temperature=0.01),
        CF.siglip(q, k, scale=100.0, bias=-10.0),
    ):
        assert loss.dtype == torch.float32
        gq, gk = torch.autograd.grad(loss, [q, k])
        assert torch.isfinite(loss) and torch.isfinite(gq).all() and torch.isfinite(gk).all()
        assert gq.dtype == dtype


def test_low_precision_close_to_fp32():
    g = torch.Generator().manual_seed(1)
    q, k = torch.randn(32, 16, generator=g), torch.randn(32, 16, generator=g)
    ref = CF.info_nce(q, k, temperature=0.05)
    low = CF.info_nce(q.bfloat16(), k.bfloat16(), temperature=0.05)
    assert abs(float(ref) - float(low)) < 0.05 * float(ref)
