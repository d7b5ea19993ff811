"""RANK objectives against loop-level float64 references written from the papers' equations."""

from __future__ import annotations

import math

import pytest
import torch

from contrastkit.functional import info_nce, supcon
from contrastkit.objectives import ranking as R

SEEDS = (0, 1, 2)


# ---------------------------------------------------------------------------- helpers
def val(v):
    return float(v.detach()) if isinstance(v, torch.Tensor) else float(v)


def cos(a, b):
    na = torch.sqrt(sum(x * x for x in a))
    nb = torch.sqrt(sum(x * x for x in b))
    return sum(x * y for x, y in zip(a, b, strict=True)) / (na * nb)


def lse(values):
    m = max(val(v) for v in values)
    return m + torch.log(sum(torch.exp(v - m) for v in values))


def softplus(x):
    return torch.log1p(torch.exp(-torch.abs(x))) + torch.clamp(x, min=0.0)


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


def random_mask(shape, seed, p=0.3, at_least_diag=True):
    g = torch.Generator().manual_seed(seed)
    m = torch.rand(*shape, generator=g) < p
    if at_least_diag:
        m |= torch.eye(*shape, dtype=torch.bool)
    return m


# ---------------------------------------------------------------------------- MW loss
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("per_query", [False, True])
def test_mann_whitney_matches_paper(seed, per_query):
    (s,) = leaves((4, 5), seed=seed)
    pos = random_mask((4, 5), seed)
    scale = 3.0

    def ref(s):
        if not per_query:
            ps = [s[i, j] for i in range(4) for j in range(5) if pos[i, j]]
            ns = [s[i, j] for i in range(4) for j in range(5) if not pos[i, j]]
            terms = [softplus(-scale * (p - n)) for p in ps for n in ns]
            return sum(terms) / len(terms)
        rows = []
        for i in range(4):
            ps = [s[i, j] for j in range(5) if pos[i, j]]
            ns = [s[i, j] for j in range(5) if not pos[i, j]]
            if ps and ns:
                rows.append(
                    sum(softplus(-scale * (p - n)) for p in ps for n in ns) / (len(ps) * len(ns))
                )
        return sum(rows) / len(rows)

    assert_matches(
        lambda s: R.mann_whitney_loss(s, pos, scale=scale, per_query=per_query), ref, [s]
    )


def test_mann_whitney_gradcheck_and_auc_link():
    (s,) = leaves((3, 4), seed=5)
    assert torch.autograd.gradcheck(lambda s: R.mann_whitney_loss(s, per_query=True), (s,))
    # perfectly separated scores with a large scale give a loss near 0 (AUC = 1)
    sep = torch.full((3, 3), -1.0, dtype=torch.float64) + 2 * torch.eye(3, dtype=torch.float64)
    assert float(R.mann_whitney_loss(sep, scale=50.0)) < 1e-20


# ---------------------------------------------------------------------------- listwise KL
def kl_rows_ref(s, t, tau_s, tau_t, mask=None):
    b, n = s.shape
    total = 0.0
    for i in range(b):
        cols = [j for j in range(n) if mask is None or mask[i, j]]
        zs = lse([s[i, j] / tau_s for j in cols])
        zt = math.log(sum(math.exp(val(t[i, j]) / tau_t) for j in cols))
        for j in cols:
            lpt = val(t[i, j]) / tau_t - zt
            total = total + math.exp(lpt) * (lpt - (s[i, j] / tau_s - zs))
    return total / b


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("masked", [False, True])
def test_listwise_distillation_matches_paper(seed, masked):
    s, t = leaves((4, 6), (4, 6), seed=seed)
    mask = random_mask((4, 6), seed, p=0.6) if masked else None
    assert_matches(
        lambda s: R.listwise_distillation(
            s, t.detach(), temperature=0.5, teacher_temperature=2.0, mask=mask
        ),
        lambda s: kl_rows_ref(s, t, 0.5, 2.0, mask),
        [s],
    )


@pytest.mark.parametrize("seed", SEEDS)
def test_listwise_distillation_with_infonce_matches_paper(seed):
    """InfoNCE plus KL to the cross-encoder's list scores (dense retrieval distillation)."""
    q, d = leaves((4, 3), (4, 3), seed=seed)
    g = torch.Generator().manual_seed(seed)
    teacher = torch.randn(4, 4, generator=g, dtype=torch.float64)
    tau, lam = 0.1, 0.7

    def ref(q, d):
        nce = (
            sum(
                lse([cos(q[i], d[j]) / tau for j in range(4)]) - cos(q[i], d[i]) / tau
                for i in range(4)
            )
            / 4
        )
        s = [[cos(q[i], d[j]) / tau for j in range(4)] for i in range(4)]
        total = 0.0
        for i in range(4):
            zs = lse(s[i])
            zt = math.log(sum(math.exp(val(teacher[i, j])) for j in range(4)))
            for j in range(4):
                lpt = val(teacher[i, j]) - zt
                total = total + math.exp(lpt) * (lpt - (s[i][j] - zs))
        return nce + lam * total / 4

    def lib(q, d):
        scores = torch.nn.functional.normalize(q, dim=1) @ torch.nn.functional.normalize(d, dim=1).T
        return info_nce(q, d, temperature=tau) + lam * R.listwise_distillation(
            scores / tau, teacher
        )

    assert_matches(lib, ref, [q, d])


@pytest.mark.parametrize("seed", SEEDS)
def test_frozen_model_distillation_matches_sgva_clip(seed):
    """SgVA-CLIP: vision-specific SupCon + cross-modal InfoNCE + KL from the frozen CLIP's
    image-to-class-text distribution to the adapted one's."""
    adapted, frozen, classes = leaves((6, 4), (6, 4), (3, 4), seed=seed)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    tau = 0.1

    def ref(a, f, c):
        s = [[cos(a[i], c[k]) / tau for k in range(3)] for i in range(6)]
        t = [[val(cos(f[i], c[k])) / tau for k in range(3)] for i in range(6)]
        kd = 0.0
        for i in range(6):
            zs, zt = lse(s[i]), math.log(sum(math.exp(x) for x in t[i]))
            for k in range(3):
                kd = kd + math.exp(t[i][k] - zt) * ((t[i][k] - zt) - (s[i][k] - zs))
        ce = sum(lse(s[i]) - s[i][int(y[i])] for i in range(6)) / 6
        # vision-specific supervised contrastive (SupCon L_out over the adapted features)
        sc = 0.0
        for i in range(6):
            pos = [j for j in range(6) if j != i and y[j] == y[i]]
            den = lse([cos(a[i], a[j]) / tau for j in range(6) if j != i])
            sc = sc + sum(den - cos(a[i], a[j]) / tau for j in pos) / len(pos)
        return sc / 6 + ce + kd / 6

    def lib(a, f, c):
        norm = torch.nn.functional.normalize
        student = norm(a, dim=1) @ norm(c, dim=1).T / tau
        teacher = norm(f, dim=1) @ norm(c, dim=1).T / tau
        return (
            supcon(a, y, temperature=tau)
            + info_nce(a, c, labels=y, key_labels=torch.arange(3), temperature=tau)
            + R.listwise_distillation(student, teacher)
        )

    assert_matches(lib, ref, [adapted, frozen, classes])


# ---------------------------------------------------------------------------- CPRD
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("num_hard", [2, 4])
def test_cprd_matches_paper(seed, num_hard):
    s, t = leaves((4, 7), (4, 7), seed=seed)
    tau = 0.2

    def ref(s):
        total = 0.0
        for i in range(4):
            negs = [j for j in range(7) if j != i]
            hard = sorted(negs, key=lambda j: -val(s[i, j]))[:num_hard]
            ranked = sorted(hard, key=lambda j: -val(t[i, j]))
            row = 0.0
            for r in range(num_hard - 1):
                row = row + lse([s[i, j] / tau for j in ranked[r:]]) - s[i, ranked[r]] / tau
            total = total + row / (num_hard - 1)
        return total / 4

    assert_matches(lambda s: R.cprd(s, t.detach(), num_hard=num_hard, temperature=tau), ref, [s])


def test_cprd_ignores_easy_negatives_order():
    s = torch.tensor([[5.0, 3.0, 2.0, -4.0, -5.0]], dtype=torch.float64)
    pos = torch.tensor([[True, False, False, False, False]])
    t1 = torch.tensor([[9.0, 2.0, 1.0, 0.0, -1.0]], dtype=torch.float64)
    t2 = torch.tensor([[9.0, 2.0, 1.0, -1.0, 0.0]], dtype=torch.float64)  # easy ones swapped
    a = R.cprd(s, t1, num_hard=2, positives=pos, temperature=1.0)
    b = R.cprd(s, t2, num_hard=2, positives=pos, temperature=1.0)
    torch.testing.assert_close(a, b)
    t3 = torch.tensor([[9.0, 1.0, 2.0, 0.0, -1.0]], dtype=torch.float64)  # hard ones swapped
    assert not torch.allclose(a, R.cprd(s, t3, num_hard=2, positives=pos, temperature=1.0))


# ---------------------------------------------------------------------------- DEXML
@pytest.mark.parametrize("seed", SEEDS)
def test_decoupled_softmax_matches_dexml(seed):
    (s,) = leaves((4, 6), seed=seed)
    pos = random_mask((4, 6), seed, p=0.4)

    def ref(s):
        total = 0.0
        for i in range(4):
            ps = [j for j in range(6) if pos[i, j]]
            negs = [s[i, j] for j in range(6) if not pos[i, j]]
            total = total + sum(lse([s[i, p]] + negs) - s[i, p] for p in ps) / len(ps)
        return total / 4

    assert_matches(lambda s: R.decoupled_softmax(s, pos), ref, [s])


def soft_topk_ref(row, k, alpha):
    """Bisection for t with sum_j sigmoid(alpha (x_j + t)) = k, then p and v."""
    xs = [val(x) for x in row]
    lo, hi = -max(xs) - 10 / alpha, -min(xs) + 10 / alpha
    for _ in range(200):
        mid = (lo + hi) / 2
        if sum(1 / (1 + math.exp(-alpha * (x + mid))) for x in xs) < k:
            lo = mid
        else:
            hi = mid
    t = (lo + hi) / 2
    p = [1 / (1 + math.exp(-alpha * (x + t))) for x in xs]
    v = [alpha * pi * (1 - pi) for pi in p]
    return p, v


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("k", [1, 3, None])
def test_soft_topk_loss_matches_dexml(seed, k):
    (s,) = leaves((3, 6), seed=seed)
    pos = random_mask((3, 6), seed, p=0.3)
    alpha = 2.0
    loss = R.soft_topk_loss(s, pos, k=k, alpha=alpha)
    (grad,) = torch.autograd.grad(loss, s)
    want_loss, want_grad = 0.0, torch.zeros(3, 6, dtype=torch.float64)
    for i in range(3):
        ps = [j for j in range(6) if pos[i, j]]
        p, v = soft_topk_ref(s[i], len(ps) if k is None else k, alpha)
        want_loss -= sum(math.log(p[j]) for j in ps) / len(ps) / 3
        # implicit-function gradient: dp_a/dx_b = v_a (delta_ab - v_b / sum v)
        dl_dp = [(-1 / (len(ps) * 3 * p[a]) if a in ps else 0.0) for a in range(6)]
        for b in range(6):
            want_grad[i, b] = sum(
                dl_dp[a] * v[a] * ((1.0 if a == b else 0.0) - v[b] / sum(v)) for a in range(6)
            )
    assert abs(val(loss) - want_loss) < 1e-10
    torch.testing.assert_close(grad, want_grad, atol=1e-10, rtol=0)


def test_soft_topk_sums_to_k_and_gradcheck():
    (s,) = leaves((2, 5), seed=9)
    p = R.soft_topk(s, 2, alpha=3.0)
    torch.testing.assert_close(p.sum(1), torch.full((2,), 2.0, dtype=torch.float64))
    assert torch.autograd.gradcheck(lambda s: R.soft_topk(s, 2, alpha=3.0), (s,))
    # a large alpha approaches the hard top-k indicator
    hard = R.soft_topk(s.detach(), 2, alpha=1e4)
    top = torch.zeros_like(hard).scatter(1, s.detach().topk(2, dim=1).indices, 1.0)
    torch.testing.assert_close(hard, top, atol=1e-6, rtol=0)


# ---------------------------------------------------------------------------- rerankers
@pytest.mark.parametrize("seed", SEEDS)
def test_reranker_objectives_match_paper(seed):
    s, yes, no = leaves((3, 5), (8,), (8,), seed=seed)
    pos = random_mask((3, 5), seed, p=0.3)
    g = torch.Generator().manual_seed(seed)
    labels = (torch.rand(8, generator=g) < 0.5).double()

    def ref_list(s):
        total = 0.0
        for i in range(3):
            z = lse([s[i, j] / 0.5 for j in range(5)])
            ps = [j for j in range(5) if pos[i, j]]
            total = total + sum(z - s[i, j] / 0.5 for j in ps) / len(ps)
        return total / 3

    assert_matches(lambda s: R.listwise_rerank_loss(s, pos, temperature=0.5), ref_list, [s])

    def ref_point(yes, no):
        total = 0.0
        for i in range(8):
            # p(yes) from the softmax over the two tokens
            lp_yes = yes[i] - lse([yes[i], no[i]])
            lp_no = no[i] - lse([yes[i], no[i]])
            total = total - (labels[i] * lp_yes + (1 - labels[i]) * lp_no)
        return total / 8

    assert_matches(lambda y, n: R.pointwise_rerank_loss(y, labels, n), ref_point, [yes, no])


# ---------------------------------------------------------------------------- CoSENT / Pearson
@pytest.mark.parametrize("seed", SEEDS)
def test_cosent_and_pearson_match_codiemb(seed):
    a, b = leaves((7, 3), (7, 3), seed=seed)
    g = torch.Generator().manual_seed(seed)
    gold = torch.randint(0, 4, (7,), generator=g).double()
    lam = 20.0

    def ref_cosent(a, b):
        s = [cos(a[i], b[i]) for i in range(7)]
        terms = [torch.zeros((), dtype=torch.float64)]
        terms += [lam * (s[j] - s[i]) for i in range(7) for j in range(7) if gold[i] > gold[j]]
        return lse(terms)

    def ref_pearson(a, b):
        s = [cos(a[i], b[i]) for i in range(7)]
        ms, my = sum(s) / 7, float(gold.mean())
        cov = sum((si - ms) * (float(yi) - my) for si, yi in zip(s, gold, strict=True))
        vs = sum((si - ms) ** 2 for si in s)
        vy = sum((float(yi) - my) ** 2 for yi in gold)
        return 1 - cov / torch.sqrt(vs * vy)

    def scores(a, b):
        return torch.nn.functional.cosine_similarity(a, b, dim=1)

    assert_matches(lambda a, b: R.cosent_loss(scores(a, b), gold, scale=lam), ref_cosent, [a, b])
    assert_matches(lambda a, b: R.pearson_loss(scores(a, b), gold), ref_pearson, [a, b])


# ---------------------------------------------------------------------------- Trans-Encoder
@pytest.mark.parametrize("seed", SEEDS)
def test_pair_score_distillation_matches_trans_encoder(seed):
    u, v, logits = leaves((5, 3), (5, 3), (5,), seed=seed)
    g = torch.Generator().manual_seed(seed)
    cross = torch.rand(2, 5, generator=g, dtype=torch.float64)  # two cross-encoder teachers

    def ref_bi(u, v):
        total = 0.0
        for i in range(5):
            label = (float(cross[0, i]) + float(cross[1, i])) / 2
            total = total + (cos(u[i], v[i]) - label) ** 2
        return total / 5

    def ref_cross(z, u, v):
        total = 0.0
        for i in range(5):
            label = min(max(val(cos(u[i], v[i])), 0.0), 1.0)
            p = 1 / (1 + torch.exp(-z[i]))
            total = total - (label * torch.log(p) + (1 - label) * torch.log(1 - p))
        return total / 5

    def bi_scores(u, v):
        return torch.nn.functional.cosine_similarity(u, v, dim=1)

    assert_matches(lambda u, v: R.pair_score_distillation(bi_scores(u, v), cross), ref_bi, [u, v])
    assert_matches(
        lambda z, u, v: R.pair_score_distillation(z, bi_scores(u, v).clamp(0, 1), loss="bce"),
        ref_cross,
        [logits, u, v],
    )


# ---------------------------------------------------------------------------- misc
def test_gradcheck_ranking_objectives():
    (s,) = leaves((3, 5), seed=30)
    pos = random_mask((3, 5), 30, p=0.3)
    t = torch.randn(3, 5, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda s: R.decoupled_softmax(s, pos), (s,))
    assert torch.autograd.gradcheck(lambda s: R.listwise_distillation(s, t), (s,))
    assert torch.autograd.gradcheck(lambda s: R.cprd(s, t, num_hard=3), (s,))
    assert torch.autograd.gradcheck(lambda s: R.soft_topk_loss(s, pos, alpha=2.0), (s,))
    assert torch.autograd.gradcheck(lambda s: R.cosent_loss(s[0], t[0]), (s,))


def test_modules_match_functionals():
    (s,) = leaves((4, 6), seed=31)
    t = torch.randn(4, 6, dtype=torch.float64)
    pos = random_mask((4, 6), 31)
    torch.testing.assert_close(
        R.MannWhitneyLoss(2.0)(s, pos), R.mann_whitney_loss(s, pos, scale=2.0)
    )
    torch.testing.assert_close(R.ListwiseDistillation()(s, t), R.listwise_distillation(s, t))
    torch.testing.assert_close(R.CPRDLoss(3)(s, t), R.cprd(s, t, num_hard=3))
    torch.testing.assert_close(R.DecoupledSoftmax()(s, pos), R.decoupled_softmax(s, pos))
    torch.testing.assert_close(R.SoftTopKLoss(k=2)(s, pos), R.soft_topk_loss(s, pos, k=2))
    torch.testing.assert_close(R.ListwiseRerankLoss()(s), R.listwise_rerank_loss(s))
    y = (t[0] > 0).double()
    torch.testing.assert_close(R.PointwiseRerankLoss()(s[0], y), R.pointwise_rerank_loss(s[0], y))
    torch.testing.assert_close(R.CoSENTLoss()(s[0], t[0]), R.cosent_loss(s[0], t[0]))
    torch.testing.assert_close(R.PearsonLoss()(s[0], t[0]), R.pearson_loss(s[0], t[0]))
    torch.testing.assert_close(
        R.PairScoreDistillation()(s[0], t[:2]), R.pair_score_distillation(s[0], t[:2])
    )


def test_half_precision_and_sharp_scales_finite():
    s = (torch.randn(4, 6) * 50).half()
    pos = torch.eye(4, 6, dtype=torch.bool)
    assert torch.isfinite(R.mann_whitney_loss(s, pos, scale=100.0))
    assert torch.isfinite(R.decoupled_softmax(s, pos))
    assert torch.isfinite(R.cprd(s, s.flip(1), num_hard=3, temperature=0.01))
    assert torch.isfinite(R.cosent_loss(s[0], s[1].float(), scale=100.0))
    assert torch.isfinite(R.soft_topk_loss(s.float(), pos, alpha=100.0))


def test_bad_inputs_raise():
    s = torch.randn(3, 4)
    with pytest.raises(TypeError, match="positives"):
        R.decoupled_softmax(s, torch.ones(3, 4))
    with pytest.raises(ValueError, match="num_hard"):
        R.cprd(s, s, num_hard=10)
    with pytest.raises(ValueError, match="teacher_scores"):
        R.listwise_distillation(s, torch.randn(3, 5))
    with pytest.raises(ValueError, match="k must"):
        R.soft_topk(s, 4)
    with pytest.raises(ValueError, match="labels"):
        R.pointwise_rerank_loss(torch.randn(3), torch.tensor([0.0, 2.0, 1.0]))
    with pytest.raises(ValueError, match="bce"):
        R.pair_score_distillation(torch.randn(3), torch.tensor([-0.5, 0.2, 0.3]), loss="bce")
    with pytest.raises(ValueError, match="loss"):
        R.pair_score_distillation(torch.randn(3), torch.rand(3), loss="l1")
    with pytest.raises(ValueError, match="targets"):
        R.cosent_loss(torch.randn(3), torch.randn(4))
    with pytest.raises(TypeError, match="scores"):
        R.mann_whitney_loss(torch.ones(3, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="positive"):
        R.listwise_rerank_loss(s, torch.zeros(3, 4, dtype=torch.bool))
