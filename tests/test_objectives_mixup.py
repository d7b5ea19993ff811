"""Mixup objectives against loop-level float64 implementations of the papers' equations."""

from __future__ import annotations

import math

import pytest
import torch

from contrastkit.objectives import mixup as M

D64 = torch.float64


def _leaf(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=D64).requires_grad_(True)


def _check(fn, ref, inputs, atol=1e-10):
    out = fn(*inputs)
    grads = torch.autograd.grad(out, inputs)
    exp = ref(*inputs)
    exp_grads = torch.autograd.grad(exp, inputs)
    assert torch.allclose(out, exp, atol=atol, rtol=1e-10), (float(out), float(exp))
    for g, e in zip(grads, exp_grads, strict=True):
        assert torch.allclose(g, e, atol=atol, rtol=1e-9), (g - e).abs().max()


def _unit(v):
    return v / torch.sqrt((v * v).sum())


def _cos(a, b):
    return (_unit(a) * _unit(b)).sum()


def _lse(vals):
    m = max(float(v.detach()) for v in vals)
    return m + torch.log(sum(torch.exp(v - m) for v in vals))


# -- mixing and mixed targets -----------------------------------------------------------------
def test_mixup_and_targets_loop_reference():
    x = _leaf(5, 2, 3, seed=1)
    lam = torch.tensor([0.1, 0.5, 0.9, 1.0, 0.0], dtype=D64)
    perm = torch.tensor([3, 0, 4, 1, 2])
    out = M.mixup(x, lam, perm)
    for i in range(5):
        assert torch.allclose(out[i], lam[i] * x[i] + (1 - lam[i]) * x[perm[i]])
    y = torch.tensor([0, 1, 0, 2, 1])
    keys = torch.tensor([2, 0, 1, 1])
    w = M.mixup_targets(lam, perm, labels=y, key_labels=keys)
    for i in range(5):
        for j in range(4):
            exp = lam[i] * float(y[i] == keys[j]) + (1 - lam[i]) * float(y[perm[i]] == keys[j])
            assert abs(float(w[i, j]) - float(exp)) < 1e-12
    w2 = M.mixup_targets(0.3, perm, num_keys=7)
    assert w2.shape == (5, 7) and float(w2[0, 0]) == pytest.approx(0.3)
    assert float(w2[0, 3]) == pytest.approx(0.7) and float(w2[:, 5:].abs().sum()) == 0


def ref_mixup_infonce(img, txt, lam, perm, tau, symmetric):
    b = img.shape[0]
    mixed = [lam[i] * img[i] + (1 - lam[i]) * img[perm[i]] for i in range(b)]
    s = [[_cos(mixed[i], txt[j]) / tau for j in range(b)] for i in range(b)]
    w = [[lam[i] * (i == j) + (1 - lam[i]) * (perm[i] == j) for j in range(b)] for i in range(b)]
    rows = 0.0
    for i in range(b):
        lse = _lse(s[i])
        rows = rows - sum(w[i][j] * (s[i][j] - lse) for j in range(b)) / sum(w[i])
    loss = rows / b
    if not symmetric:
        return loss
    # M3CoL / BiMixCo (official ``mixco_nce``): the key -> mixed-query direction uses the same
    # targets, lam_i on (key i, mixed i) and 1 - lam_i on (key perm(i), mixed i), each key's
    # softmax over the mixed queries, summed over the mixed rows and averaged over the B keys
    # (the columns are not renormalised)
    col_lse = [_lse([s[a][j] for a in range(b)]) for j in range(b)]
    cols = 0.0
    for i in range(b):
        cols = cols - lam[i] * (s[i][i] - col_lse[i])
        cols = cols - (1 - lam[i]) * (s[i][perm[i]] - col_lse[perm[i]])
    return (loss + cols / b) / 2


@pytest.mark.parametrize("seed,symmetric", [(0, False), (1, True), (2, False)])
def test_mixup_info_nce_matches_m3col_timix(seed, symmetric):
    b = 5
    img, txt = _leaf(b, 4, seed=seed), _leaf(b, 4, seed=seed + 10)
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(b, generator=g)
    lam = torch.rand(b, generator=g, dtype=D64)
    lam_l = [float(v) for v in lam]

    def lib(a, t):
        return M.mixup_info_nce(
            M.mixup(a, lam, perm), t, lam, perm, temperature=0.2, symmetric=symmetric
        )

    def ref(a, t):
        return ref_mixup_infonce(a, t, lam_l, perm.tolist(), 0.2, symmetric)

    _check(lib, ref, (img, txt))


def test_mixup_info_nce_symmetric_matches_m3col_per_row_lam():
    """Per-row lam (M3CoL samples one Beta coefficient per row): the reverse direction weights
    key j by the share of it in the mixed batch, lam_j + sum_{perm(i)=j} (1 - lam_i)."""
    b = 6
    img, txt = _leaf(b, 3, seed=30), _leaf(b, 3, seed=31)
    perm = torch.tensor([1, 2, 0, 4, 5, 3])  # no fixed point
    lam = torch.tensor([0.9, 0.1, 0.6, 0.35, 0.75, 0.2], dtype=D64)

    def lib(a, t):
        return M.mixup_info_nce(
            M.mixup(a, lam, perm), t, lam, perm, temperature=0.1, symmetric=True
        )

    def ref(a, t):
        return ref_mixup_infonce(a, t, lam.tolist(), perm.tolist(), 0.1, True)

    _check(lib, ref, (img, txt))


def test_mixup_info_nce_lam_one_is_clip():
    from contrastkit.functional import info_nce

    img, txt = torch.randn(6, 4, dtype=D64), torch.randn(6, 4, dtype=D64)
    perm = torch.randperm(6)
    assert torch.allclose(
        M.mixup_info_nce(img, txt, 1.0, perm, temperature=0.1), info_nce(img, txt, temperature=0.1)
    )


def test_mixup_gradcheck():
    img, txt = _leaf(4, 3, seed=3), _leaf(4, 3, seed=4)
    perm = torch.tensor([1, 2, 3, 0])
    assert torch.autograd.gradcheck(
        lambda a, b: M.mixup_info_nce(M.mixup(a, 0.3, perm), b, 0.3, perm, temperature=0.5),
        (img, txt),
    )


# -- Metrix -----------------------------------------------------------------------------------
def ref_metrix(a, u, w, kind, alpha=2.0, beta=50.0, m=0.5, mp=1.0, mn=0.5, tau=0.1):
    na, nu = a.shape[0], u.shape[0]
    total = 0.0
    for i in range(na):
        s = [_cos(a[i], u[j]) for j in range(nu)]
        if kind == "multi_similarity":
            # Wang et al. 2019, eq. 13: alpha on the positives, beta on the negatives
            pos = 1.0 + sum(w[i][j] * torch.exp(-alpha * (s[j] - m)) for j in range(nu))
            neg = 1.0 + sum((1 - w[i][j]) * torch.exp(beta * (s[j] - m)) for j in range(nu))
            total = total + torch.log(pos) / alpha + torch.log(neg) / beta
        elif kind == "contrastive":
            sw, snw = sum(w[i]), sum(1 - v for v in w[i])
            if sw > 0:
                total = total + sum(w[i][j] * torch.relu(mp - s[j]) for j in range(nu)) / sw
            if snw > 0:
                total = total + sum((1 - w[i][j]) * torch.relu(s[j] - mn) for j in range(nu)) / snw
        else:
            lse = _lse([v / tau for v in s])
            total = total - sum(w[i][j] * (s[j] / tau - lse) for j in range(nu)) / sum(w[i])
    return total / na


@pytest.mark.parametrize("kind", ["multi_similarity", "contrastive", "infonce"])
@pytest.mark.parametrize("seed", [0, 1])
def test_metrix_matches_paper(kind, seed):
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(6, generator=g)
    lam = torch.rand(6, generator=g, dtype=D64)
    x = _leaf(6, 4, seed=seed)
    w = M.mixup_targets(lam, perm, labels=y).T  # anchors (clean) x mixed
    wl = w.tolist()
    kw = dict(alpha=2.0, beta=5.0, margin=0.3) if kind == "multi_similarity" else {}

    def lib(v):
        return M.metrix_loss(v, M.mixup(v, lam, perm), w, loss=kind, **kw)

    def ref(v):
        mixed = torch.stack([lam[i] * v[i] + (1 - lam[i]) * v[perm[i]] for i in range(6)])
        extra = dict(beta=5.0, m=0.3) if kind == "multi_similarity" else {}
        return ref_metrix(v, mixed, wl, kind, **extra)

    _check(lib, ref, (x,))


def test_metrix_bad_positivity():
    a = torch.randn(3, 4)
    with pytest.raises(ValueError, match="positivity must have shape"):
        M.metrix_loss(a, a, torch.rand(2, 3))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        M.metrix_loss(a, a, torch.full((3, 3), 1.5))
    with pytest.raises(ValueError, match="loss must be one of"):
        M.metrix_loss(a, a, torch.rand(3, 3), loss="triplet")


# -- SupReMix ---------------------------------------------------------------------------------
def ref_supremix(z, y, tau, lneg):
    b = z.shape[0]
    total, count = 0.0, 0
    for i in range(b):
        cands, is_pos = [], []
        for j in range(b):
            if j != i:
                cands.append(z[j])
                is_pos.append(y[j] == y[i])
        lower = [j for j in range(b) if y[j] < y[i]]
        upper = [j for j in range(b) if y[j] > y[i]]
        if lower and upper:
            lo = max(lower, key=lambda j: (y[j], -j))
            lo = min(j for j in lower if y[j] == y[lo])
            hi = min(j for j in upper if y[j] == min(y[k] for k in upper))
            lam = (y[hi] - y[i]) / (y[hi] - y[lo])
            cands.append(lam * z[lo] + (1 - lam) * z[hi])
            is_pos.append(True)
        for j in range(b):
            if y[j] != y[i]:
                cands.append(lneg * z[i] + (1 - lneg) * z[j])
                is_pos.append(False)
        s = [_cos(z[i], c) / tau for c in cands]
        lse = _lse(s)
        pos = [s[k] for k in range(len(s)) if is_pos[k]]
        if pos:
            total = total - sum(p - lse for p in pos) / len(pos)
            count += 1
    return total / count


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_supremix_matches_paper(seed):
    g = torch.Generator().manual_seed(seed)
    y = torch.tensor([1.0, 2.0, 3.5, 5.0, 2.0, 3.5, 1.0], dtype=D64)[torch.randperm(7, generator=g)]
    z = _leaf(7, 3, seed=seed)
    _check(
        lambda v: M.supremix_loss(v, y, temperature=0.3, negative_lam=0.6),
        lambda v: ref_supremix(v, y.tolist(), 0.3, 0.6),
        (z,),
    )


def test_supremix_hard_positive_has_anchor_target():
    # the anchor-exclusive mixture of the nearest lower/upper targets has exactly the anchor's
    # target: with collinear embeddings z_j = y_j * e the mixture equals the anchor
    y = torch.tensor([0.0, 1.0, 4.0], dtype=D64)
    e = torch.tensor([1.0, 2.0], dtype=D64)
    z = torch.stack([torch.tensor([1.0, 0.0], dtype=D64) + v * e for v in y])
    loss_with = M.supremix_loss(z, y, temperature=0.5, hard_negatives=False)
    # anchor 1: hard positive == z_1 (cos 1); anchors 0 and 2 have none, so only row 1 counts
    s = [float(_cos(z[1], z[0])), float(_cos(z[1], z[2])), 1.0]
    exp = -(1.0 / 0.5 - math.log(sum(math.exp(v / 0.5) for v in s)))
    assert float(loss_with) == pytest.approx(exp, abs=1e-12)


def test_supremix_bad_targets():
    with pytest.raises(ValueError, match="targets must be a float"):
        M.supremix_loss(torch.randn(4, 3), torch.tensor([1, 2, 3, 4]))
    with pytest.raises(ValueError, match="no anchor has a positive"):
        M.supremix_loss(torch.randn(2, 3), torch.tensor([1.0, 2.0]), hard_negatives=False)


# -- Core-tuning ------------------------------------------------------------------------------
def test_core_tuning_mixup_loop_reference():
    f = _leaf(6, 3, seed=5)
    labels = [0, 0, 1, 1, 1, 2]
    t = torch.eye(3, dtype=D64)[torch.tensor(labels)]
    perm = torch.tensor([2, 5, 0, 4, 1, 3])
    nl = torch.tensor([0.1, 0.9, 0.85, 0.3, 0.95, 0.5], dtype=D64)
    pl = torch.tensor([0.2, 0.4, 0.6, 0.8, 0.1, 0.5], dtype=D64)
    feats, targ = M.core_tuning_mixup(f, t, perm, nl, pl)
    assert feats.shape == (18, 3)
    for i in range(6):
        lam = max(float(nl[i]), 0.8)
        assert torch.allclose(feats[6 + i], (1 - lam) * f[i] + lam * f[perm[i]])
        assert torch.allclose(targ[6 + i], (1 - lam) * t[i] + lam * t[perm[i]])
        same = [j for j in range(6) if labels[j] == labels[i] and j != i]
        other = [j for j in range(6) if labels[j] != labels[i]]
        p = min(same, key=lambda j: float(_cos(f[i], f[j]).detach())) if same else i
        n = max(other, key=lambda j: float(_cos(f[i], f[j]).detach()))
        assert torch.allclose(feats[12 + i], pl[i] * f[p] + (1 - pl[i]) * f[n])
        assert torch.allclose(targ[12 + i], pl[i] * t[p] + (1 - pl[i]) * t[n])


def ref_focal_supcon(x, keys, tau, gamma):
    b = x.shape[0]
    total, count = 0.0, 0
    for i in range(b):
        s = {a: _cos(x[i], x[a]) / tau for a in range(b) if a != i}
        lse = _lse(list(s.values()))
        pos = [p for p in s if keys[p] == keys[i]]
        if not pos:
            continue
        terms = [(1 - torch.exp(s[p] - lse)) ** gamma * (s[p] - lse) for p in pos]
        total, count = total - sum(terms) / len(pos), count + 1
    return total / count


@pytest.mark.parametrize("seed,gamma", [(0, 1.0), (1, 2.0), (2, 0.0)])
def test_focal_supcon_matches_core_tuning(seed, gamma):
    labels = [0, 1, 0, 2, 1, 0, 3]
    x = _leaf(7, 4, seed=seed)
    _check(
        lambda v: M.focal_supcon_loss(v, torch.tensor(labels), temperature=0.2, gamma=gamma),
        lambda v: ref_focal_supcon(v, labels, 0.2, gamma),
        (x,),
    )


def test_focal_supcon_soft_targets_group_identical_rows():
    f = _leaf(6, 3, seed=8)
    t = torch.tensor([[1.0, 0.0], [0.2, 0.8], [1.0, 0.0], [0.2, 0.8], [0.5, 0.5], [0.0, 1.0]])
    keys = [tuple(r) for r in t.tolist()]
    _check(
        lambda v: M.focal_supcon_loss(v, t, temperature=0.5),
        lambda v: ref_focal_supcon(v, keys, 0.5, 1.0),
        (f,),
    )


# -- MixReorg ---------------------------------------------------------------------------------
def test_mix_and_unmix_tokens_loop_reference_and_gradient():
    x = _leaf(3, 4, 2, seed=2)
    g = torch.Generator().manual_seed(0)
    perms = torch.stack([torch.randperm(3, generator=g) for _ in range(4)])
    mixed = M.mix_tokens(x, perms)
    for b in range(3):
        for t in range(4):
            assert torch.equal(mixed[b, t], x[perms[t, b], t])
    restored = M.unmix_tokens(mixed * 2.0, perms)
    assert torch.allclose(restored, 2.0 * x)
    (restored.sum()).backward()
    assert torch.allclose(x.grad, torch.full_like(x, 2.0))


def test_mix_tokens_rejects_non_permutations():
    x = torch.randn(3, 2, 1)
    with pytest.raises(ValueError, match="permutation"):
        M.mix_tokens(x, torch.tensor([[0, 0, 1], [0, 1, 2]]))
    with pytest.raises(ValueError, match="perms must be an integer tensor of shape"):
        M.mix_tokens(x, torch.zeros(3, 3, dtype=torch.long))


# -- validation and modules -------------------------------------------------------------------
def test_bad_inputs_raise():
    x = torch.randn(4, 3)
    with pytest.raises(ValueError, match=r"lam .* \[0, 1\]"):
        M.mixup(x, 1.5, torch.arange(4))
    with pytest.raises(ValueError, match="perm must hold row indices"):
        M.mixup(x, 0.5, torch.tensor([0, 1, 2, 4]))
    with pytest.raises(TypeError, match="perm must be an integer"):
        M.mixup(x, 0.5, torch.zeros(4))
    with pytest.raises(ValueError, match="lam must be a scalar or have shape"):
        M.mixup(x, torch.rand(3), torch.arange(4))


def test_modules_match_functional():
    img, txt, perm = torch.randn(6, 4), torch.randn(6, 4), torch.randperm(6)
    mod = M.MixupInfoNCE(temperature=0.2, symmetric=True)
    mixed = M.mixup(img, 0.4, perm)
    exp = M.mixup_info_nce(mixed, txt, 0.4, perm, temperature=0.2, symmetric=True)
    assert torch.allclose(mod(mixed, txt, 0.4, perm), exp)
    y = torch.arange(6.0) % 3
    assert torch.allclose(M.SupReMixLoss(0.2)(img, y), M.supremix_loss(img, y, temperature=0.2))
    labels = torch.tensor([0, 1, 0, 1, 2, 2])
    assert torch.allclose(
        M.FocalSupConLoss(0.1, 2.0)(img, labels),
        M.focal_supcon_loss(img, labels, temperature=0.1, gamma=2.0),
    )


def test_mixreorg_contrastive_on_restored_features():
    # MixReorg: patches of different images are mixed, encoded, restored to their images and the
    # restored (pooled) features are contrasted with the paired texts
    from contrastkit.functional import info_nce

    x, text, w = _leaf(4, 5, 3, seed=20), _leaf(4, 3, seed=21), _leaf(3, 3, seed=22)
    g = torch.Generator().manual_seed(3)
    perms = torch.stack([torch.randperm(4, generator=g) for _ in range(5)])

    def lib(tokens, txt, weight):
        feats = torch.tanh(M.mix_tokens(tokens, perms) @ weight)  # a token-wise encoder
        pooled = M.unmix_tokens(feats, perms).mean(1)
        return info_nce(pooled, txt, temperature=0.2, symmetric=True)

    def ref(tokens, txt, weight):
        pooled = [sum(torch.tanh(tokens[b, t] @ weight) for t in range(5)) / 5 for b in range(4)]
        s = [[_cos(pooled[i], txt[j]) / 0.2 for j in range(4)] for i in range(4)]
        rows = sum(_lse(s[i]) - s[i][i] for i in range(4)) / 4
        cols = sum(_lse([s[i][j] for i in range(4)]) - s[j][j] for j in range(4)) / 4
        return (rows + cols) / 2

    _check(lib, ref, (x, text, w))


def test_gradcheck_supremix_metrix_focal():
    z = _leaf(5, 3, seed=40)
    y = torch.tensor([1.0, 2.0, 3.0, 1.0, 2.5], dtype=D64)
    assert torch.autograd.gradcheck(lambda v: M.supremix_loss(v, y, temperature=0.5), (z,))
    w = torch.rand(5, 4, generator=torch.Generator().manual_seed(0), dtype=D64)
    m = _leaf(4, 3, seed=41)
    for kind in ("multi_similarity", "contrastive", "infonce"):
        assert torch.autograd.gradcheck(
            lambda a, b, k=kind: M.metrix_loss(a, b, w, loss=k, beta=5.0), (z, m)
        )
    labels = torch.tensor([0, 1, 0, 1, 1])
    assert torch.autograd.gradcheck(
        lambda v: M.focal_supcon_loss(v, labels, temperature=0.5, gamma=2.0), (z,)
    )


def test_low_temperature_and_bf16_inputs():
    x = torch.randn(8, 16).bfloat16()
    xc = x.clone()
    perm, y = torch.randperm(8), torch.arange(8.0) % 4
    outs = [
        M.mixup_info_nce(M.mixup(x, 0.7, perm), x, 0.7, perm, temperature=0.01),
        M.supremix_loss(x, y, temperature=0.01),
        M.focal_supcon_loss(x, y.long(), temperature=0.01),
        M.metrix_loss(x, x, torch.rand(8, 8), loss="infonce", temperature=0.01),
        M.metrix_loss(x, x, torch.rand(8, 8), loss="multi_similarity", alpha=100.0, beta=100.0),
    ]
    for out in outs:
        assert out.dtype == torch.float32 and torch.isfinite(out)
    assert torch.equal(x, xc)
