"""Composition: weighted sums of objectives (CoCa, GOPro, TCL, TagAlign) and MGDA balancing."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from contrastkit.losses import InfoNCE
from contrastkit.objectives import classification as C
from contrastkit.objectives import composite as K

D64 = torch.float64


def _leaf(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=D64).requires_grad_(True)


def _unit(v):
    return v / torch.sqrt((v * v).sum())


def _lse(vals):
    m = max(float(v.detach()) for v in vals)
    return m + torch.log(sum(torch.exp(v - m) for v in vals))


def ref_clip(a, b, tau):
    n = a.shape[0]
    s = [[(_unit(a[i]) * _unit(b[j])).sum() / tau for j in range(n)] for i in range(n)]
    rows = sum(_lse(s[i]) - s[i][i] for i in range(n)) / n
    cols = sum(_lse([s[i][j] for i in range(n)]) - s[j][j] for j in range(n)) / n
    return (rows + cols) / 2


def ref_ntxent(a, b, tau):
    z = torch.cat([a, b])
    n = a.shape[0]
    total = 0.0
    for i in range(2 * n):
        p = (i + n) % (2 * n)
        s = [(_unit(z[i]) * _unit(z[j])).sum() / tau for j in range(2 * n) if j != i]
        total = total + _lse(s) - (_unit(z[i]) * _unit(z[p])).sum() / tau
    return total / (2 * n)


def ref_token_ce(logits, tokens):
    return sum(_lse(list(logits[i])) - logits[i, tokens[i]] for i in range(len(tokens))) / len(
        tokens
    )


# -- weighted sums ----------------------------------------------------------------------------
def test_weighted_sum_mapping_and_sequence():
    a, b = torch.tensor(2.0), torch.tensor(5.0)
    assert float(K.weighted_sum({"a": a, "b": b}, {"b": 0.5})) == 4.5
    assert float(K.weighted_sum([a, b], [3.0, 1.0])) == 11.0
    assert float(K.weighted_sum([a, b])) == 7.0
    with pytest.raises(ValueError, match="absent"):
        K.weighted_sum({"a": a}, {"c": 1.0})
    with pytest.raises(ValueError, match="2 losses but 1 weights"):
        K.weighted_sum([a, b], [1.0])
    with pytest.raises(ValueError, match="scalar loss"):
        K.weighted_sum([torch.ones(2)])
    with pytest.raises(ValueError, match="must be finite"):
        K.weighted_sum([a], [float("inf")])


def test_coca_contrastive_plus_captioning():
    loss_fn = K.WeightedSum(
        {
            "contrastive": InfoNCE(0.1, symmetric=True, learnable_temperature=True),
            "caption": F.cross_entropy,
        },
        weights={"contrastive": 1.0, "caption": 2.0},
    ).double()
    img, txt = _leaf(4, 5, seed=1), _leaf(4, 5, seed=2)
    logits, tokens = _leaf(12, 7, seed=3), torch.randint(0, 7, (12,))
    loss = loss_fn(contrastive=(img, txt), caption=(logits, tokens))
    exp = ref_clip(img, txt, 0.1) + 2.0 * ref_token_ce(logits, tokens.tolist())
    assert torch.allclose(loss, exp, atol=1e-10)
    g = torch.autograd.grad(loss, (img, txt, logits))
    ge = torch.autograd.grad(exp, (img, txt, logits))
    for x, y in zip(g, ge, strict=True):
        assert torch.allclose(x, y, atol=1e-10)
    assert set(loss_fn.last_terms) == {"contrastive", "caption"}
    assert len(list(loss_fn.parameters())) == 1  # the learnable temperature is trained with it


def test_gopro_tcl_three_terms_and_kwargs_and_precomputed():
    # GOPro: CLIP + visual contrastive between augmented views + consistency, weighted
    from contrastkit.functional import nt_xent

    loss_fn = K.WeightedSum(
        {"clip": InfoNCE(0.1, symmetric=True), "visual": nt_xent, "consistency": F.mse_loss},
        weights={"clip": 1.0, "visual": 0.5, "consistency": 3.0},
    )
    v1, v2, t = _leaf(4, 3, seed=4), _leaf(4, 3, seed=5), _leaf(4, 3, seed=6)
    total = loss_fn(clip=(v1, t), visual=(v1, v2), consistency=(v1, v2))
    exp = ref_clip(v1, t, 0.1) + 0.5 * ref_ntxent(v1, v2, 0.5) + 3.0 * ((v1 - v2) ** 2).mean()
    assert torch.allclose(total, exp, atol=1e-10)
    # TCL: a term given as an already computed loss, another as keyword arguments
    loss_fn2 = K.WeightedSum({"cma": InfoNCE(0.1, symmetric=True), "imc": InfoNCE(0.1)})
    out = loss_fn2(cma={"query": v1, "key": t}, imc=torch.tensor(0.25, dtype=D64))
    assert torch.allclose(out, ref_clip(v1, t, 0.1) + 0.25, atol=1e-10)


def test_tagalign_contrastive_plus_multi_tag_bce():
    loss_fn = K.WeightedSum(
        {"itc": InfoNCE(0.1, symmetric=True), "tags": C.MultiLabelBCELoss()}, {"tags": 0.7}
    )
    img, txt = _leaf(3, 4, seed=7), _leaf(3, 4, seed=8)
    tag_logits = _leaf(3, 5, seed=9)
    targets = torch.tensor([[1, 0, 0, 1, 0], [0, 1, 0, 0, 0], [1, 1, 0, 0, 1]], dtype=D64)
    out = loss_fn(itc=(img, txt), tags=(tag_logits, targets))
    bce = (
        sum(
            -(
                targets[i, c] * F.logsigmoid(tag_logits[i, c])
                + (1 - targets[i, c]) * F.logsigmoid(-tag_logits[i, c])
            )
            for i in range(3)
            for c in range(5)
        )
        / 15
    )
    assert torch.allclose(out, ref_clip(img, txt, 0.1) + 0.7 * bce, atol=1e-10)


def test_weighted_sum_module_validation():
    with pytest.raises(ValueError, match="absent"):
        K.WeightedSum({"a": F.mse_loss}, {"b": 1.0})
    mod = K.WeightedSum({"a": F.mse_loss, "b": F.l1_loss})
    x = torch.randn(3)
    with pytest.raises(ValueError, match="missing"):
        mod(a=(x, x))
    with pytest.raises(TypeError, match="tuple of arguments"):
        mod(a=(x, x), b=3.0)
    with pytest.raises(TypeError, match="nn.Module or a callable"):
        K.WeightedSum({"a": 3})


# -- MGDA min-norm weights --------------------------------------------------------------------
def ref_min_norm(grads):
    """Exhaustive reference: the min of |sum a_k g_k|^2 over each face's affine minimiser,
    written with explicit loops (Gram entries as python floats)."""
    n = len(grads)
    gram = [
        [float(sum(grads[i][d] * grads[j][d] for d in range(len(grads[0])))) for j in range(n)]
        for i in range(n)
    ]
    best, best_val = None, float("inf")
    for r in range(1, n + 1):
        for face in itertools.combinations(range(n), r):
            kkt = torch.zeros(r + 1, r + 1, dtype=D64)
            for a, i in enumerate(face):
                for b, j in enumerate(face):
                    kkt[a, b] = gram[i][j]
                kkt[a, r] = kkt[r, a] = 1.0
            rhs = torch.zeros(r + 1, dtype=D64)
            rhs[r] = 1.0
            if abs(float(torch.linalg.det(kkt))) < 1e-14:
                continue
            sol = torch.linalg.solve(kkt, rhs)[:r]
            if any(float(v) < -1e-12 for v in sol):
                continue
            alpha = [0.0] * n
            for a, i in enumerate(face):
                alpha[i] = max(float(sol[a]), 0.0)
            val = sum(alpha[i] * alpha[j] * gram[i][j] for i in range(n) for j in range(n))
            if val < best_val - 1e-15:
                best, best_val = alpha, val
    return torch.tensor(best, dtype=D64), best_val


def _norm_sq(alpha, grads):
    v = sum(float(alpha[k]) * grads[k] for k in range(len(grads)))
    return float((v * v).sum())


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_min_norm_two_tasks_closed_form(seed):
    g = torch.Generator().manual_seed(seed)
    g1, g2 = torch.randn(5, generator=g, dtype=D64), torch.randn(5, generator=g, dtype=D64)
    if seed == 3:
        g2 = g1 + 0.1  # nearly aligned: the clip at a vertex
    a = K.min_norm_weights([g1, g2])
    diff = g1 - g2
    a1 = min(max(float(((g2 - g1) * g2).sum() / (diff * diff).sum()), 0.0), 1.0)
    assert torch.allclose(a, torch.tensor([a1, 1 - a1], dtype=D64), atol=1e-12)


@pytest.mark.parametrize("seed,n,dim", [(0, 3, 4), (1, 4, 3), (2, 5, 6), (3, 3, 2), (4, 6, 2)])
def test_min_norm_exact_matches_exhaustive_reference_and_kkt(seed, n, dim):
    g = torch.Generator().manual_seed(seed)
    grads = [torch.randn(dim, generator=g, dtype=D64) + 0.5 for _ in range(n)]
    a = K.min_norm_weights(grads)
    ref_a, ref_val = ref_min_norm(grads)
    assert abs(_norm_sq(a, grads) - ref_val) < 1e-10
    assert torch.allclose(a, ref_a, atol=1e-8) or dim < n  # the point is unique, weights may not be
    # KKT of min over the simplex: g_k . v >= |v|^2 for all k, with equality where a_k > 0
    v = sum(float(a[k]) * grads[k] for k in range(n))
    vv = float((v * v).sum())
    for k in range(n):
        gv = float((grads[k] * v).sum())
        assert gv >= vv - 1e-9
        if float(a[k]) > 1e-8:
            assert abs(gv - vv) < 1e-9
    assert abs(float(a.sum()) - 1) < 1e-12 and bool((a >= 0).all())


def test_min_norm_frank_wolfe_path_close_to_exact():
    g = torch.Generator().manual_seed(7)
    grads = [torch.randn(8, generator=g, dtype=D64) + 0.3 for _ in range(5)]
    exact = K.min_norm_weights(grads)
    fw = K.min_norm_weights(grads, exact_max_tasks=2)
    assert abs(_norm_sq(fw, grads) - _norm_sq(exact, grads)) < 1e-10
    assert torch.allclose(fw, exact, atol=1e-6)


def test_min_norm_against_scipy_slsqp():
    from scipy.optimize import minimize

    g = torch.Generator().manual_seed(11)
    grads = [torch.randn(6, generator=g, dtype=D64) for _ in range(4)]
    gm = torch.stack(grads).numpy()
    gram = gm @ gm.T
    res = minimize(
        lambda x: x @ gram @ x,
        x0=[0.25] * 4,
        jac=lambda x: 2 * gram @ x,
        bounds=[(0, 1)] * 4,
        constraints=[{"type": "eq", "fun": lambda x: x.sum() - 1}],
        method="SLSQP",
        options={"ftol": 1e-15, "maxiter": 500},
    )
    assert abs(_norm_sq(K.min_norm_weights(grads), grads) - float(res.fun)) < 1e-9


# -- the balancer module ----------------------------------------------------------------------
@pytest.mark.parametrize("normalization", ["none", "l2", "loss", "loss+"])
def test_min_norm_balancer_follows_common_descent_direction(normalization):
    w = _leaf(4, seed=12)
    x = torch.randn(6, 4, dtype=D64)
    losses = [((x @ w) ** 2).mean(), (x @ w - 1).abs().mean(), ((w - 2) ** 2).sum()]
    grads = [torch.autograd.grad(loss, w, retain_graph=True)[0] for loss in losses]
    scaled = []
    for loss, g in zip(losses, grads, strict=True):
        if normalization in ("l2", "loss+"):
            g = g / g.norm()
        if normalization in ("loss", "loss+"):
            g = g / float(loss.detach())
        scaled.append(g)
    exp_alpha, _ = ref_min_norm(scaled)
    balancer = K.MinNormBalancer(normalization)
    total = balancer(losses, [w])
    assert torch.allclose(balancer.last_weights, exp_alpha, atol=1e-8)
    (grad_total,) = torch.autograd.grad(total, w)
    exp_grad = sum(float(exp_alpha[k]) * grads[k] for k in range(3))
    assert torch.allclose(grad_total, exp_grad, atol=1e-8)
    if normalization == "none":  # d = -grad_total decreases every loss (or is 0: Pareto stationary)
        d = -grad_total
        for g in grads:
            assert float((g * d).sum()) <= 1e-10


def test_min_norm_balancer_shared_representation_and_unused_params():
    z = _leaf(3, 2, seed=13)  # a shared representation (MGDA-UB)
    unused = torch.zeros(2, requires_grad=True)
    l1, l2 = (z**2).sum(), (z - 1).pow(2).sum()
    out = K.MinNormBalancer()([l1, l2], [z, unused])
    assert torch.isfinite(out)
    with pytest.raises(ValueError, match="require grad"):
        K.MinNormBalancer()([l1], [torch.zeros(2)])
    with pytest.raises(ValueError, match="non-empty sequence"):
        K.min_norm_weights([])
    with pytest.raises(ValueError, match="same number of entries"):
        K.min_norm_weights([torch.ones(2), torch.ones(3)])


def test_part_b_names_are_reexported():
    import importlib

    import contrastkit.functional as CF
    import contrastkit.losses as CL

    for name in ("geometry", "mixup", "token", "classification", "prototype", "composite"):
        mod = importlib.import_module(f"contrastkit.objectives.{name}")
        for public in mod.__all__:
            home = CL if isinstance(getattr(mod, public), type) else CF
            assert getattr(home, public) is getattr(mod, public), public
            assert public in home.__all__, public


def test_improved_vlp_clip_plus_ssl_on_each_modality():
    # Fini et al. 2023: CLIP plus a self-supervised loss on each modality's two views
    from contrastkit.functional import nt_xent

    loss_fn = K.WeightedSum(
        {"clip": InfoNCE(0.1, symmetric=True), "image_ssl": nt_xent, "text_ssl": nt_xent},
        {"image_ssl": 0.5, "text_ssl": 0.25},
    )
    i1, i2, t1, t2 = (_leaf(4, 3, seed=s) for s in (30, 31, 32, 33))
    inputs = (i1, i2, t1, t2)
    out = loss_fn(clip=(i1, t1), image_ssl=(i1, i2), text_ssl=(t1, t2))
    exp = ref_clip(i1, t1, 0.1) + 0.5 * ref_ntxent(i1, i2, 0.5) + 0.25 * ref_ntxent(t1, t2, 0.5)
    assert torch.allclose(out, exp, atol=1e-10)
    for g, e in zip(
        torch.autograd.grad(out, inputs), torch.autograd.grad(exp, inputs), strict=True
    ):
        assert torch.allclose(g, e, atol=1e-10)
