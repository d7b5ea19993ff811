"""Geometry objectives against loop-level float64 implementations of the papers' equations."""

from __future__ import annotations

import math

import pytest
import torch

from contrastkit.objectives import geometry as G

D64 = torch.float64


def _leaf(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=D64).requires_grad_(True)


def _check(fn, ref, inputs, atol=1e-10):
    """Loss and gradients of every input agree with the reference."""
    out = fn(*inputs)
    grads = torch.autograd.grad(out, inputs)
    exp = ref(*inputs)
    exp_grads = torch.autograd.grad(exp, inputs)
    assert torch.allclose(out, exp, atol=atol, rtol=1e-10), (float(out), float(exp))
    for g, e in zip(grads, exp_grads, strict=True):
        assert torch.allclose(g, e, atol=atol, rtol=1e-9), (g - e).abs().max()


def _unit(v):
    return v / torch.sqrt((v * v).sum())


def _sqdist(a, b):
    return sum((a[k] - b[k]) ** 2 for k in range(a.shape[0]))


# -- alignment and uniformity (Wang & Isola 2020) ---------------------------------------------
def ref_align(x, y, alpha):
    total = 0.0
    for i in range(x.shape[0]):
        total = total + _sqdist(_unit(x[i]), _unit(y[i])) ** (alpha / 2)
    return total / x.shape[0]


def ref_uniform(x, t):
    b = x.shape[0]
    s, n = 0.0, 0
    for i in range(b):
        for j in range(i + 1, b):
            s = s + torch.exp(-t * _sqdist(_unit(x[i]), _unit(x[j])))
            n += 1
    return torch.log(s / n)


@pytest.mark.parametrize("seed,b,d,alpha", [(0, 5, 3, 2.0), (1, 7, 4, 1.0), (2, 4, 6, 3.0)])
def test_alignment_loss_matches_wang_isola(seed, b, d, alpha):
    x, y = _leaf(b, d, seed=seed), _leaf(b, d, seed=seed + 10)
    _check(
        lambda a, c: G.alignment_loss(a, c, alpha=alpha),
        lambda a, c: ref_align(a, c, alpha),
        (x, y),
    )


@pytest.mark.parametrize("seed,b,d,t", [(0, 5, 3, 2.0), (1, 8, 4, 1.0), (2, 6, 2, 5.0)])
def test_uniformity_loss_matches_wang_isola(seed, b, d, t):
    x = _leaf(b, d, seed=seed)
    _check(lambda a: G.uniformity_loss(a, t=t), lambda a: ref_uniform(a, t), (x,))


def test_uniformity_no_overflow_large_t():
    x = torch.randn(16, 4)
    val = G.uniformity_loss(x, t=1e4)
    assert torch.isfinite(val)


def test_alignment_uniformity_gradcheck():
    x, y = _leaf(4, 3, seed=3), _leaf(4, 3, seed=4)
    assert torch.autograd.gradcheck(lambda a, b: G.alignment_loss(a, b, alpha=1.5), (x, y))
    assert torch.autograd.gradcheck(lambda a: G.uniformity_loss(a, t=2.0), (x,))


def test_alignment_uniformity_module_is_weighted_sum():
    x, y = _leaf(6, 4, seed=5), _leaf(6, 4, seed=6)
    mod = G.AlignmentUniformityLoss(alignment_weight=0.5, uniformity_weight=2.0, t=3.0)
    exp = 0.5 * ref_align(x, y, 2.0) + 2.0 * (ref_uniform(x, 3.0) + ref_uniform(y, 3.0)) / 2
    assert torch.allclose(mod(x, y), exp, atol=1e-12)


# -- contrastive gap (Fahim et al. 2024) ------------------------------------------------------
def ref_clip(img, txt, tau):
    b = img.shape[0]
    s = [[(_unit(img[i]) * _unit(txt[j])).sum() / tau for j in range(b)] for i in range(b)]
    loss_i = sum(-s[i][i] + torch.log(sum(torch.exp(s[i][j]) for j in range(b))) for i in range(b))
    loss_t = sum(-s[i][i] + torch.log(sum(torch.exp(s[j][i]) for j in range(b))) for i in range(b))
    return (loss_i + loss_t) / (2 * b)


def ref_xunif(x, y, t):
    b = x.shape[0]
    tot = sum(
        torch.exp(-t * _sqdist(_unit(x[i]), _unit(y[j])))
        for i in range(b)
        for j in range(b)
        if i != j
    )
    return torch.log(tot / (b * (b - 1)))


@pytest.mark.parametrize("seed,wx", [(0, 0.0), (1, 0.7)])
def test_clip_alignment_uniformity_matches_contrastive_gap_paper(seed, wx):
    img, txt = _leaf(5, 4, seed=seed), _leaf(5, 4, seed=seed + 1)

    def ref(a, b):
        return (
            ref_clip(a, b, 0.1)
            + 0.3 * ref_align(a, b, 2.0)
            + 0.5 * (ref_uniform(a, 2.0) + ref_uniform(b, 2.0)) / 2
            + wx * ref_xunif(a, b, 2.0)
        )

    def lib(a, b):
        return G.clip_alignment_uniformity_loss(
            a,
            b,
            temperature=0.1,
            alignment_weight=0.3,
            uniformity_weight=0.5,
            cross_uniformity_weight=wx,
        )

    _check(lib, ref, (img, txt))


def test_clip_alignment_uniformity_module_learnable_temperature():
    mod = G.CLIPAlignmentUniformityLoss(0.1, learnable_temperature=True).double()
    img, txt = _leaf(4, 3, seed=1), _leaf(4, 3, seed=2)
    loss = mod(img, txt)
    loss.backward()
    assert mod.logit_scale.logit_scale.grad is not None
    assert torch.allclose(
        loss,
        ref_clip(img, txt, 0.1)
        + ref_align(img, txt, 2.0)
        + (ref_uniform(img, 2.0) + ref_uniform(txt, 2.0)) / 2,
        atol=1e-10,
    )


# -- kernel mixture (Tan et al. 2024) ---------------------------------------------------------
def ref_kernel(z1, z2, gammas, taus, weights, split):
    z = torch.cat([z1, z2])
    n2, d = z.shape
    m = len(gammas)

    def kern(a, b):
        tot = 0.0
        for k in range(m):
            if split:
                sl = slice(k * (d // m), (k + 1) * (d // m))
                u, v = _unit(a[sl]), _unit(b[sl])
            else:
                u, v = _unit(a), _unit(b)
            dist = torch.sqrt(_sqdist(u, v))
            tot = tot + weights[k] * torch.exp(-(dist ** gammas[k]) / taus[k])
        return tot

    n = z1.shape[0]
    total = 0.0
    for a in range(n2):
        p = a + n if a < n else a - n
        den = sum(kern(z[a], z[b]) for b in range(n2) if b != a)
        total = total - torch.log(kern(z[a], z[p]) / den)
    return total / n2


@pytest.mark.parametrize(
    "seed,gammas,taus,weights,split",
    [
        (0, (2.0,), (0.5,), (1.0,), False),
        (1, (1.0,), (0.3,), (1.0,), False),
        (2, (2.0, 1.0), (0.5, 0.2), (1.0, 1.0), False),
        (3, (2.0, 1.0), (0.5, 0.4), (0.3, 2.0), True),
        (4, (0.5, 1.5, 2.0), (0.5, 0.4, 1.0), (1.0, 1.0, 0.5), True),
    ],
)
def test_kernel_mixture_matches_kernel_infonce(seed, gammas, taus, weights, split):
    z1, z2 = _leaf(4, 6, seed=seed), _leaf(4, 6, seed=seed + 7)

    def lib(a, b):
        return G.kernel_mixture_loss(
            a, b, gammas=gammas, temperatures=taus, weights=weights, split=split
        )

    _check(lib, lambda a, b: ref_kernel(a, b, gammas, taus, weights, split), (z1, z2))


def test_kernel_mixture_gaussian_is_simclr_up_to_constant():
    # exp(-||u-v||^2/tau) = exp(2 u.v / tau) * const on the sphere: NT-Xent with temperature tau/2
    from contrastkit.functional import nt_xent

    z1, z2 = torch.randn(8, 5, dtype=D64), torch.randn(8, 5, dtype=D64)
    k = G.kernel_mixture_loss(z1, z2, gammas=(2.0,), temperatures=(0.4,))
    assert torch.allclose(k, nt_xent(z1, z2, temperature=0.2), atol=1e-12)


def test_kernel_mixture_gradcheck_and_low_temperature():
    z1, z2 = _leaf(3, 4, seed=9), _leaf(3, 4, seed=10)
    assert torch.autograd.gradcheck(
        lambda a, b: G.kernel_mixture_loss(a, b, gammas=(2.0, 1.0), temperatures=(0.5, 0.5)),
        (z1, z2),
    )
    val = G.kernel_mixture_loss(torch.randn(8, 4), torch.randn(8, 4), temperatures=(0.01, 0.01))
    assert torch.isfinite(val)


def test_kernel_mixture_bad_args():
    z = torch.randn(4, 6)
    with pytest.raises(ValueError, match="equal length"):
        G.kernel_mixture_loss(z, z, gammas=(2.0,), temperatures=(0.5, 0.5))
    with pytest.raises(ValueError, match="divisible"):
        G.kernel_mixture_loss(torch.randn(4, 5), torch.randn(4, 5), split=True)
    with pytest.raises(ValueError, match="temperatures"):
        G.kernel_mixture_loss(z, z, temperatures=(0.5, -1.0))


# -- scattering (SGRL / CircuitGCL) -----------------------------------------------------------
def ref_scatter(h, power):
    n = h.shape[0]
    units = [_unit(h[i]) for i in range(n)]
    c = sum(units) / n
    return -sum(_sqdist(u, c) ** (power / 2) for u in units) / n


@pytest.mark.parametrize("seed,power", [(0, 2.0), (1, 1.0)])
def test_scattering_matches_sgrl(seed, power):
    h = _leaf(6, 4, seed=seed)
    _check(lambda a: G.scattering_loss(a, power=power), lambda a: ref_scatter(a, power), (h,))


def test_scattering_module_running_center_in_state_dict():
    mod = G.ScatteringLoss(dim=4, momentum=0.5).double()
    h1, h2 = _leaf(5, 4, seed=1), _leaf(5, 4, seed=2)
    mod(h1)
    loss = mod(h2)
    c1 = torch.stack([_unit(r) for r in h1]).mean(0)
    c2 = torch.stack([_unit(r) for r in h2]).mean(0)
    center = 0.5 * c1 + 0.5 * c2
    assert torch.allclose(mod.state_dict()["center"], center.detach())
    exp = -sum(_sqdist(_unit(h2[i]), center) for i in range(5)) / 5
    assert torch.allclose(loss, exp, atol=1e-12)


# -- cross-correlation (Barlow Twins; Huang et al. 2023) --------------------------------------
def ref_barlow(z1, z2, lam, eps):
    n, d = z1.shape

    def std(z):
        cols = []
        for k in range(d):
            mu = sum(z[b, k] for b in range(n)) / n
            var = sum((z[b, k] - mu) ** 2 for b in range(n)) / n
            cols.append([(z[b, k] - mu) / torch.sqrt(var + eps) for b in range(n)])
        return cols

    a, b = std(z1), std(z2)
    loss = 0.0
    for i in range(d):
        for j in range(d):
            c = sum(a[i][r] * b[j][r] for r in range(n)) / n
            loss = loss + ((1 - c) ** 2 if i == j else lam * c**2)
    return loss


@pytest.mark.parametrize("seed,n,d,lam", [(0, 6, 3, 5e-3), (1, 5, 4, 0.5)])
def test_cross_correlation_matches_barlow_twins(seed, n, d, lam):
    z1, z2 = _leaf(n, d, seed=seed), _leaf(n, d, seed=seed + 3)

    def lib(a, b):
        return G.cross_correlation_loss(a, b, off_diagonal_weight=lam)

    _check(lib, lambda a, b: ref_barlow(a, b, lam, 1e-5), (z1, z2))


# -- BYOL self-labelling (Garg & Jain 2022) ---------------------------------------------------
def ref_ccsl(p, z, weight):
    b = p.shape[0]
    total = 0.0
    for i in range(b):
        num, den = 0.0, 0.0
        for j in range(b):
            c = (_unit(p[i]) * _unit(z[j])).sum()
            w = 1.0 if i == j else weight(float(c.detach()))
            num, den = num + w * c, den + w
        total = total + 2 - 2 * num / den
    return total / b


@pytest.mark.parametrize("seed,thr", [(0, 0.2), (1, -0.1), (2, 2.0)])
def test_cross_cosine_similarity_loss_matches_ccsl(seed, thr):
    p, z = _leaf(6, 3, seed=seed), _leaf(6, 3, seed=seed + 5)

    def lib(a, b):
        return G.cross_cosine_similarity_loss(a, b, threshold=thr)

    _check(lib, lambda a, b: ref_ccsl(a, b, lambda c: float(c >= thr)), (p, z))


def test_ccsl_above_one_is_byol():
    p, z = torch.randn(8, 4, dtype=D64), torch.randn(8, 4, dtype=D64)
    byol = (2 - 2 * torch.nn.functional.cosine_similarity(p, z)).mean()
    assert torch.allclose(G.cross_cosine_similarity_loss(p, z, threshold=1.5), byol)


@pytest.mark.parametrize("seed", [0, 1])
def test_cross_sigmoid_similarity_loss_matches_cssl(seed):
    p, z = _leaf(5, 3, seed=seed), _leaf(5, 3, seed=seed + 5)

    def lib(a, b):
        return G.cross_sigmoid_similarity_loss(a, b, threshold=0.3, sharpness=4.0)

    def w(c):
        return 1 / (1 + math.exp(-4.0 * (c - 0.3)))

    _check(lib, lambda a, b: ref_ccsl(a, b, w), (p, z))


# -- SepCLR (Louiset et al. 2024) -------------------------------------------------------------
def ref_sepclr(c1, c2, s1, s2, is_target, tau, u, bs, b0, lam):
    b = c1.shape[0]
    t = 1 / (2 * tau)
    c1n = [_unit(c1[i]) for i in range(b)]
    c2n = [_unit(c2[i]) for i in range(b)]

    def unif(rows):
        tot, n = 0.0, 0
        for i in range(len(rows)):
            for j in range(i + 1, len(rows)):
                tot, n = tot + torch.exp(-t * _sqdist(rows[i], rows[j])), n + 1
        return torch.log(tot / n)

    def align(xs, ys):
        return sum(_sqdist(x, y) for x, y in zip(xs, ys, strict=True)) / len(xs) * t

    def je(cs, ss):
        out = 0.0
        for i in range(b):
            inner = sum(
                torch.exp(-_sqdist(cs[i], cs[j]) * t) * torch.exp(-_sqdist(ss[i], ss[j]) * t)
                for j in range(b)
            )
            out = out + torch.log(inner / b)
        return out / b

    zero = torch.zeros(s1.shape[1], dtype=D64)
    s1p = [s1[i] if is_target[i] else zero for i in range(b)]
    s2p = [s2[i] if is_target[i] else zero for i in range(b)]
    tg = [i for i in range(b) if is_target[i]]
    bg = [i for i in range(b) if not is_target[i]]
    common = align(c1n, c2n) + u * (unif(c1n) + unif(c2n)) / 2
    salient = align([s1[i] for i in tg], [s2[i] for i in tg]) + u * (unif(s1p) + unif(s2p)) / 2
    infoless = (
        align([zero] * len(bg), [s1[i] for i in bg]) + align([zero] * len(bg), [s2[i] for i in bg])
    ) / 2
    return common + bs * salient + b0 * infoless + lam * (je(c1n, s1p) + je(c2n, s2p)) / 2


@pytest.mark.parametrize("seed", [0, 1])
def test_sepclr_matches_paper_terms(seed):
    c1, c2 = _leaf(6, 3, seed=seed), _leaf(6, 3, seed=seed + 1)
    s1, s2 = _leaf(6, 2, seed=seed + 2), _leaf(6, 2, seed=seed + 3)
    y = torch.tensor([1, 0, 1, 1, 0, 0], dtype=torch.bool)
    kw = dict(
        tau=0.4,
        uniformity_weight=2.0,
        salient_weight=3.0,
        info_less_weight=5.0,
        joint_entropy_weight=0.7,
    )

    def lib(a, b, c, d):
        return G.sepclr_loss(a, b, c, d, y, **kw)

    def ref(a, b, c, d):
        return ref_sepclr(a, b, c, d, y.tolist(), 0.4, 2.0, 3.0, 5.0, 0.7)

    _check(lib, ref, (c1, c2, s1, s2))


def test_sepclr_module_logs_terms_and_rejects_bad_mask():
    mod = G.SepCLRLoss()
    c = torch.randn(4, 3)
    mod(c, c, c, c, torch.tensor([True, False, True, False]))
    assert set(mod.last_terms) == {"common", "salient", "info_less", "joint_entropy"}
    with pytest.raises(ValueError, match="is_target"):
        mod(c, c, c, c, torch.tensor([1, 0, 1, 0]))
    with pytest.raises(ValueError, match="no target"):
        mod(c, c, c, c, torch.zeros(4, dtype=torch.bool))


# -- validation -------------------------------------------------------------------------------
def test_bad_inputs_raise():
    x = torch.randn(4, 3)
    with pytest.raises(ValueError, match="same number of rows"):
        G.alignment_loss(x, torch.randn(5, 3))
    with pytest.raises(ValueError, match="feature sizes"):
        G.alignment_loss(x, torch.randn(4, 2))
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        G.uniformity_loss([[1.0, 2.0]])
    with pytest.raises(ValueError, match="at least 2 rows"):
        G.uniformity_loss(torch.randn(1, 3))
    with pytest.raises(ValueError, match="t must be"):
        G.uniformity_loss(x, t=0.0)
    with pytest.raises(ValueError, match="NaN"):
        G.uniformity_loss(torch.tensor([[1.0, float("nan")], [0.0, 1.0]]))


def test_inputs_not_mutated_and_bf16_accumulates_in_fp32():
    x = torch.randn(8, 4).bfloat16()
    y = torch.randn(8, 4).bfloat16()
    xc, yc = x.clone(), y.clone()
    out = G.clip_alignment_uniformity_loss(x, y, cross_uniformity_weight=1.0, temperature=0.01)
    assert out.dtype == torch.float32 and torch.isfinite(out)
    assert torch.equal(x, xc) and torch.equal(y, yc)


def test_gradcheck_sepclr_barlow_scattering_byol():
    c1, c2 = _leaf(4, 3, seed=50), _leaf(4, 3, seed=51)
    s1, s2 = _leaf(4, 2, seed=52), _leaf(4, 2, seed=53)
    y = torch.tensor([True, False, True, False])
    assert torch.autograd.gradcheck(
        lambda a, b, c, d: G.sepclr_loss(a, b, c, d, y, salient_weight=2.0, info_less_weight=3.0),
        (c1, c2, s1, s2),
        fast_mode=True,
    )
    assert torch.autograd.gradcheck(
        lambda a, b: G.cross_correlation_loss(a, b, off_diagonal_weight=0.3), (c1, c2)
    )
    assert torch.autograd.gradcheck(lambda a: G.scattering_loss(a, power=1.0), (c1,))
    # CCSL's self-labels are piecewise constant, so the numerical derivative is meaningful
    # (CSSL's soft labels are stop-gradient by definition: its gradient is checked above)
    assert torch.autograd.gradcheck(
        lambda a, b: G.cross_cosine_similarity_loss(a, b, threshold=0.2), (c1, c2)
    )
