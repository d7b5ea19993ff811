"""MARGIN objectives against loop-level float64 references written from the papers' equations.

Every reference below uses Python loops over rows/pairs and scalar tensor ops only (no library
code); gradients of the references come from autograd through those scalar ops.
"""

from __future__ import annotations

import math

import pytest
import torch

from contrastkit.objectives import margin as M

SEEDS = (0, 1, 2)
SHAPES = ((4, 5), (6, 3), (7, 8))


# ---------------------------------------------------------------------------- helpers
def val(v):
    return float(v.detach()) if isinstance(v, torch.Tensor) else float(v)


def cos(a, b):
    na = torch.sqrt(sum(x * x for x in a))
    nb = torch.sqrt(sum(x * x for x in b))
    return sum(x * y for x, y in zip(a, b, strict=True)) / (na * nb)


def dist(a, b, kind):
    sq = sum((x - y) ** 2 for x, y in zip(a, b, strict=True))
    if kind == "sq_euclidean":
        return sq
    if kind == "euclidean":
        return torch.sqrt(sq)
    return 1.0 - cos(a, b)


def lse(values):
    m = max(val(v) for v in values)
    return m + torch.log(sum(torch.exp(v - m) for v in values))


def leaves(*shapes, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(*s, generator=g, dtype=torch.float64).requires_grad_() for s in shapes]


def assert_matches(lib_fn, ref_fn, inputs, atol=1e-10):
    """Loss values and gradients of every input agree."""
    lib_in = [x.detach().clone().requires_grad_() for x in inputs]
    ref_in = [x.detach().clone().requires_grad_() for x in inputs]
    lib = lib_fn(*lib_in)
    ref = ref_fn(*ref_in)
    assert lib.dtype == torch.float64
    torch.testing.assert_close(lib, ref.reshape(lib.shape), atol=atol, rtol=0)
    g_lib = torch.autograd.grad(lib, lib_in, allow_unused=True)
    g_ref = torch.autograd.grad(ref, ref_in, allow_unused=True)
    for a, b in zip(g_lib, g_ref, strict=True):
        a = torch.zeros_like(lib_in[0]) if a is None else a
        b = torch.zeros_like(a) if b is None else b
        torch.testing.assert_close(a, b, atol=atol, rtol=0)


def labels_for(n, seed, classes=3):
    g = torch.Generator().manual_seed(100 + seed)
    return torch.randint(0, classes, (n,), generator=g)


# ---------------------------------------------------------------------------- NT-Xent-AM
def ntxent_am_ref(z1, z2, tau, m, symmetric):
    n = z1.shape[0]
    if not symmetric:
        total = 0.0
        for i in range(n):
            pos = (cos(z1[i], z2[i]) - m) / tau
            den = [pos] + [cos(z1[i], z2[j]) / tau for j in range(n) if j != i]
            total = total + lse(den) - pos
        return total / n
    z = torch.cat([z1, z2])
    total = 0.0
    for a in range(2 * n):
        p = (a + n) % (2 * n)
        pos = (cos(z[a], z[p]) - m) / tau
        den = [pos] + [cos(z[a], z[b]) / tau for b in range(2 * n) if b not in (a, p)]
        total = total + lse(den) - pos
    return total / (2 * n)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("symmetric", [True, False])
def test_nt_xent_am_matches_paper(seed, shape, symmetric):
    z1, z2 = leaves(shape, shape, seed=seed)
    assert_matches(
        lambda a, b: M.nt_xent_am(a, b, temperature=0.2, margin=0.15, symmetric=symmetric),
        lambda a, b: ntxent_am_ref(a, b, 0.2, 0.15, symmetric),
        [z1, z2],
    )


def test_nt_xent_am_margin_raises_loss_and_low_temperature_is_finite():
    z1, z2 = leaves((8, 4), (8, 4), seed=3)
    base = M.nt_xent_am(z1, z2, margin=0.0)
    assert M.nt_xent_am(z1, z2, margin=0.2) > base
    z1f, z2f = z1.detach().float(), z2.detach().float()
    assert torch.isfinite(M.nt_xent_am(z1f, z2f, temperature=0.01, margin=0.3))
    assert torch.isfinite(M.nt_xent_am(z1f.bfloat16(), z2f.bfloat16(), temperature=0.01))


def test_nt_xent_am_gradcheck():
    z1, z2 = leaves((3, 4), (3, 4), seed=4)
    assert torch.autograd.gradcheck(lambda a, b: M.nt_xent_am(a, b, margin=0.1), (z1, z2))


# ---------------------------------------------------------------------------- circle loss
def circle_ref(scores_fn, b, n, pos_fn, m, gamma):
    losses = []
    for i in range(b):
        lp, ln = [], []
        for j in range(n):
            s = scores_fn(i, j)
            if s is None:
                continue
            if pos_fn(i, j):
                ap = max(0.0, 1 + m - val(s))
                lp.append(-gamma * ap * (s - (1 - m)))
            else:
                an = max(0.0, val(s) + m)
                ln.append(gamma * an * (s - m))
        if lp and ln:
            x = lse(lp) + lse(ln)
            losses.append(
                torch.log1p(torch.exp(x)) if val(x) < 30 else x + torch.log1p(torch.exp(-x))
            )
    return sum(losses) / len(losses)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("gamma", [4.0, 64.0])
def test_circle_loss_matches_paper(seed, gamma):
    (x,) = leaves((7, 5), seed=seed)
    y = labels_for(7, seed)

    def ref(x):
        def score(i, j):
            return None if i == j else cos(x[i], x[j])

        return circle_ref(score, 7, 7, lambda i, j: bool(y[i] == y[j]), 0.25, gamma)

    assert_matches(lambda x: M.circle_loss(x, labels=y, gamma=gamma), ref, [x])


@pytest.mark.parametrize("seed", SEEDS)
def test_circle_loss_listwise_scores_matches_paper(seed):
    """ListConRanker: circle loss over a query's list of passage scores."""
    (raw,) = leaves((5, 6), seed=seed)
    pos = torch.zeros(5, 6, dtype=torch.bool)
    pos[:, 0] = True
    pos[1, 3] = True

    def lib(r):
        return M.circle_loss_scores(torch.tanh(r), pos, margin=0.2, gamma=32.0)

    def ref(r):
        s = torch.tanh(r)
        return circle_ref(lambda i, j: s[i, j], 5, 6, lambda i, j: bool(pos[i, j]), 0.2, 32.0)

    assert_matches(lib, ref, [raw])


def test_circle_loss_cross_modal_and_large_gamma_finite():
    q, k = leaves((6, 4), (6, 4), seed=5)

    def ref(q, k):
        return circle_ref(lambda i, j: cos(q[i], k[j]), 6, 6, lambda i, j: i == j, 0.25, 16.0)

    assert_matches(lambda q, k: M.circle_loss(q, k, gamma=16.0), ref, [q, k])
    big = M.circle_loss(q.detach().float(), k.detach().float(), gamma=1024.0)
    assert torch.isfinite(big)


# ---------------------------------------------------------------------------- PromCSE
def energy_hinge_ref(q, k, h, m, shared):
    b = q.shape[0]
    total = 0.0
    for i in range(b):
        negs = [cos(q[i], k[j]) for j in range(k.shape[0]) if j != i]
        if h is not None:
            negs += [cos(q[i], n) for n in (h if shared else h[i])]
        hardest = max(negs, key=val)
        total = total + torch.clamp(m - cos(q[i], k[i]) + hardest, min=0.0)
    return total / b


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("kind", ["none", "shared", "per_query"])
def test_energy_hinge_matches_paper(seed, kind):
    q, k, hs, hp = leaves((5, 4), (5, 4), (5, 4), (5, 2, 4), seed=seed)
    h = {"none": None, "shared": hs, "per_query": hp}[kind]
    inputs = [q, k] + ([] if h is None else [h])
    assert_matches(
        lambda *t: M.energy_hinge_loss(t[0], t[1], t[2] if len(t) > 2 else None, margin=0.5),
        lambda *t: energy_hinge_ref(
            t[0], t[1], t[2] if len(t) > 2 else None, 0.5, shared=kind == "shared"
        ),
        inputs,
    )


@pytest.mark.parametrize("seed", SEEDS)
def test_promcse_matches_paper(seed):
    q, k, h = leaves((5, 4), (5, 4), (5, 4), seed=seed)
    tau, m, lam = 0.05, 0.2, 10.0

    def ref(q, k, h):
        nce = 0.0
        for i in range(5):
            den = [cos(q[i], k[j]) / tau for j in range(5)] + [cos(q[i], n) / tau for n in h]
            nce = nce + lse(den) - cos(q[i], k[i]) / tau
        return nce / 5 + lam * energy_hinge_ref(q, k, h, m, shared=True)

    assert_matches(lambda q, k, h: M.promcse(q, k, h), ref, [q, k, h])
    module = M.PromCSELoss()
    torch.testing.assert_close(module(q, k, h), M.promcse(q, k, h))


# ---------------------------------------------------------------------------- triplet
def triplet_ref(x, y, m, mining, kind):
    n = x.shape[0]
    d = [[dist(x[i], x[j], kind) for j in range(n)] for i in range(n)]
    terms = []
    for a in range(n):
        pos = [p for p in range(n) if p != a and y[p] == y[a]]
        neg = [q for q in range(n) if y[q] != y[a]]
        if not pos or not neg:
            continue
        if mining == "batch_hard":
            dap = max((d[a][p] for p in pos), key=val)
            dan = min((d[a][q] for q in neg), key=val)
            terms.append(torch.clamp(m + dap - dan, min=0.0))
        elif mining == "semi_hard":
            for p in pos:
                outside = [d[a][q] for q in neg if val(d[a][q]) > val(d[a][p])]
                chosen = min(outside, key=val) if outside else max((d[a][q] for q in neg), key=val)
                terms.append(torch.clamp(m + d[a][p] - chosen, min=0.0))
        else:
            for p in pos:
                for q in neg:
                    terms.append(torch.clamp(m + d[a][p] - d[a][q], min=0.0))
    return sum(terms) / len(terms)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("mining", ["batch_hard", "semi_hard", "all"])
@pytest.mark.parametrize("kind", ["euclidean", "sq_euclidean", "cosine"])
def test_triplet_matches_paper(seed, mining, kind):
    (x,) = leaves((8, 3), seed=seed)
    y = labels_for(8, seed)
    assert_matches(
        lambda x: M.triplet_loss(x, labels=y, margin=0.5, mining=mining, distance=kind),
        lambda x: triplet_ref(x, y, 0.5, mining, kind),
        [x],
    )


def test_triplet_cross_modal_batch_hard():
    q, k = leaves((5, 3), (6, 3), seed=7)
    yq, yk = torch.tensor([0, 1, 2, 0, 1]), torch.tensor([0, 1, 2, 2, 1, 0])

    def ref(q, k):
        terms = []
        for a in range(5):
            pos = [dist(q[a], k[j], "euclidean") for j in range(6) if yk[j] == yq[a]]
            neg = [dist(q[a], k[j], "euclidean") for j in range(6) if yk[j] != yq[a]]
            terms.append(torch.clamp(0.3 + max(pos, key=val) - min(neg, key=val), min=0.0))
        return sum(terms) / len(terms)

    assert_matches(
        lambda q, k: M.triplet_loss(q, k, labels=yq, key_labels=yk, margin=0.3), ref, [q, k]
    )


# ---------------------------------------------------------------------------- quadruplet
def quadruplet_ref(x, y, m1, m2, kind):
    n = x.shape[0]
    d = [[dist(x[i], x[j], kind) for j in range(n)] for i in range(n)]
    terms = []
    for a in range(n):
        pos = [d[a][p] for p in range(n) if p != a and y[p] == y[a]]
        neg = [d[a][q] for q in range(n) if y[q] != y[a]]
        pairs = [
            d[l][k]
            for l in range(n)
            for k in range(n)
            if l != k and y[l] != y[k] and y[l] != y[a] and y[k] != y[a]
        ]
        if not pos or not neg or not pairs:
            continue
        dap = max(pos, key=val)
        t1 = torch.clamp(dap - min(neg, key=val) + m1, min=0.0)
        t2 = torch.clamp(dap - min(pairs, key=val) + m2, min=0.0)
        terms.append(t1 + t2)
    return sum(terms) / len(terms)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("kind", ["sq_euclidean", "euclidean"])
def test_quadruplet_matches_paper(seed, kind):
    (x,) = leaves((9, 3), seed=seed)
    y = labels_for(9, seed, classes=4)
    assert_matches(
        lambda x: M.quadruplet_loss(x, labels=y, margin=1.0, margin2=0.5, distance=kind),
        lambda x: quadruplet_ref(x, y, 1.0, 0.5, kind),
        [x],
    )


def test_quadruplet_with_two_classes_says_a_third_is_needed():
    x = torch.randn(6, 3)
    with pytest.raises(ValueError, match="at least 3 classes"):
        M.quadruplet_loss(x, labels=torch.tensor([0, 0, 0, 1, 1, 1]))


@pytest.mark.parametrize("seed", SEEDS)
def test_quadruplet_cross_modal_matches_cdmlmr(seed):
    """CDMLMR: image anchors against text positives / negatives, the second negative pair
    (image l, text k) of two classes both differing from the anchor's."""
    img, txt = leaves((6, 3), (7, 3), seed=seed)
    yi = labels_for(6, seed, classes=4)
    yt = labels_for(7, seed + 50, classes=4)

    def ref(img, txt):
        terms = []
        for a in range(6):
            pos = [dist(img[a], txt[j], "sq_euclidean") for j in range(7) if yt[j] == yi[a]]
            neg = [dist(img[a], txt[j], "sq_euclidean") for j in range(7) if yt[j] != yi[a]]
            pairs = [
                dist(img[l], txt[k], "sq_euclidean")
                for l in range(6)
                for k in range(7)
                if yi[l] != yt[k] and yi[l] != yi[a] and yt[k] != yi[a]
            ]
            if not pos or not neg or not pairs:
                continue
            dap = max(pos, key=val)
            terms.append(
                torch.clamp(dap - min(neg, key=val) + 1.0, min=0.0)
                + torch.clamp(dap - min(pairs, key=val) + 0.5, min=0.0)
            )
        return sum(terms) / len(terms)

    assert_matches(
        lambda i, t: M.quadruplet_loss(i, t, labels=yi, key_labels=yt, margin=1.0, margin2=0.5),
        ref,
        [img, txt],
    )


# ---------------------------------------------------------------------------- Hadsell
@pytest.mark.parametrize("seed", SEEDS)
def test_pair_contrastive_matches_paper(seed):
    a, b = leaves((6, 3), (6, 3), seed=seed)
    similar = torch.tensor([True, False, True, False, False, True])
    mg = 2.0

    def ref(a, b):
        total = 0.0
        for i in range(6):
            dd = dist(a[i], b[i], "euclidean")
            if similar[i]:
                total = total + 0.5 * dd**2
            else:
                total = total + 0.5 * torch.clamp(mg - dd, min=0.0) ** 2
        return total / 6

    assert_matches(
        lambda a, b: M.pair_contrastive_loss(a, b, similar=similar, margin=mg), ref, [a, b]
    )

    (x,) = leaves((6, 3), seed=seed + 10)
    y = labels_for(6, seed)

    def ref_all(x):
        total, count = 0.0, 0
        for i in range(6):
            for j in range(6):
                if i == j:
                    continue
                dd = dist(x[i], x[j], "euclidean")
                if y[i] == y[j]:
                    total = total + 0.5 * dd**2
                else:
                    total = total + 0.5 * torch.clamp(mg - dd, min=0.0) ** 2
                count += 1
        return total / count

    assert_matches(lambda x: M.pair_contrastive_loss(x, labels=y, margin=mg), ref_all, [x])


# ---------------------------------------------------------------------------- CorefCL
@pytest.mark.parametrize("seed", SEEDS)
def test_corrupted_margin_matches_paper(seed):
    logits, clog = leaves((3, 4, 5), (3, 2, 4, 5), seed=seed)
    g = torch.Generator().manual_seed(seed)
    targets = torch.randint(0, 5, (3, 4), generator=g)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1], [1, 1, 0, 0]], dtype=torch.bool)

    def loglik(lg, i):
        total = 0.0
        for t in range(4):
            if mask[i, t]:
                total = total + lg[t, targets[i, t]] - lse(list(lg[t]))
        return total

    def ref(lg, cl):
        total = 0.0
        for i in range(3):
            s = loglik(lg[i], i)
            per = [torch.clamp(1.5 - (s - loglik(cl[i, k], i)), min=0.0) for k in range(2)]
            total = total + sum(per) / 2
        return total / 3

    def lib(lg, cl):
        s = M.sequence_log_likelihood(lg, targets, mask)
        sc = torch.stack(
            [M.sequence_log_likelihood(cl[:, k], targets, mask) for k in range(2)], dim=1
        )
        return M.corrupted_margin_loss(s, sc, margin=1.5)

    assert_matches(lib, ref, [logits, clog])


# ---------------------------------------------------------------------------- misc
def test_gradcheck_circle_triplet_quadruplet():
    (x,) = leaves((6, 3), seed=11)
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    # (circle loss treats its weights a_p, a_n as constants, so finite differences of the
    # loss do not match its gradient by design; it is checked against the reference instead)
    assert torch.autograd.gradcheck(
        lambda x: M.triplet_loss(x, labels=y, margin=5.0, mining="all"), (x,)
    )
    assert torch.autograd.gradcheck(lambda x: M.quadruplet_loss(x, labels=y, margin=5.0), (x,))


def test_modules_match_functionals():
    (x,) = leaves((8, 4), seed=12)
    y = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    torch.testing.assert_close(
        M.CircleLoss(gamma=32.0)(x, labels=y), M.circle_loss(x, labels=y, gamma=32.0)
    )
    torch.testing.assert_close(
        M.TripletLoss(0.4, "semi_hard")(x, labels=y),
        M.triplet_loss(x, labels=y, margin=0.4, mining="semi_hard"),
    )
    torch.testing.assert_close(M.QuadrupletLoss()(x, labels=y), M.quadruplet_loss(x, labels=y))
    torch.testing.assert_close(M.NTXentAM()(x[:4], x[4:]), M.nt_xent_am(x[:4], x[4:]))
    torch.testing.assert_close(
        M.PairContrastiveLoss()(x, labels=y), M.pair_contrastive_loss(x, labels=y)
    )
    orig, corr = torch.tensor([-1.0, -2.0]), torch.tensor([-1.5, -1.0])
    torch.testing.assert_close(
        M.CorruptedMarginLoss()(orig, corr), M.corrupted_margin_loss(orig, corr)
    )


def test_inputs_not_mutated():
    (x,) = leaves((6, 3), seed=13)
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    before = x.detach().clone()
    M.triplet_loss(x, labels=y, mining="semi_hard").backward()
    M.circle_loss(x, labels=y).backward()
    assert torch.equal(x.detach(), before)


def test_bad_inputs_raise():
    x = torch.randn(6, 3)
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    with pytest.raises(ValueError, match="mining"):
        M.triplet_loss(x, labels=y, mining="hardest")
    with pytest.raises(ValueError, match="labels"):
        M.triplet_loss(x)
    with pytest.raises(ValueError, match="margin"):
        M.triplet_loss(x, labels=y, margin=-1.0)
    with pytest.raises(ValueError, match="distance"):
        M.quadruplet_loss(x, labels=y, distance="manhattan")
    with pytest.raises(TypeError, match="positives"):
        M.circle_loss_scores(x @ x.T, torch.ones(6, 6))
    with pytest.raises(ValueError, match="exactly one"):
        M.pair_contrastive_loss(x, x)
    with pytest.raises(ValueError, match="2 views"):
        M.nt_xent_am(x, x, x, symmetric=False)
    with pytest.raises(ValueError, match="corrupted"):
        M.corrupted_margin_loss(torch.zeros(3), torch.zeros(4, 2))
    with pytest.raises(TypeError, match="query"):
        M.circle_loss([[1.0]], labels=y)
    with pytest.raises(ValueError, match="NaN"):
        M.energy_hinge_loss(torch.full((2, 3), math.nan), torch.randn(2, 3))


def test_sequence_log_likelihood_rejects_out_of_vocabulary_targets():
    """An id outside the vocabulary (e.g. an unreplaced -100 padding label) is a ValueError
    naming ``targets``, not an index error from inside gather."""
    logits = torch.randn(2, 3, 4)
    for bad in (4, -100):
        targets = torch.zeros(2, 3, dtype=torch.long)
        targets[1, 2] = bad
        with pytest.raises(ValueError, match="targets"):
            M.sequence_log_likelihood(logits, targets)
    mask = torch.ones(2, 3, dtype=torch.bool)
    got = M.sequence_log_likelihood(logits, torch.zeros(2, 3, dtype=torch.long), mask)
    want = torch.log_softmax(logits, -1)[..., 0].sum(1)
    torch.testing.assert_close(got, want)


def test_nt_xent_am_learnable_temperature_gradient_matches_reference():
    z1, z2 = leaves((4, 3), (4, 3), seed=42)
    tau = torch.tensor(0.25, dtype=torch.float64, requires_grad=True)
    assert_matches(
        lambda a, b, t: M.nt_xent_am(a, b, temperature=t, margin=0.2),
        lambda a, b, t: ntxent_am_ref(a, b, t, 0.2, True),
        [z1, z2, tau],
    )
