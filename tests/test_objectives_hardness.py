"""HARD objectives against loop-level float64 references written from the papers' equations."""

from __future__ import annotations

import math

import pytest
import torch

from contrastkit.objectives import hardness as H

SEEDS = (0, 1, 2)


# ---------------------------------------------------------------------------- helpers
def val(v):
    return float(v.detach()) if isinstance(v, torch.Tensor) else float(v)


def cos(a, b):
    na = torch.sqrt(sum(x * x for x in a))
    nb = torch.sqrt(sum(x * x for x in b))
    return sum(x * y for x, y in zip(a, b, strict=True)) / (na * nb)


def sqd(a, b):
    return sum((x - y) ** 2 for x, y in zip(a, b, strict=True))


def unit(a):
    n = torch.sqrt(sum(x * x for x in a))
    return [x / n for x in a]


def lse(values):
    m = max(val(v) for v in values)
    return m + torch.log(sum(torch.exp(v - m) for v in values))


def softmax(values):
    z = lse(values)
    return [torch.exp(v - z) for v in values]


def leaves(*shapes, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(*s, generator=g, dtype=torch.float64).requires_grad_() for s in shapes]


def assert_matches(lib_fn, ref_fn, inputs, atol=1e-10):
    lib_in = [x.detach().clone().requires_grad_() for x in inputs]
    ref_in = [x.detach().clone().requires_grad_() for x in inputs]
    lib = lib_fn(*lib_in)
    ref = ref_fn(*ref_in)
    assert lib.dtype == torch.float64
    torch.testing.assert_close(lib, ref.reshape(lib.shape), atol=atol, rtol=0)
    g_lib = torch.autograd.grad(lib, lib_in, allow_unused=True)
    g_ref = torch.autograd.grad(ref, ref_in, allow_unused=True)
    for x, a, b in zip(lib_in, g_lib, g_ref, strict=True):
        a = torch.zeros_like(x) if a is None else a
        b = torch.zeros_like(x) if b is None else b
        torch.testing.assert_close(a, b, atol=atol, rtol=0)


# ---------------------------------------------------------------------------- focal
def focal_ref(q, k, gamma, tau, symmetric, negs=None):
    b = q.shape[0]

    def direction(a, c, extra):
        total = 0.0
        for i in range(b):
            logits = [cos(a[i], c[j]) / tau for j in range(c.shape[0])]
            if extra is not None:
                logits += [cos(a[i], n) / tau for n in extra[i]]
            logp = logits[i] - lse(logits)
            p = torch.exp(logp)
            total = total - (1 - p) ** gamma * logp
        return total / b

    out = direction(q, k, negs)
    return (out + direction(k, q, None)) / 2 if symmetric else out


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("gamma", [0.0, 2.0])
def test_focal_info_nce_matches_paper(seed, symmetric, gamma):
    q, k = leaves((5, 4), (5, 4), seed=seed)
    assert_matches(
        lambda q, k: H.focal_info_nce(q, k, gamma=gamma, temperature=0.3, symmetric=symmetric),
        lambda q, k: focal_ref(q, k, gamma, 0.3, symmetric),
        [q, k],
    )


def test_focal_info_nce_with_hard_negatives_and_gradcheck():
    q, k, n = leaves((4, 3), (4, 3), (4, 2, 3), seed=5)
    assert_matches(
        lambda q, k, n: H.focal_info_nce(q, k, gamma=1.5, temperature=0.5, negatives=n),
        lambda q, k, n: focal_ref(q, k, 1.5, 0.5, False, n),
        [q, k, n],
    )
    assert torch.autograd.gradcheck(
        lambda q, k: H.focal_info_nce(q, k, gamma=2.0, temperature=0.5, symmetric=True), (q, k)
    )


def test_focal_down_weights_easy_rows():
    q = torch.randn(6, 8, dtype=torch.float64)
    assert H.focal_info_nce(q, q.clone(), gamma=2.0) < H.focal_info_nce(q, q.clone(), gamma=0.0)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("alpha", [None, 0.25])
def test_focal_sigmoid_matches_ro_vit(seed, alpha):
    q, k = leaves((5, 4), (6, 4), seed=seed)
    y = torch.tensor([0, 1, 2, 0, 1])
    yk = torch.tensor([0, 1, 2, 0, 1, 2])
    tau, bias, gamma = 0.2, -1.0, 2.0

    def ref(q, k):
        total = 0.0
        for i in range(5):
            for j in range(6):
                x = cos(q[i], k[j]) / tau + bias
                pos = bool(y[i] == yk[j])
                p = 1 / (1 + torch.exp(-x)) if pos else 1 / (1 + torch.exp(x))
                a = 1.0 if alpha is None else (alpha if pos else 1 - alpha)
                total = total - a * (1 - p) ** gamma * torch.log(p)
        return total / 5

    assert_matches(
        lambda q, k: H.focal_sigmoid_loss(
            q, k, gamma=gamma, alpha=alpha, temperature=tau, bias=bias, labels=y, key_labels=yk
        ),
        ref,
        [q, k],
    )


# ---------------------------------------------------------------------------- HCL
def hcl_ref(z, ids, beta, tau_plus, tau, clamped=None):
    n = z.shape[0]
    total, count = 0.0, 0
    for i in range(n):
        pos = [j for j in range(n) if j != i and ids[j] == ids[i]]
        neg = [j for j in range(n) if ids[j] != ids[i]]
        l_neg = [cos(z[i], z[j]) / tau for j in neg]
        big_n = len(neg)
        imp = [torch.exp(beta * ln) for ln in l_neg]
        reweight = sum(w * torch.exp(ln) for w, ln in zip(imp, l_neg, strict=True))
        reweight = reweight / (sum(imp) / big_n)
        row = 0.0
        for p in pos:
            e_pos = torch.exp(cos(z[i], z[p]) / tau)
            ng = (-tau_plus * big_n * e_pos + reweight) / (1 - tau_plus)
            floor = big_n * math.exp(-1 / tau)
            if tau_plus > 0 and val(ng) < floor:
                ng = torch.tensor(floor, dtype=torch.float64)
                if clamped is not None:
                    clamped.append((i, p))
            row = row - torch.log(e_pos / (e_pos + ng))
        total = total + row / len(pos)
        count += 1
    return total / count


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize(("beta", "tau_plus"), [(0.0, 0.0), (1.0, 0.0), (0.5, 0.1), (2.0, 0.6)])
def test_hard_negative_info_nce_matches_hcl(seed, beta, tau_plus):
    (z,) = leaves((8, 3), seed=seed)
    ids = torch.arange(4).repeat(2)
    assert_matches(
        lambda z: H.hard_negative_info_nce(
            z, labels=ids, beta=beta, tau_plus=tau_plus, temperature=0.5
        ),
        lambda z: hcl_ref(z, ids, beta, tau_plus, 0.5),
        [z],
    )


@pytest.mark.parametrize("seed", SEEDS)
def test_hardness_weighted_supervised_negatives_match_coco(seed):
    """CoCo: a supervised contrastive loss (label positives) that up-weights hard negatives,
    written as HCL's importance weighting over the negatives of each labelled anchor."""
    (z,) = leaves((9, 4), seed=seed)
    y = torch.tensor([0, 1, 0, 1, 0, 2, 2, 1, 2])
    assert_matches(
        lambda z: H.hard_negative_info_nce(z, labels=y, beta=1.5, temperature=0.2),
        lambda z: hcl_ref(z, y, 1.5, 0.0, 0.2),
        [z],
    )


def test_hcl_clamp_is_exercised_and_beta_zero_is_infonce():
    (z,) = leaves((8, 3), seed=9)
    ids = torch.arange(4).repeat(2)
    # tau_plus close to 1 pushes the debiased estimate below the floor for some rows
    a = H.hard_negative_info_nce(z, labels=ids, beta=0.0, tau_plus=0.95, temperature=0.5)
    clamped = []
    torch.testing.assert_close(a, hcl_ref(z, ids, 0.0, 0.95, 0.5, clamped), atol=1e-10, rtol=0)
    assert clamped, "the test must exercise the N e^(-1/tau) floor"
    (g,) = torch.autograd.grad(a, z)
    assert torch.isfinite(g).all()
    from contrastkit.functional import info_nce

    torch.testing.assert_close(
        H.hard_negative_info_nce(z, labels=ids, beta=0.0, temperature=0.5),
        info_nce(z, labels=ids, temperature=0.5),
    )
    assert torch.autograd.gradcheck(
        lambda z: H.hard_negative_info_nce(z, labels=ids, beta=1.0, tau_plus=0.1), (z,)
    )


@pytest.mark.parametrize("seed", SEEDS)
def test_negative_weighted_matches_meow(seed):
    q, k, w = leaves((5, 4), (5, 4), (5, 5), seed=seed)

    def ref(q, k, w):
        total = 0.0
        for i in range(5):
            lp = cos(q[i], k[i]) / 0.2
            mass = sum(
                torch.abs(w[i, j]) * torch.exp(cos(q[i], k[j]) / 0.2) for j in range(5) if j != i
            )
            total = total - lp + torch.log(torch.exp(lp) + mass)
        return total / 5

    assert_matches(
        lambda q, k, w: H.negative_weighted_info_nce(
            q, k, negative_weights=w.abs(), temperature=0.2
        ),
        ref,
        [q, k, w],
    )


def test_negative_weights_zero_drop_negatives_and_gradcheck():
    q, k = leaves((5, 4), (5, 4), seed=3)
    ones = torch.ones(5, 5, dtype=torch.float64)
    from contrastkit.functional import info_nce

    torch.testing.assert_close(
        H.negative_weighted_info_nce(q, k, negative_weights=ones), info_nce(q, k)
    )
    # hard 0/1 weights (MEOW): dropping a negative equals excluding it
    mask = torch.rand(5, 5, generator=torch.Generator().manual_seed(0)) > 0.5
    mask.fill_diagonal_(False)
    torch.testing.assert_close(
        H.negative_weighted_info_nce(q, k, negative_weights=(~mask).double()),
        info_nce(q, k, exclude=mask),
    )
    w = torch.rand(5, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda q, w: H.negative_weighted_info_nce(q, k, negative_weights=w), (q, w)
    )


# ---------------------------------------------------------------------------- top-k MoCo
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("symmetric", [True, False])
def test_topk_negatives_matches_paper(seed, symmetric):
    q, k, queue = leaves((4, 3), (4, 3), (10, 3), seed=seed)
    kk, tau = 3, 0.2

    def direction(a, b, bank):
        total = 0.0
        for i in range(a.shape[0]):
            sims = [cos(a[i], bank[m]) for m in range(bank.shape[0])]
            top = sorted(range(len(sims)), key=lambda m: -val(sims[m]))[:kk]
            logits = [cos(a[i], b[i]) / tau] + [sims[m] / tau for m in top]
            total = total - logits[0] + lse(logits)
        return total / a.shape[0]

    def ref(q, k, queue):
        out = direction(q, k, queue)
        return (out + direction(k, q, queue)) / 2 if symmetric else out

    assert_matches(
        lambda q, k, queue: H.topk_negatives_info_nce(
            q, k, queue, k=kk, temperature=tau, symmetric=symmetric
        ),
        ref,
        [q, k, queue],
    )


# ---------------------------------------------------------------------------- CACR
def cacr_ref(views, alpha, beta, tau_pos, tau_neg):
    m, n = len(views), views[0].shape[0]
    z = [[unit(v[i]) for i in range(n)] for v in views]
    att = []
    for x in range(m):
        total = 0.0
        for i in range(n):
            d = [sqd(z[x][i], z[y][i]) for y in range(m) if y != x]
            w = softmax([tau_pos * di for di in d])
            total = total + sum(wi * alpha * di for wi, di in zip(w, d, strict=True))
        att.append(total / n)
    rep = []
    for x in range(m):
        for y in range(x + 1, m):
            total = 0.0
            for i in range(n):
                d = [sqd(z[x][i], z[y][j]) for j in range(n) if j != i]
                w = softmax([-tau_neg * di for di in d])
                total = total + sum(wi * (-beta) * di for wi, di in zip(w, d, strict=True))
            rep.append(total / n)
    return sum(att) / len(att) + sum(rep) / len(rep)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("num_views", [2, 3])
def test_cacr_matches_paper(seed, num_views):
    views = leaves(*[(5, 3)] * num_views, seed=seed)
    assert_matches(
        lambda *v: H.cacr(*v, alpha=1.5, beta=0.7, tau_pos=2.0, tau_neg=3.0),
        lambda *v: cacr_ref(v, 1.5, 0.7, 2.0, 3.0),
        views,
    )


def test_cacr_gradcheck():
    views = leaves((3, 3), (3, 3), (3, 3), seed=7)
    assert torch.autograd.gradcheck(
        lambda *v: H.cacr(*v, tau_pos=1.0, tau_neg=2.0), views, fast_mode=True
    )


# ---------------------------------------------------------------------------- MACL
def macl_ref(v1, v2, tau0, alpha, a0, two_view, reweight):
    n = v1.shape[0]
    a = sum(val(cos(v1[i], v2[i])) for i in range(n)) / n
    tau = tau0 * (1 + alpha * (a - a0))
    rows = []
    if two_view:
        z = torch.cat([v1, v2])
        for i in range(2 * n):
            p = (i + n) % (2 * n)
            logits = [cos(z[i], z[j]) / tau for j in range(2 * n) if j != i]
            lp = cos(z[i], z[p]) / tau - lse(logits)
            rows.append(lp)
    else:
        for i in range(n):
            logits = [cos(v1[i], v2[j]) / tau for j in range(n)]
            rows.append(logits[i] - lse(logits))
    total = 0.0
    for lp in rows:
        weight = 1.0 / (1.0 - math.exp(val(lp))) if reweight else 1.0
        total = total - weight * lp
    return total / len(rows)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("two_view", [True, False])
@pytest.mark.parametrize("reweight", [True, False])
def test_macl_matches_paper(seed, two_view, reweight):
    v1, v2 = leaves((5, 4), (5, 4), seed=seed)
    assert_matches(
        lambda a, b: H.macl(
            a, b, temperature=0.1, alpha=0.5, a0=0.2, two_view=two_view, reweight=reweight
        ),
        lambda a, b: macl_ref(a, b, 0.1, 0.5, 0.2, two_view, reweight),
        [v1, v2],
    )


def test_macl_temperature_grows_with_alignment():
    """The paper's mechanism: a better-aligned batch gets a larger temperature (weaker
    penalty on hard negatives). With identical views (A = 1) and alpha = 1, a0 = 0 the loss
    equals plain NT-Xent at tau0 * 2."""
    from contrastkit.functional import nt_xent

    (v,) = leaves((6, 4), seed=4)
    got = H.macl(v, v.clone(), temperature=0.1, alpha=1.0, a0=0.0, reweight=False)
    torch.testing.assert_close(got, nt_xent(v, v.clone(), temperature=0.2))


@pytest.mark.parametrize("two_view", [True, False])
@pytest.mark.parametrize("tau0", [0.02, 0.01])
def test_macl_reweighted_is_finite_when_the_positive_dominates(two_view, tau0):
    """Well-aligned views at a low temperature: P_i rounds to 1 in float32, but the paper's
    V_i (-log P_i) = (1 + M_i) / M_i log(1 + M_i), with M_i = sum_n e^{(s_in - s_ip)/tau} the
    negative mass relative to the positive, tends to 1 and its gradient (V_i fixed) to
    grad log M_i. Reference: that loop in float64, compared with the float32 library."""
    g = torch.Generator().manual_seed(3)
    base = torch.randn(6, 16, generator=g, dtype=torch.float64)
    v1 = base
    v2 = base + 0.01 * torch.randn(6, 16, generator=g, dtype=torch.float64)

    def ref(v1, v2):
        n = v1.shape[0]
        a = sum(val(cos(v1[i], v2[i])) for i in range(n)) / n
        tau = tau0 * (1 + 0.5 * a)
        z = torch.cat([v1, v2]) if two_view else None
        rows = []
        for i in range(2 * n if two_view else n):
            if two_view:
                p = (i + n) % (2 * n)
                s_p = cos(z[i], z[p])
                negs = [cos(z[i], z[j]) for j in range(2 * n) if j not in (i, p)]
            else:
                s_p = cos(v1[i], v2[i])
                negs = [cos(v1[i], v2[j]) for j in range(n) if j != i]
            m = sum(torch.exp((s_n - s_p) / tau) for s_n in negs)
            weight = (1 + val(m)) / val(m)  # V = 1 / (1 - P), not differentiated
            rows.append(weight * torch.log1p(m))
        return sum(rows) / len(rows)

    x1, x2 = (v.float().requires_grad_() for v in (v1, v2))
    got = H.macl(x1, x2, temperature=tau0, alpha=0.5, two_view=two_view)
    r1, r2 = (v.clone().requires_grad_() for v in (v1, v2))
    want = ref(r1, r2)
    assert torch.isfinite(got)
    torch.testing.assert_close(got.double(), want.detach(), atol=1e-5, rtol=0)
    g_got = torch.autograd.grad(got, (x1, x2))
    g_want = torch.autograd.grad(want, (r1, r2))
    for a, b in zip(g_got, g_want, strict=True):
        assert bool(torch.isfinite(a).all())
        torch.testing.assert_close(a.double(), b, atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="at least 2 samples"):
        H.macl(x1[:1], x2[:1], temperature=tau0)


# ---------------------------------------------------------------------------- behaviour
@pytest.mark.parametrize("seed", SEEDS)
def test_relative_penalties_match_paper_and_gradients(seed):
    q, k = leaves((4, 3), (5, 3), seed=seed)
    tau = 0.2
    r = H.relative_penalties(q, k, temperature=tau)
    s = torch.tensor(
        [[val(cos(q[i], k[j])) for j in range(5)] for i in range(4)], dtype=torch.float64
    ).requires_grad_()
    for i in range(4):
        den = sum(math.exp(val(s[i, m]) / tau) for m in range(5) if m != i)
        for j in range(5):
            want = 0.0 if j == i else math.exp(val(s[i, j]) / tau) / den
            assert abs(val(r[i, j]) - want) < 1e-10
        # ratio of InfoNCE gradients |dL/ds_ij| / |dL/ds_ii| (Wang & Liu 2021, eq. 3)
        row = s[i] / tau
        loss = -(row[i] - torch.logsumexp(row, 0))
        (g,) = torch.autograd.grad(loss, s)
        ratio = g[i].abs() / g[i, i].abs()
        ratio[i] = 0.0
        torch.testing.assert_close(r[i], ratio, atol=1e-10, rtol=0)
    # smaller temperature concentrates the penalty on the hardest negative
    assert H.relative_penalties(q, k, temperature=0.05).max() > r.max()


# ---------------------------------------------------------------------------- iSogCLR
def isogclr_ref(q, k, tau_q, tau_k, log_u_q, log_u_k, gamma, rho):
    """Qiu et al. 2023, Alg. 1: returns (objective value, surrogate with the estimator gradient,
    new u's, tau gradients)."""
    b = q.shape[0]
    s = [[cos(q[i], k[j]) for j in range(b)] for i in range(b)]
    value, surrogate, new_u, tau_grad = 0.0, 0.0, [], []
    for side in ("query", "key"):
        taus = tau_q if side == "query" else tau_k
        logus = log_u_q if side == "query" else log_u_k
        us, grads = [], []
        for i in range(b):
            tau = float(taus[i])

            def sim(i, z, side=side):
                return s[i][z] if side == "query" else s[z][i]

            h = [sim(i, z) - sim(i, i) for z in range(b) if z != i]
            g = sum(torch.exp(hz / tau) for hz in h) / (b - 1)
            old = float(logus[i])
            u = val(g) if math.isinf(old) else (1 - gamma) * math.exp(old) + gamma * val(g)
            us.append(math.log(u))
            value = value + tau * (math.log(u) + rho) / b
            surrogate = surrogate + tau / u * g / b  # gradient: tau_i / u_i grad g_i
            gt = (
                math.log(u)
                + rho
                - sum(math.exp(val(hz) / tau) * val(hz) / tau for hz in h) / ((b - 1) * u)
            )
            grads.append(gt)
        new_u.append(us)
        tau_grad.append(grads)
    return value, surrogate, new_u, tau_grad


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("visited", [False, True])
def test_isogclr_matches_paper(seed, visited):
    q, k = leaves((5, 4), (5, 4), seed=seed)
    g = torch.Generator().manual_seed(seed)
    tau_q = 0.05 + 0.2 * torch.rand(5, generator=g, dtype=torch.float64)
    tau_k = 0.05 + 0.2 * torch.rand(5, generator=g, dtype=torch.float64)
    if visited:
        log_u_q = torch.randn(5, generator=g, dtype=torch.float64)
        log_u_k = torch.randn(5, generator=g, dtype=torch.float64)
    else:
        log_u_q = log_u_k = torch.full((5,), -math.inf, dtype=torch.float64)
    out = H.isogclr(q, k, tau_q, tau_k, log_u_q, log_u_k, gamma=0.7, rho=3.0)
    value, surrogate, new_u, tau_grad = isogclr_ref(q, k, tau_q, tau_k, log_u_q, log_u_k, 0.7, 3.0)
    assert abs(val(out.loss) - value) < 1e-10
    torch.testing.assert_close(out.log_u_query, torch.tensor(new_u[0], dtype=torch.float64))
    torch.testing.assert_close(out.log_u_key, torch.tensor(new_u[1], dtype=torch.float64))
    torch.testing.assert_close(out.tau_grad_query, torch.tensor(tau_grad[0], dtype=torch.float64))
    torch.testing.assert_close(out.tau_grad_key, torch.tensor(tau_grad[1], dtype=torch.float64))
    g_lib = torch.autograd.grad(out.loss, (q, k))
    g_ref = torch.autograd.grad(surrogate, (q, k))
    for a, b in zip(g_lib, g_ref, strict=True):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=0)


def test_isogclr_tau_gradient_is_the_derivative_of_the_objective():
    """With u_i = g_i (first visit), grad_tau_i is d/dtau_i [tau_i (log g_i + rho)]."""
    q, k = leaves((4, 3), (4, 3), seed=8)
    tau = torch.full((4,), 0.3, dtype=torch.float64, requires_grad=True)
    fresh = torch.full((4,), -math.inf, dtype=torch.float64)
    out = H.isogclr(q, k, tau.detach(), tau.detach(), fresh, fresh, gamma=0.5, rho=2.0)
    s = (
        torch.nn.functional.normalize(q.detach(), dim=1)
        @ torch.nn.functional.normalize(k.detach(), dim=1).T
    )
    h = s - s.diagonal()[:, None]
    eye = torch.eye(4, dtype=torch.bool)
    g = (torch.exp(h / tau[:, None]).masked_fill(eye, 0.0)).sum(1) / 3
    objective = (tau * (g.log() + 2.0)).sum()
    (want,) = torch.autograd.grad(objective, tau)
    torch.testing.assert_close(out.tau_grad_query, want)


def test_isogclr_module_updates_state_and_survives_checkpoint():
    torch.manual_seed(0)
    module = H.ISogCLR(num_samples=20, tau_init=0.1, tau_lr=0.05, tau_momentum=0.5, rho=1.0)
    q, k = torch.randn(6, 4, dtype=torch.float64), torch.randn(6, 4, dtype=torch.float64)
    idx = torch.tensor([3, 7, 0, 19, 11, 5])
    module.double()
    out = H.isogclr(
        q, k, module.tau_query[idx], module.tau_key[idx], module.log_u_query[idx],
        module.log_u_key[idx], gamma=module.gamma, rho=module.rho,
    )  # fmt: skip
    loss = module(q, k, idx)
    torch.testing.assert_close(loss, out.loss)
    torch.testing.assert_close(module.log_u_query[idx], out.log_u_query)
    m = 0.5 * out.tau_grad_query
    torch.testing.assert_close(module.tau_m_query[idx], m)
    torch.testing.assert_close(module.tau_query[idx], (0.1 - 0.05 * m).clamp(0.005, 1.0))
    untouched = torch.ones(20, dtype=torch.bool)
    untouched[idx] = False
    assert torch.all(torch.isneginf(module.log_u_query[untouched]))
    # checkpoint: a fresh module loading the state continues identically
    clone = H.ISogCLR(num_samples=20, tau_init=0.1, tau_lr=0.05, tau_momentum=0.5, rho=1.0)
    clone.double()
    clone.load_state_dict(module.state_dict())
    idx2 = torch.tensor([7, 1, 3, 2, 4, 6])
    torch.testing.assert_close(clone(q, k, idx2), module(q, k, idx2))
    for name, buf in module.state_dict().items():
        torch.testing.assert_close(clone.state_dict()[name], buf)
    # eval mode does not update state
    before = {n: b.clone() for n, b in module.state_dict().items()}
    module.eval()
    module(q, k, idx2)
    for n, b in module.state_dict().items():
        assert torch.equal(b, before[n])


# ---------------------------------------------------------------------------- misc
def test_modules_match_functionals():
    q, k, queue = leaves((6, 4), (6, 4), (12, 4), seed=12)
    ids = torch.arange(3).repeat(2)
    torch.testing.assert_close(H.FocalInfoNCE(2.0)(q, k), H.focal_info_nce(q, k, gamma=2.0))
    torch.testing.assert_close(
        H.HardNegativeInfoNCE(1.0, 0.1)(q, labels=ids),
        H.hard_negative_info_nce(q, labels=ids, beta=1.0, tau_plus=0.1),
    )
    torch.testing.assert_close(
        H.TopKNegativesInfoNCE(k=4)(q, k, queue), H.topk_negatives_info_nce(q, k, queue, k=4)
    )
    torch.testing.assert_close(H.CACR()(q, k), H.cacr(q, k))
    torch.testing.assert_close(H.MACL()(q, k), H.macl(q, k))
    w = torch.rand(6, 6, dtype=torch.float64)
    torch.testing.assert_close(
        H.NegativeWeightedInfoNCE()(q, k, negative_weights=w),
        H.negative_weighted_info_nce(q, k, negative_weights=w),
    )
    fs = H.FocalSigmoidLoss(temperature=0.1)
    fs.double()
    loss = fs(q, k)
    loss.backward()
    assert fs.log_temperature.grad is not None


def test_low_temperature_and_half_precision_finite():
    q, k = torch.randn(8, 16), torch.randn(8, 16)
    ids = torch.arange(4).repeat(2)
    assert torch.isfinite(H.focal_info_nce(q, k, temperature=0.01))
    assert torch.isfinite(H.focal_info_nce(q.bfloat16(), k.bfloat16(), temperature=0.01))
    assert torch.isfinite(H.hard_negative_info_nce(q, labels=ids, temperature=0.01, beta=2.0))
    assert torch.isfinite(
        H.hard_negative_info_nce(q.half(), labels=ids, temperature=0.01, tau_plus=0.1)
    )
    assert torch.isfinite(H.focal_sigmoid_loss(q, k, temperature=0.01))
    assert torch.isfinite(H.macl(q, k, temperature=0.01))


def test_bad_inputs_raise():
    q, k = torch.randn(4, 3), torch.randn(4, 3)
    with pytest.raises(ValueError, match="gamma"):
        H.focal_info_nce(q, k, gamma=-1.0)
    with pytest.raises(ValueError, match="tau_plus"):
        H.hard_negative_info_nce(q, k, tau_plus=1.0)
    with pytest.raises(ValueError, match="negative_weights"):
        H.negative_weighted_info_nce(q, k, negative_weights=torch.ones(3, 3))
    with pytest.raises(ValueError, match="negative_weights"):
        H.negative_weighted_info_nce(q, k, negative_weights=-torch.ones(4, 4))
    with pytest.raises(ValueError, match="k must be"):
        H.topk_negatives_info_nce(q, k, torch.randn(5, 3), k=9)
    with pytest.raises(ValueError, match="2 views"):
        H.cacr(q)
    with pytest.raises(ValueError, match="not positive"):
        H.macl(q, -q, alpha=1.0, a0=1.0)
    with pytest.raises(ValueError, match="index"):
        H.ISogCLR(10)(q, k, torch.tensor([0, 0, 1, 2]))
    with pytest.raises(ValueError, match="index"):
        H.ISogCLR(10)(q, k, torch.tensor([0, 1, 2, 10]))
    with pytest.raises(ValueError, match="gamma"):
        H.isogclr(q, k, torch.ones(4), torch.ones(4), torch.zeros(4), torch.zeros(4), gamma=0.0)
    with pytest.raises(ValueError, match="tau_query"):
        H.isogclr(q, k, -torch.ones(4), torch.ones(4), torch.zeros(4), torch.zeros(4))
    with pytest.raises(TypeError, match="key"):
        H.focal_sigmoid_loss(q, "k")


def test_learnable_temperature_and_bias_gradients_match_reference():
    q, k = leaves((4, 3), (4, 3), seed=40)
    tau = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    bias = torch.tensor(-0.5, dtype=torch.float64, requires_grad=True)
    assert_matches(
        lambda q, k, t: H.focal_info_nce(q, k, gamma=2.0, temperature=t, symmetric=True),
        lambda q, k, t: focal_ref(q, k, 2.0, t, True),
        [q, k, tau],
    )

    def ref(q, k, t, b):
        total = 0.0
        for i in range(4):
            for j in range(4):
                x = cos(q[i], k[j]) / t + b
                p = 1 / (1 + torch.exp(-x)) if i == j else 1 / (1 + torch.exp(x))
                total = total - (1 - p) ** 2 * torch.log(p)
        return total / 4

    assert_matches(
        lambda q, k, t, b: H.focal_sigmoid_loss(q, k, temperature=t, bias=b), ref, [q, k, tau, bias]
    )
