"""SOFT objectives against loop-level float64 references written from the papers' equations."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from contrastkit.functional import info_nce
from contrastkit.objectives import soft as S

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


def soft_ce_row(logits, weights):
    """-sum_j w_j log softmax(logits)_j / sum_j w_j."""
    z = lse(logits)
    return -sum(w * (l - z) for w, l in zip(weights, logits, strict=True)) / sum(weights)


# ---------------------------------------------------------------------------- CWCL
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("symmetric", [True, False])
def test_cwcl_matches_paper(seed, symmetric):
    q, k, f = leaves((5, 4), (5, 4), (5, 6), seed=seed)
    tau = 0.1

    def ref(q, k, f):
        w = [[(val(cos(f[i], f[j])) + 1) / 2 for j in range(5)] for i in range(5)]
        u2v = sum(soft_ce_row([cos(q[i], k[j]) / tau for j in range(5)], w[i]) for i in range(5))
        v2u = sum(soft_ce_row([cos(k[j], q[i]) / tau for i in range(5)], w[j]) for j in range(5))
        return (u2v + v2u) / 10 if symmetric else u2v / 5

    assert_matches(
        lambda q, k, f: S.cwcl(q, k, frozen=f, temperature=tau, symmetric=symmetric), ref, [q, k, f]
    )


def test_cwcl_defaults_to_key_as_frozen_side():
    q, k = leaves((5, 4), (5, 4), seed=3)
    torch.testing.assert_close(S.cwcl(q, k), S.cwcl(q, k, frozen=k.detach()))


# ---------------------------------------------------------------------------- ALBEF
def albef_ref(i, t, im, tm, iq, tq, alpha, tau):
    b = i.shape[0]

    def direction(a, am, keys_m, queue):
        keys = [keys_m[j] for j in range(b)] + ([] if queue is None else list(queue))
        total = 0.0
        for r in range(b):
            sim_m = [val(cos(am[r], kk)) / tau for kk in keys]
            z = math.log(sum(math.exp(x) for x in sim_m))
            y = [alpha * math.exp(x - z) + (1 - alpha) * (1.0 if j == r else 0.0) for j, x in
                 enumerate(sim_m)]  # fmt: skip
            total = total + soft_ce_row([cos(a[r], kk.detach()) / tau for kk in keys], y)
        return total / b

    return (direction(i, im, tm, tq) + direction(t, tm, im, iq)) / 2


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("queue", [False, True])
def test_momentum_distillation_matches_albef(seed, queue):
    i, t, im, tm, iq, tq = leaves((4, 3), (4, 3), (4, 3), (4, 3), (5, 3), (5, 3), seed=seed)

    def lib(i, t, im, tm, iq, tq):
        return S.momentum_distillation_itc(
            i, t, im, tm, image_queue=iq if queue else None, text_queue=tq if queue else None,
            alpha=0.4, temperature=0.2,
        )  # fmt: skip

    def ref(i, t, im, tm, iq, tq):
        return albef_ref(i, t, im, tm, iq if queue else None, tq if queue else None, 0.4, 0.2)

    assert_matches(lib, ref, [i, t, im, tm, iq, tq])


def test_momentum_distillation_alpha_zero_is_itc():
    i, t = leaves((4, 3), (4, 3), seed=4)
    got = S.momentum_distillation_itc(i, t, i.detach(), t.detach(), alpha=0.0, temperature=0.2)
    want = (info_nce(i, t.detach(), temperature=0.2) + info_nce(t, i.detach(), temperature=0.2)) / 2
    torch.testing.assert_close(got, want)
    module = S.MomentumDistillationITC(alpha=0.4, temperature=0.2)
    module.double()
    loss = module(i, t, i.detach(), t.detach())
    loss.backward()
    assert module.temp.grad is not None


# ---------------------------------------------------------------------------- 1-to-K
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("symmetric", [True, False])
def test_one_to_k_matches_paper(seed, symmetric):
    v, t = leaves((4, 3), (4, 3, 3), seed=seed)
    tau, b, kk = 0.3, 4, 3

    def ref(v, t):
        flat = [t[j, m] for j in range(b) for m in range(kk)]
        i2t = 0.0
        for i in range(b):
            den = lse([cos(v[i], x) / tau for x in flat])
            i2t = i2t + sum(den - cos(v[i], t[i, m]) / tau for m in range(kk)) / kk
        i2t = i2t / b
        if not symmetric:
            return i2t
        t2i = 0.0
        for j in range(b):
            for m in range(kk):
                t2i = (
                    t2i
                    + lse([cos(t[j, m], v[i]) / tau for i in range(b)])
                    - cos(t[j, m], v[j]) / tau
                )
        return (i2t + t2i / (b * kk)) / 2

    assert_matches(
        lambda v, t: S.one_to_k_info_nce(v, t, temperature=tau, symmetric=symmetric), ref, [v, t]
    )


# ---------------------------------------------------------------------------- graph positives
def infonce_weighted_ref(q, k, w, tau, exclude_self=False):
    """Mean over rows with a positive of -sum_j w_ij log p_ij / sum_j w_ij."""
    rows = []
    for i in range(q.shape[0]):
        cols = [j for j in range(k.shape[0]) if not (exclude_self and j == i)]
        weights = [w[i][j] for j in cols]
        if sum(weights) == 0:
            continue
        rows.append(soft_ce_row([cos(q[i], k[j]) / tau for j in cols], weights))
    return sum(rows) / len(rows)


@pytest.mark.parametrize("seed", SEEDS)
def test_graph_positives_match_slip(seed):
    """SLIP: co-purchase neighbours are extra positives of the paired caption."""
    img, txt = leaves((6, 4), (6, 4), seed=seed)
    g = torch.Generator().manual_seed(seed)
    adj = torch.rand(6, 6, generator=g) > 0.7
    adj = (adj | adj.T) & ~torch.eye(6, dtype=torch.bool)
    w = [[1.0 if (i == j or adj[i, j]) else 0.0 for j in range(6)] for i in range(6)]
    assert_matches(
        lambda a, b: S.graph_info_nce(a, b, adjacency=adj, temperature=0.2),
        lambda a, b: infonce_weighted_ref(a, b, w, 0.2),
        [img, txt],
    )


@pytest.mark.parametrize("seed", SEEDS)
def test_graph_soft_positives_match_supervised_graph_contrastive(seed):
    """Supervised graph contrastive pretraining: graph-derived soft positive weights."""
    (x,) = leaves((6, 4), seed=seed)
    g = torch.Generator().manual_seed(seed)
    a = torch.rand(6, 6, generator=g, dtype=torch.float64)
    a = (a + a.T) / 2
    assert_matches(
        lambda x: S.graph_info_nce(x, adjacency=a, temperature=0.3),
        lambda x: infonce_weighted_ref(x, x, a.tolist(), 0.3, exclude_self=True),
        [x],
    )


@pytest.mark.parametrize("seed", SEEDS)
def test_relation_positives_match_rcml(seed):
    """RCML: relation-linked samples are positives in inter- and intra-modal losses."""
    img, txt = leaves((6, 4), (6, 4), seed=seed)
    rel = torch.zeros(6, 6, dtype=torch.bool)
    for i, j in ((0, 1), (1, 2), (3, 4), (5, 0)):
        rel[i, j] = rel[j, i] = True
    lam, tau = 0.5, 0.25
    inter_w = [[1.0 if (i == j or rel[i, j]) else 0.0 for j in range(6)] for i in range(6)]
    intra_w = [[1.0 if rel[i, j] else 0.0 for j in range(6)] for i in range(6)]

    def ref(a, b):
        inter = (
            infonce_weighted_ref(a, b, inter_w, tau) + infonce_weighted_ref(b, a, inter_w, tau)
        ) / 2
        intra = infonce_weighted_ref(a, a, intra_w, tau, True) + infonce_weighted_ref(
            b, b, intra_w, tau, True
        )
        return inter + lam * intra / 2

    assert_matches(
        lambda a, b: S.graph_info_nce(
            a, b, adjacency=rel, intra_weight=lam, temperature=tau, symmetric=True
        ),
        ref,
        [img, txt],
    )


# ---------------------------------------------------------------------------- bags (SECLA)
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("mode", ["max", "sum"])
def test_bag_positives_match_secla(seed, mode):
    faces, names = leaves((6, 3), (5, 3), seed=seed)
    fb = torch.tensor([0, 0, 1, 2, 2, 3])
    nb = torch.tensor([0, 1, 1, 2, 3])
    tau = 0.3

    def direction(a, c, ab, cb):
        rows = []
        for i in range(a.shape[0]):
            bag = [j for j in range(c.shape[0]) if cb[j] == ab[i]]
            if not bag:
                continue
            logits = [cos(a[i], c[j]) / tau for j in range(c.shape[0])]
            others = [logits[j] for j in range(c.shape[0]) if j not in bag]
            if mode == "max":
                best = max(bag, key=lambda j: val(logits[j]))
                rows.append(lse([logits[best]] + others) - logits[best])
            else:
                rows.append(lse(logits) - lse([logits[j] for j in bag]) + math.log(len(bag)))
        return sum(rows) / len(rows)

    def ref(a, c):
        return (direction(a, c, fb, nb) + direction(c, a, nb, fb)) / 2

    assert_matches(
        lambda a, c: S.bag_info_nce(a, c, query_bags=fb, key_bags=nb, mode=mode, temperature=tau),
        ref,
        [faces, names],
    )


# ---------------------------------------------------------------------------- soft targets
@pytest.mark.parametrize("seed", SEEDS)
def test_soft_targets_match_alpro_entity_pseudo_labels(seed):
    """ALPRO's PEM: cross-entropy to pseudo-labels = softmax of prompt similarities."""
    logits, crops, prompts = leaves((4, 5), (4, 3), (5, 3), seed=seed)
    tau = 0.1

    def pseudo(crops, prompts):
        with torch.no_grad():
            c = torch.nn.functional.normalize(crops, dim=1)
            p = torch.nn.functional.normalize(prompts, dim=1)
            return torch.softmax(c @ p.T / tau, dim=1)

    def ref(lg, crops, prompts):
        total = 0.0
        for i in range(4):
            sims = [val(cos(crops[i], prompts[j])) / tau for j in range(5)]
            z = math.log(sum(math.exp(s) for s in sims))
            y = [math.exp(s - z) for s in sims]
            total = total + soft_ce_row(list(lg[i]), y)
        return total / 4

    assert_matches(
        lambda lg, c, p: S.soft_cross_entropy(lg, pseudo(c, p)), ref, [logits, crops, prompts]
    )


@pytest.mark.parametrize("seed", SEEDS)
def test_mixed_soft_targets_match_timix(seed):
    """TiMix: a mixed image x~ = lam x_i + (1-lam) x_pi(i) has targets lam on text i and
    (1 - lam) on text pi(i)."""
    img, txt = leaves((5, 4), (5, 4), seed=seed)
    perm = torch.tensor([2, 0, 4, 1, 3])
    lam = 0.7
    targets = (
        lam * torch.eye(5, dtype=torch.float64)
        + (1 - lam) * torch.eye(5, dtype=torch.float64)[perm]
    )

    def ref(img, txt):
        mixed = [lam * img[i] + (1 - lam) * img[int(perm[i])] for i in range(5)]
        rows = []
        for i in range(5):
            w = [lam * (j == i) + (1 - lam) * (j == int(perm[i])) for j in range(5)]
            rows.append(soft_ce_row([cos(mixed[i], txt[j]) / 0.1 for j in range(5)], w))
        return sum(rows) / 5

    def lib(img, txt):
        mixed = lam * img + (1 - lam) * img[perm]
        return info_nce(mixed, txt, positives=targets, temperature=0.1)

    assert_matches(lib, ref, [img, txt])


@pytest.mark.parametrize("seed", SEEDS)
def test_self_distillation_matches_cosmos(seed):
    s, t, c = leaves((4, 6), (4, 6), (6,), seed=seed)
    ts, tt = 0.1, 0.04

    def ref(s, t, c):
        total = 0.0
        for i in range(4):
            z = [(val(t[i, j]) - val(c[j])) / tt for j in range(6)]
            m = max(z)
            e = [math.exp(x - m) for x in z]
            y = [x / sum(e) for x in e]
            total = total + soft_ce_row([s[i, j] / ts for j in range(6)], y)
        return total / 4

    assert_matches(
        lambda s, t, c: S.self_distillation_loss(
            s, t, student_temperature=ts, teacher_temperature=tt, center=c
        ),
        ref,
        [s, t, c],
    )


def test_self_distillation_module_updates_center():
    module = S.SelfDistillationLoss(num_outputs=6, center_momentum=0.5)
    t = torch.randn(4, 6)
    module(torch.randn(4, 6), t)
    torch.testing.assert_close(module.center, 0.5 * t.mean(0))
    assert "center" in module.state_dict()


@pytest.mark.parametrize("seed", SEEDS)
def test_contrastive_plus_cosine_distillation_matches_dclip(seed):
    img, txt, teacher = leaves((5, 4), (5, 4), (5, 4), seed=seed)

    def ref(img, txt, teacher):
        nce = 0.0
        for i in range(5):
            nce = (
                nce
                + lse([cos(img[i], txt[j]) / 0.07 for j in range(5)])
                - cos(img[i], txt[i]) / 0.07
            )
        distill = sum(1 - cos(img[i], teacher[i].detach()) for i in range(5)) / 5
        return nce / 5 + 0.5 * distill

    assert_matches(
        lambda i, t, te: info_nce(i, t) + 0.5 * S.cosine_distillation_loss(i, te),
        ref,
        [img, txt, teacher],
    )


# ---------------------------------------------------------------------------- best alignment
def monotone_alignments(ty, tx):
    """Every non-decreasing a: [0, ty) -> [0, tx)."""
    return list(itertools.combinations_with_replacement(range(tx), ty))


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("distance", ["mse", "cosine"])
def test_best_alignment_matches_exhaustive_search(seed, distance):
    speech, text = leaves((2, 5, 3), (2, 3, 3), seed=seed)
    lx, ly = torch.tensor([5, 4]), torch.tensor([3, 2])

    def d(a, b):
        if distance == "mse":
            return sum((x - y) ** 2 for x, y in zip(a, b, strict=True)) / 3
        return 1 - cos(a, b)

    def ref(speech, text):
        total = 0.0
        for b in range(2):
            costs = [
                sum(d(text[b, t], speech[b, a[t]]) for t in range(int(ly[b]))) / int(ly[b])
                for a in monotone_alignments(int(ly[b]), int(lx[b]))
            ]
            total = total + min(costs, key=val)
        return total / 2

    assert_matches(
        lambda s, t: S.best_alignment_consistency(
            s, t, speech_lengths=lx, text_lengths=ly, distance=distance
        ),
        ref,
        [speech, text],
    )


def test_best_alignment_is_zero_for_an_upsampled_copy():
    text = torch.randn(2, 4, 3)
    speech = text.repeat_interleave(3, dim=1)  # each token held for 3 frames
    assert float(S.best_alignment_consistency(speech, text)) < 1e-12


# ---------------------------------------------------------------------------- misc
def test_gradcheck_soft_objectives():
    q, k = leaves((4, 3), (4, 3), seed=21)
    frozen = torch.randn(4, 5, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda q, k: S.cwcl(q, k, frozen=frozen), (q, k))
    adj = torch.eye(4, dtype=torch.bool).roll(1, 0)
    assert torch.autograd.gradcheck(
        lambda q, k: S.graph_info_nce(q, k, adjacency=adj, intra_weight=0.5), (q, k)
    )
    (t,) = leaves((4, 2, 3), seed=22)
    assert torch.autograd.gradcheck(lambda q, t: S.one_to_k_info_nce(q, t), (q, t))
    s, x = leaves((2, 4, 3), (2, 2, 3), seed=23)
    assert torch.autograd.gradcheck(lambda s, x: S.best_alignment_consistency(s, x), (s, x))


def test_modules_match_functionals():
    q, k = leaves((6, 4), (6, 4), seed=30)
    torch.testing.assert_close(S.CWCL()(q, k), S.cwcl(q, k))
    learned = S.CWCL(0.2, learnable_temperature=True).double()
    loss = learned(q, k)
    torch.testing.assert_close(loss, S.cwcl(q, k, temperature=0.2))
    loss.backward()  # the gradient of the parameter log(1/tau), by central differences
    p, h = math.log(1 / 0.2), 1e-6
    fd = S.cwcl(q, k, temperature=math.exp(-p - h)) - S.cwcl(q, k, temperature=math.exp(-p + h))
    torch.testing.assert_close(
        learned.logit_scale.logit_scale.grad, fd.detach() / (2 * h), rtol=1e-6, atol=1e-9
    )
    adj = torch.eye(6, dtype=torch.bool).roll(1, 0)
    torch.testing.assert_close(
        S.GraphInfoNCE(intra_weight=0.3)(q, k, adj),
        S.graph_info_nce(q, k, adjacency=adj, intra_weight=0.3),
    )
    bags = torch.tensor([0, 0, 1, 1, 2, 2])
    torch.testing.assert_close(
        S.BagInfoNCE()(q, k, bags, bags), S.bag_info_nce(q, k, query_bags=bags, key_bags=bags)
    )
    (t,) = leaves((6, 2, 4), seed=31)
    torch.testing.assert_close(S.OneToKInfoNCE()(q, t), S.one_to_k_info_nce(q, t))
    torch.testing.assert_close(S.CosineDistillationLoss()(q, k), S.cosine_distillation_loss(q, k))
    torch.testing.assert_close(
        S.SoftCrossEntropy()(q, k.softmax(1)), S.soft_cross_entropy(q, k.softmax(1))
    )
    s3, t3 = torch.randn(2, 5, 4), torch.randn(2, 2, 4)
    torch.testing.assert_close(
        S.BestAlignmentConsistency()(s3, t3), S.best_alignment_consistency(s3, t3)
    )


def test_half_precision_and_low_temperature_finite():
    q, k = torch.randn(8, 16), torch.randn(8, 16)
    assert torch.isfinite(S.cwcl(q.bfloat16(), k.bfloat16(), temperature=0.01))
    bags = torch.arange(4).repeat_interleave(2)
    assert torch.isfinite(S.bag_info_nce(q.half(), k.half(), query_bags=bags, key_bags=bags))
    assert torch.isfinite(S.momentum_distillation_itc(q, k, q, k, temperature=0.01))


def test_bad_inputs_raise():
    q, k = torch.randn(4, 3), torch.randn(4, 3)
    with pytest.raises(ValueError, match="frozen"):
        S.cwcl(q, k, frozen=torch.randn(5, 3))
    with pytest.raises(ValueError, match="alpha"):
        S.momentum_distillation_itc(q, k, q, k, alpha=1.5)
    with pytest.raises(ValueError, match="keys"):
        S.one_to_k_info_nce(q, torch.randn(3, 2, 3))
    with pytest.raises(ValueError, match="adjacency"):
        S.graph_info_nce(q, k, adjacency=torch.ones(3, 3, dtype=torch.bool))
    with pytest.raises(TypeError, match="adjacency"):
        S.graph_info_nce(q, k, adjacency=torch.ones(4, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="mode"):
        S.bag_info_nce(
            q, k, query_bags=torch.zeros(4).long(), key_bags=torch.zeros(4).long(), mode="avg"
        )
    with pytest.raises(ValueError, match="query_bags"):
        S.bag_info_nce(q, k, query_bags=torch.zeros(3).long(), key_bags=torch.zeros(4).long())
    with pytest.raises(ValueError, match="targets"):
        S.soft_cross_entropy(q, -torch.ones(4, 3))
    with pytest.raises(ValueError, match="text_lengths"):
        S.best_alignment_consistency(
            torch.randn(1, 4, 3), torch.randn(1, 2, 3), text_lengths=torch.tensor([3])
        )
    with pytest.raises(ValueError, match="teacher_logits"):
        S.self_distillation_loss(q, torch.randn(4, 5))


def test_cwcl_learnable_temperature_gradient_matches_reference():
    q, k, f = leaves((4, 3), (4, 3), (4, 5), seed=41)
    tau = torch.tensor(0.2, dtype=torch.float64, requires_grad=True)

    def ref(q, k, t):
        w = [[(val(cos(f[i], f[j])) + 1) / 2 for j in range(4)] for i in range(4)]
        u2v = sum(soft_ce_row([cos(q[i], k[j]) / t for j in range(4)], w[i]) for i in range(4))
        v2u = sum(soft_ce_row([cos(k[j], q[i]) / t for i in range(4)], w[j]) for j in range(4))
        return (u2v + v2u) / 8

    assert_matches(lambda q, k, t: S.cwcl(q, k, frozen=f, temperature=t), ref, [q, k, tau])


def test_one_to_k_relation_to_reference_code():
    """CCRK's code: i2t targets are K unnormalised ones (a sum over the K positives), t2i is plain
    CE over images, and the symmetric loss is divided by K: L_i2t/2 + L_t2i/(2K) in the paper's
    (mean over K) terms -- not the symmetric loss times a constant."""
    v, t = leaves((3, 4), (3, 2, 4), seed=7)
    b, kk, tau = 3, 2, 0.2
    flat = [t[j, m] for j in range(b) for m in range(kk)]
    i2t_sum = (
        sum(
            lse([cos(v[i], x) / tau for x in flat]) - cos(v[i], t[i, m]) / tau
            for i in range(b)
            for m in range(kk)
        )
        / b
    )
    t2i = sum(
        lse([cos(t[j, m], v[i]) / tau for i in range(b)]) - cos(t[j, m], v[j]) / tau
        for j in range(b)
        for m in range(kk)
    ) / (b * kk)
    reference_code = (i2t_sum + t2i) / 2 / kk
    i2t = S.one_to_k_info_nce(v, t, temperature=tau, symmetric=False)
    sym = S.one_to_k_info_nce(v, t, temperature=tau)
    lib_t2i = 2 * sym - i2t
    torch.testing.assert_close(reference_code, i2t / 2 + lib_t2i / (2 * kk))


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("symmetric", [True, False])
def test_bag_pair_scores_match_secla_code(seed, symmetric):
    """SECLA's batch_softmax: caption b vs image b' scores the mean over the caption's names of
    the best dot product with the image's faces; cross-entropy over the batch, directions summed."""
    names, faces = leaves((5, 3), (6, 3), seed=seed)
    nb = torch.tensor([0, 0, 1, 2, 2])
    fb = torch.tensor([1, 0, 1, 2, 2, 2])
    tau = 0.5

    def ref(n, f):
        def dot(a, b):
            return sum(x * y for x, y in zip(a, b, strict=True))

        score = [[None] * 3 for _ in range(3)]
        for b in range(3):
            for c in range(3):
                best = [
                    max((dot(n[i], f[j]) for j in range(6) if fb[j] == c), key=val)
                    for i in range(5)
                    if nb[i] == b
                ]
                score[b][c] = sum(best) / len(best)
        rows = sum(
            -(score[b][b] / tau - lse([score[b][c] / tau for c in range(3)])) for b in range(3)
        )
        loss = rows / 3
        if symmetric:
            cols = sum(
                -(score[c][c] / tau - lse([score[b][c] / tau for b in range(3)])) for c in range(3)
            )
            loss = loss + cols / 3
        return loss

    def lib(n, f):
        return S.bag_pair_info_nce(
            n, f, query_bags=nb, key_bags=fb, temperature=tau, symmetric=symmetric
        )

    assert_matches(lib, ref, [names, faces])


def test_bag_pair_bad_bags():
    n, f = torch.randn(3, 4), torch.randn(3, 4)
    with pytest.raises(ValueError, match="key_bags must hold every bag id 0..1"):
        S.bag_pair_info_nce(
            n, f, query_bags=torch.tensor([0, 1, 1]), key_bags=torch.tensor([0, 0, 0])
        )
    with pytest.raises(ValueError, match="query_bags must be an integer tensor of shape"):
        S.bag_pair_info_nce(
            n, f, query_bags=torch.tensor([0.0, 1, 1]), key_bags=torch.tensor([0, 1, 1])
        )
