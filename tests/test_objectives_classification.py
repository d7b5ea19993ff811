"""Classification-side losses against loop-level float64 implementations of the papers."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from contrastkit.objectives import classification as C

D64 = torch.float64


def _leaf(*shape, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return (scale * torch.randn(*shape, generator=g, dtype=D64)).requires_grad_(True)


def _check(fn, ref, inputs, atol=1e-10):
    out = fn(*inputs)
    grads = torch.autograd.grad(out, inputs)
    exp = ref(*inputs)
    exp_grads = torch.autograd.grad(exp, inputs)
    assert torch.allclose(out, exp, atol=atol, rtol=1e-10), (float(out), float(exp))
    for g, e in zip(grads, exp_grads, strict=True):
        assert torch.allclose(g, e, atol=atol, rtol=1e-9), (g - e).abs().max()


def _softmax_row(z):
    m = float(z.detach().max())
    e = [torch.exp(z[c] - m) for c in range(z.shape[0])]
    s = sum(e)
    return [v / s for v in e]


def _labels(b, c, seed):
    return torch.randint(0, c, (b,), generator=torch.Generator().manual_seed(seed))


# -- soft cross-entropy -----------------------------------------------------------------------
def test_soft_cross_entropy():
    z = _leaf(4, 3, seed=0)
    t = torch.softmax(torch.randn(4, 3, dtype=D64), 1)

    def ref(x):
        return (
            sum(
                -sum(t[i, c] * torch.log(_softmax_row(x[i])[c]) for c in range(3)) for i in range(4)
            )
            / 4
        )

    _check(lambda x: C.soft_cross_entropy(x, t), ref, (z,))


# -- harmonic loss ----------------------------------------------------------------------------
def ref_harmonic(x, w, y, n):
    total = 0.0
    for i in range(x.shape[0]):
        d = [torch.sqrt(((x[i] - w[c]) ** 2).sum()) for c in range(w.shape[0])]
        inv = [dc ** (-n) for dc in d]
        total = total - torch.log(inv[y[i]] / sum(inv))
    return total / x.shape[0]


@pytest.mark.parametrize("seed,n", [(0, 1.0), (1, 3.0), (2, 0.5)])
def test_harmonic_loss_matches_paper(seed, n):
    x, w = _leaf(5, 4, seed=seed), _leaf(3, 4, seed=seed + 1)
    y = _labels(5, 3, seed)
    _check(
        lambda a, b: C.harmonic_loss(a, b, y, exponent=n),
        lambda a, b: ref_harmonic(a, b, y.tolist(), n),
        (x, w),
    )


def test_harmonic_module_probabilities_and_scale_invariance():
    mod = C.HarmonicLoss(4, 3, exponent=2.0).double()
    x = torch.randn(5, 4, dtype=D64)
    p = mod.probabilities(x)
    assert torch.allclose(p.sum(1), torch.ones(5, dtype=D64))
    # scaling inputs and centres together leaves the harmonic max unchanged
    p2 = torch.softmax(C.harmonic_logits(3 * x, 3 * mod.weight, exponent=2.0), 1)
    assert torch.allclose(p, p2)


# -- squentropy -------------------------------------------------------------------------------
@pytest.mark.parametrize("seed,c", [(0, 3), (1, 6)])
def test_squentropy_matches_paper(seed, c):
    z = _leaf(5, c, seed=seed)
    y = _labels(5, c, seed).tolist()

    def ref(x):
        total = 0.0
        for i in range(5):
            ce = -torch.log(_softmax_row(x[i])[y[i]])
            sq = sum(x[i, k] ** 2 for k in range(c) if k != y[i]) / (c - 1)
            total = total + ce + sq
        return total / 5

    _check(lambda x: C.squentropy(x, torch.tensor(y)), ref, (z,))


# -- number token loss ------------------------------------------------------------------------
def ref_ntl(logits, labels, ids, vals, kind, p):
    total, count = 0.0, 0
    ids_l, vals_l = ids.tolist(), vals.tolist()
    order = sorted(range(len(vals_l)), key=lambda k: vals_l[k])
    for idx in torch.cartesian_prod(*[torch.arange(s) for s in labels.shape]).tolist():
        idx = tuple(idx) if isinstance(idx, list) else (idx,)
        lab = int(labels[idx])
        if lab not in ids_l:
            continue
        z = logits[idx]
        q = _softmax_row(torch.stack([z[i] for i in ids_l]))
        y = vals_l[ids_l.index(lab)]
        if kind == "wasserstein":
            w, cdf = 0.0, 0.0
            for r in range(len(order) - 1):
                cdf = cdf + q[order[r]]
                tgt = 1.0 if vals_l[order[r]] >= y else 0.0
                w = w + torch.abs(cdf - tgt) * (vals_l[order[r + 1]] - vals_l[order[r]])
            total = total + w
        else:
            yhat = sum(q[k] * vals_l[k] for k in range(len(q)))
            total = total + (torch.abs(y - yhat) ** (2.0 if kind == "mse" else p))
        count += 1
    return total / count


@pytest.mark.parametrize(
    "kind,p,vals",
    [
        ("mse", 2.0, [float(v) for v in range(10)]),
        ("lp", 1.0, [float(v) for v in range(10)]),
        ("lp", 3.0, [0.5, 2.0, -1.0, 4.0]),
        ("wasserstein", 2.0, [float(v) for v in range(10)]),
        ("wasserstein", 2.0, [0.5, 2.0, -1.0, 4.0]),
    ],
)
def test_number_token_loss_matches_paper(kind, p, vals):
    k = len(vals)
    ids = torch.arange(5, 5 + k)
    vals_t = torch.tensor(vals, dtype=D64)
    g = torch.Generator().manual_seed(k)
    labels = torch.randint(0, 5 + k, (3, 6), generator=g)
    labels[0, 0] = -100
    logits = _leaf(3, 6, 5 + k + 2, seed=k)
    _check(
        lambda z: C.number_token_loss(z, labels, ids, vals_t, kind=kind, p=p),
        lambda z: ref_ntl(z, labels, ids, vals_t, kind, p),
        (logits,),
    )


def test_number_token_loss_zero_without_numbers_and_module():
    logits = torch.randn(2, 3, 12, requires_grad=True)
    labels = torch.zeros(2, 3, dtype=torch.long)
    out = C.number_token_loss(logits, labels, torch.arange(2, 12), torch.arange(10.0))
    assert float(out.detach()) == 0.0
    out.backward()
    mod = C.NumberTokenLoss(torch.arange(2, 12), torch.arange(10.0), kind="wasserstein")
    assert torch.isfinite(mod(logits, torch.randint(0, 12, (2, 3))))


# -- comp-sum family --------------------------------------------------------------------------
def ref_comp_sum(z, y, tau):
    total = 0.0
    for i in range(z.shape[0]):
        u = sum(torch.exp(z[i, k] - z[i, y[i]]) for k in range(z.shape[1]) if k != y[i])
        if tau == 1.0:
            total = total + torch.log(1 + u)
        else:
            total = total + ((1 + u) ** (1 - tau) - 1) / (1 - tau)
    return total / z.shape[0]


@pytest.mark.parametrize("tau", [0.0, 0.5, 1.0, 1.5, 2.0, 3.0])
def test_comp_sum_matches_paper(tau):
    z = _leaf(5, 4, seed=int(tau * 10))
    y = _labels(5, 4, 3)
    _check(
        lambda x: C.comp_sum_loss(x, y, tau=tau), lambda x: ref_comp_sum(x, y.tolist(), tau), (z,)
    )


def test_comp_sum_special_cases():
    z, y = torch.randn(6, 4, dtype=D64), _labels(6, 4, 0)
    p_y = torch.softmax(z, 1)[torch.arange(6), y]
    assert torch.allclose(C.comp_sum_loss(z, y, tau=1.0), F.cross_entropy(z, y))
    assert torch.allclose(C.mae_loss(z, y), (1 - p_y).mean())
    assert torch.allclose(C.generalized_cross_entropy(z, y, q=0.7), ((1 - p_y**0.7) / 0.7).mean())
    assert torch.allclose(C.comp_sum_loss(z, y, tau=0.0), (1 / p_y - 1).mean())


@pytest.mark.parametrize("tau,nu", [(1.0, 0.5), (2.0, 2.0)])
def test_smooth_adversarial_comp_sum(tau, nu):
    z, za = _leaf(4, 3, seed=1), _leaf(4, 3, seed=2)
    y = _labels(4, 3, 1)

    def ref(a, b):
        reg = sum(torch.sqrt(sum((b[i, k] - a[i, k]) ** 2 for k in range(3))) for i in range(4)) / 4
        return ref_comp_sum(a, y.tolist(), tau) + nu * reg

    _check(lambda a, b: C.smooth_adversarial_comp_sum_loss(a, b, y, tau=tau, nu=nu), ref, (z, za))


# -- balanced losses --------------------------------------------------------------------------
def test_balanced_softmax_matches_paper():
    z = _leaf(5, 3, seed=4)
    y = _labels(5, 3, 4).tolist()
    n = [30.0, 5.0, 1.0]

    def ref(x):
        total = 0.0
        for i in range(5):
            num = n[y[i]] * torch.exp(x[i, y[i]])
            total = total - torch.log(num / sum(n[c] * torch.exp(x[i, c]) for c in range(3)))
        return total / 5

    _check(lambda x: C.balanced_softmax_loss(x, torch.tensor(y), torch.tensor(n)), ref, (z,))


@pytest.mark.parametrize("shape,var", [((6,), 0.5), ((5, 2), 2.0)])
def test_balanced_mse_matches_bmc(shape, var):
    pred, target = _leaf(*shape, seed=5), torch.randn(*shape, dtype=D64)

    def ref(p):
        b = p.shape[0]
        pp, tt = p.reshape(b, -1), target.reshape(b, -1)
        total = 0.0
        for i in range(b):
            logit = [-((pp[i] - tt[j]) ** 2).sum() / (2 * var) for j in range(b)]
            m = max(float(v.detach()) for v in logit)
            lse = m + torch.log(sum(torch.exp(v - m) for v in logit))
            total = total - (logit[i] - lse)
        return total / b * (2 * var)

    _check(lambda p: C.balanced_mse_loss(p, target, var), ref, (pred,))


def test_balanced_mse_learnable_variance_gets_likelihood_gradient():
    mod = C.BalancedMSELoss(0.7, learnable=True).double()
    pred, target = torch.randn(6, dtype=D64), torch.randn(6, dtype=D64)
    mod(pred, target).backward()
    var = mod.noise_var.detach().clone().requires_grad_(True)
    logits = -((pred[:, None] - target[None, :]) ** 2) / (2 * var)
    ce = -torch.diagonal(torch.log_softmax(logits, 1)).mean()
    (ce * 2 * float(var.detach())).backward()
    assert torch.allclose(mod.noise_var.grad, var.grad)


# -- class-independent and multi-label BCE ----------------------------------------------------
def _bce(z, t):
    return -(t * torch.log(torch.sigmoid(z)) + (1 - t) * torch.log(torch.sigmoid(-z)))


def test_class_independent_bce_matches_uniseg():
    z = _leaf(2, 4, 3, seed=6)
    target = torch.tensor([[0, 2, -100], [3, 1, 1]])
    mask = torch.tensor([[True, True, False, True], [True, True, True, True]])

    def ref(x):
        total, count = 0.0, 0
        for b in range(2):
            for p in range(3):
                if int(target[b, p]) == -100:
                    continue
                for c in range(4):
                    if mask[b, c]:
                        total = total + _bce(x[b, c, p], float(int(target[b, p]) == c))
                        count += 1
        return total / count

    _check(lambda x: C.class_independent_bce(x, target, class_mask=mask), ref, (z,))


def test_class_relation_term_matches_uniseg():
    z = _leaf(2, 4, 3, seed=8)
    target = torch.tensor([[0, 2, -100], [3, 1, 1]])
    mask = torch.tensor([[True, True, False, False], [True, True, True, False]])
    rel = torch.zeros(4, 4, dtype=D64)
    rel[0, 3], rel[2, 3], rel[1, 3], rel[0, 2] = 0.7, 0.4, 0.9, 0.5  # label -> related class

    def ref(x):
        total, count = 0.0, 0
        for b in range(2):
            for p in range(3):
                y = int(target[b, p])
                if y == -100:
                    continue
                for c in range(4):
                    if mask[b, c]:  # the label space: one-hot targets
                        total = total + _bce(x[b, c, p], float(y == c))
                        count += 1
                    elif float(rel[y, c]) > 0:  # a related class of another label space
                        total = total + _bce(x[b, c, p], float(rel[y, c]))
                        count += 1
        return total / count

    _check(
        lambda x: C.class_independent_bce(x, target, class_mask=mask, class_relation=rel),
        ref,
        (z,),
    )
    with pytest.raises(ValueError, match="class_relation needs class_mask"):
        C.class_independent_bce(z, target, class_relation=rel)
    with pytest.raises(ValueError, match=r"class_relation must lie in \[0, 1\]"):
        C.class_independent_bce(z, target, class_mask=mask, class_relation=2 * rel)


def test_class_independent_bce_differs_from_softmax_coupling():
    # a class outside the sample's label space gets no gradient at all
    z = torch.zeros(1, 3, requires_grad=True)
    C.class_independent_bce(
        z, torch.tensor([0]), class_mask=torch.tensor([True, True, False])
    ).backward()
    assert float(z.grad[0, 2]) == 0.0 and float(z.grad[0, 1]) > 0


def test_multilabel_bce_matches_catlip():
    z = _leaf(3, 5, seed=7)
    t = torch.tensor([[1, 0, 0, 1, 0], [0, 0, 0, 0, 1], [1, 1, 1, 0, 0]], dtype=D64)

    def ref(x):
        return sum(_bce(x[i, c], t[i, c]) for i in range(3) for c in range(5)) / 15

    _check(lambda x: C.multilabel_bce(x, t), ref, (z,))
    with pytest.raises(ValueError, match=r"targets must lie in \[0, 1\]"):
        C.multilabel_bce(z, 2 * t)


# -- information maximization -----------------------------------------------------------------
@pytest.mark.parametrize("w", [1.0, 0.3])
def test_information_maximization_matches_clim(w):
    z = _leaf(6, 4, seed=8)

    def ref(x):
        ps = [_softmax_row(x[i]) for i in range(6)]
        cond = sum(-sum(p[c] * torch.log(p[c]) for c in range(4)) for p in ps) / 6
        mean = [sum(p[c] for p in ps) / 6 for c in range(4)]
        marg = -sum(m * torch.log(m) for m in mean)
        return cond - w * marg

    _check(lambda x: C.information_maximization_loss(x, diversity_weight=w), ref, (z,))


# -- gradcheck, validation, numerics ----------------------------------------------------------
def test_gradcheck_small():
    z, y = _leaf(3, 4, seed=9), torch.tensor([0, 3, 1])
    assert torch.autograd.gradcheck(lambda x: C.squentropy(x, y), (z,))
    assert torch.autograd.gradcheck(lambda x: C.comp_sum_loss(x, y, tau=1.7), (z,))
    assert torch.autograd.gradcheck(lambda x: C.information_maximization_loss(x), (z,))


def test_bad_inputs_raise():
    z = torch.randn(3, 4)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 4\)"):
        C.squentropy(z, torch.tensor([0, 4, 1]))
    with pytest.raises(ValueError, match="labels must be an integer tensor"):
        C.comp_sum_loss(z, torch.tensor([0.0, 1.0, 2.0]))
    with pytest.raises(ValueError, match="tau must be >= 0"):
        C.comp_sum_loss(z, torch.tensor([0, 1, 2]), tau=-1.0)
    with pytest.raises(ValueError, match="class_counts"):
        C.balanced_softmax_loss(z, torch.tensor([0, 1, 2]), torch.tensor([1.0, 0.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match="reduction must be one of"):
        C.squentropy(z, torch.tensor([0, 1, 2]), reduction="avg")
    with pytest.raises(TypeError, match="logits must be a floating-point"):
        C.squentropy(torch.ones(3, 4, dtype=torch.long), torch.tensor([0, 1, 2]))


def test_large_logits_stay_finite_and_inputs_untouched():
    z = (torch.randn(4, 5) * 1e3).half().float()
    zc = z.clone()
    y = torch.tensor([0, 1, 2, 3])
    for fn in (C.squentropy, C.mae_loss, C.generalized_cross_entropy):
        assert torch.isfinite(fn(z, y))
    assert torch.isfinite(C.information_maximization_loss(z))
    assert torch.equal(z, zc)
    assert math.isfinite(
        float(C.harmonic_loss(torch.zeros(2, 3), torch.zeros(2, 3), torch.tensor([0, 1])))
    )


def test_gradcheck_harmonic_number_token_balanced():
    x, w = _leaf(3, 2, seed=20), _leaf(3, 2, seed=21)
    y = torch.tensor([0, 2, 1])
    assert torch.autograd.gradcheck(lambda a, b: C.harmonic_loss(a, b, y, exponent=2.0), (x, w))
    logits = _leaf(2, 3, 6, seed=22)
    labels = torch.tensor([[2, 3, 0], [5, 1, 4]])
    ids, vals = torch.tensor([2, 3, 4, 5]), torch.tensor([0.0, 1.0, 2.0, 5.0], dtype=D64)
    for kind in ("mse", "lp", "wasserstein"):
        assert torch.autograd.gradcheck(
            lambda z, k=kind: C.number_token_loss(z, labels, ids, vals, kind=k, p=3.0), (logits,)
        )
    pred, target = _leaf(4, seed=23), torch.randn(4, dtype=D64)
    assert torch.autograd.gradcheck(lambda p: C.balanced_mse_loss(p, target, 0.7), (pred,))
