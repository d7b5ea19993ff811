"""Prototypical contrast against loop-level float64 implementations of the papers' equations."""

from __future__ import annotations

import math

import pytest
import torch

from contrastkit.objectives import prototype as P

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


def _sim(a, b, kind):
    if kind == "cosine":
        return (_unit(a) * _unit(b)).sum()
    if kind == "dot":
        return (a * b).sum()
    return -((a - b) ** 2).sum()


def ref_proto_nce(z, c, pos, taus, kind, excluded=()):
    """pos[i]: list of positive prototype ids; taus: list of K temperatures."""
    k = c.shape[0]
    total, count = 0.0, 0
    for i in range(z.shape[0]):
        keys = [j for j in range(k) if j not in excluded]
        p_i = [p for p in pos[i] if p not in excluded]
        if not p_i or not keys:
            continue
        logit = {j: _sim(z[i], c[j], kind) / taus[j] for j in keys}
        m = max(float(v.detach()) for v in logit.values())
        lse = m + torch.log(sum(torch.exp(v - m) for v in logit.values()))
        total = total - sum(logit[p] - lse for p in p_i) / len(p_i)
        count += 1
    return total / count


def ref_means(z, y, k):
    out = []
    for j in range(k):
        members = [z[i] for i in range(z.shape[0]) if y[i] == j]
        out.append(sum(members) / len(members) if members else torch.zeros(z.shape[1], dtype=D64))
    return torch.stack(out)


# -- the ProtoNCE equation --------------------------------------------------------------------
@pytest.mark.parametrize(
    "seed,kind,per_proto",
    [(0, "cosine", False), (1, "dot", False), (2, "neg_sq_euclidean", False), (3, "cosine", True)],
)
def test_prototype_info_nce_matches_protonce(seed, kind, per_proto):
    z, c = _leaf(6, 4, seed=seed), _leaf(3, 4, seed=seed + 1)
    y = torch.tensor([0, 2, 1, 1, 0, 2])
    taus = [0.3, 0.7, 0.5] if per_proto else [0.4] * 3
    tau = torch.tensor(taus, dtype=D64) if per_proto else 0.4

    def lib(a, b):
        return P.prototype_info_nce(a, b, y, temperature=tau, similarity=kind)

    def ref(a, b):
        return ref_proto_nce(a, b, [[int(v)] for v in y], taus, kind)

    _check(lib, ref, (z, c))


def test_prototype_info_nce_multi_hot_and_exclusion_rad():
    # RAD: each sample pulled to the guideline embeddings of all its findings
    z, g = _leaf(5, 4, seed=4), _leaf(4, 4, seed=5)
    pos = torch.tensor(
        [[1, 0, 1, 0], [0, 1, 0, 0], [1, 1, 1, 0], [0, 0, 0, 1], [0, 0, 1, 1]], dtype=torch.bool
    )
    excl = torch.tensor([False, False, False, True])

    def lib(a, b):
        return P.prototype_info_nce(a, b, pos, temperature=0.2, exclude=excl)

    def ref(a, b):
        lists = [[j for j in range(4) if pos[i, j]] for i in range(5)]
        return ref_proto_nce(a, b, lists, [0.2] * 4, "cosine", excluded=(3,))

    _check(lib, ref, (z, g))


def test_cavis_instance_prototypes_across_frames():
    # prototypes = mean embedding of each instance in frame t; queries = instance embeddings of
    # frame t+1; gradients reach both frames
    prev, cur = _leaf(7, 3, seed=6), _leaf(5, 3, seed=7)
    ids_prev = torch.tensor([0, 0, 1, 2, 2, 2, 3])
    ids_cur = torch.tensor([2, 0, 3, 1, 0])

    def lib(a, b):
        protos, _ = P.class_prototypes(a, ids_prev, 4)
        return P.prototype_info_nce(b, protos, ids_cur, temperature=0.1)

    def ref(a, b):
        return ref_proto_nce(
            b, ref_means(a, ids_prev.tolist(), 4), [[int(v)] for v in ids_cur], [0.1] * 4, "cosine"
        )

    _check(lib, ref, (prev, cur))


def test_mmg_ego4d_cross_modal_prototypical_loss():
    # support set of one modality gives class prototypes; queries come from another modality;
    # prototypical networks' logits are negative squared euclidean distances
    support, query = _leaf(6, 4, seed=8), _leaf(4, 4, seed=9)
    ys, yq = torch.tensor([0, 1, 2, 0, 1, 2]), torch.tensor([2, 0, 1, 1])

    def lib(a, b):
        protos, _ = P.class_prototypes(a, ys)
        return P.prototype_info_nce(b, protos, yq, temperature=1.0, similarity="neg_sq_euclidean")

    def ref(a, b):
        return ref_proto_nce(
            b, ref_means(a, ys.tolist(), 3), [[int(v)] for v in yq], [1.0] * 3, "neg_sq_euclidean"
        )

    _check(lib, ref, (support, query))


def test_prototype_gradcheck_per_prototype_temperature():
    z, c = _leaf(4, 3, seed=10), _leaf(3, 3, seed=11)
    tau = torch.tensor([0.5, 0.8, 0.3], dtype=D64, requires_grad=True)
    y = torch.tensor([0, 1, 2, 1])
    assert torch.autograd.gradcheck(
        lambda a, b, t: P.prototype_info_nce(a, b, y, temperature=t), (z, c, tau)
    )


# -- concentration (PCL / MEOW) ---------------------------------------------------------------
def test_prototype_concentration_matches_pcl():
    z = torch.randn(9, 3, dtype=D64)
    y = torch.tensor([0, 0, 0, 1, 1, 2, 0, 1, 1])
    c, _ = P.class_prototypes(z, y, 4)
    phi = P.prototype_concentration(z, y, c, alpha=10.0)
    exp = []
    for k in range(4):
        idx = [i for i in range(9) if y[i] == k]
        if len(idx) > 1:
            d = sum(float(torch.sqrt(((z[i] - c[k]) ** 2).sum())) for i in idx)
            exp.append(d / (len(idx) * math.log(len(idx) + 10.0)))
        else:
            exp.append(None)
    top = max(v for v in exp if v is not None)
    exp = [top if v is None else v for v in exp]
    assert torch.allclose(phi, torch.tensor(exp, dtype=D64), atol=1e-12)
    scaled = P.prototype_concentration(z, y, c, mean_temperature=0.3)
    assert torch.allclose(scaled, 0.3 * phi / phi.mean())


def test_prototype_concentration_percentile_clip_matches_pcl_code():
    # PCL's run_kmeans: density.clip(np.percentile(density, 10), np.percentile(density, 90)),
    # then temperature * density / density.mean()
    g = torch.Generator().manual_seed(4)
    z = torch.randn(40, 3, generator=g, dtype=D64)
    y = torch.arange(40) % 8
    y[-3:] = 7  # cluster sizes differ
    y[0] = 6
    c, _ = P.class_prototypes(z, y, 9)  # prototype 8 is empty
    raw = P.prototype_concentration(z, y, c).tolist()

    def percentile(vals, q):  # numpy's default "linear" method
        v = sorted(vals)
        pos = (len(v) - 1) * q / 100
        lo = math.floor(pos)
        return v[lo] + (v[min(lo + 1, len(v) - 1)] - v[lo]) * (pos - lo)

    lo, hi = percentile(raw, 10), percentile(raw, 90)
    clipped = [min(max(v, lo), hi) for v in raw]
    exp = [0.2 * v / (sum(clipped) / len(clipped)) for v in clipped]
    phi = P.prototype_concentration(z, y, c, mean_temperature=0.2, clip_percentiles=(10, 90))
    assert torch.allclose(phi, torch.tensor(exp, dtype=D64), atol=1e-12)
    with pytest.raises(ValueError, match="clip_percentiles"):
        P.prototype_concentration(z, y, c, clip_percentiles=(90, 10))


def test_meow_protonce_averaged_over_clusterings():
    # MEOW: ProtoNCE with concentration temperatures, averaged over M clusterings
    z = _leaf(8, 3, seed=12)
    assigns = [torch.tensor([0, 0, 1, 1, 2, 2, 0, 1]), torch.tensor([0, 1, 0, 1, 0, 1, 0, 1])]
    cents = [P.class_prototypes(z.detach(), a)[0] for a in assigns]
    phis = [
        P.prototype_concentration(z.detach(), a, c) for a, c in zip(assigns, cents, strict=True)
    ]

    def lib(v):
        terms = [
            P.prototype_info_nce(v, c, a, temperature=phi)
            for a, c, phi in zip(assigns, cents, phis, strict=True)
        ]
        return sum(terms) / len(terms)

    def ref(v):
        return (
            sum(
                ref_proto_nce(v, c, [[int(t)] for t in a], phi.tolist(), "cosine")
                for a, c, phi in zip(assigns, cents, phis, strict=True)
            )
            / 2
        )

    _check(lib, ref, (z,))


# -- running-mean prototypes ------------------------------------------------------------------
def test_module_running_means_and_loss():
    mod = P.PrototypeContrastLoss(3, 4, temperature=0.2, momentum=0.5).double()
    z1, y1 = torch.randn(4, 4, dtype=D64), torch.tensor([0, 0, 1, 1])
    z2, y2 = _leaf(5, 4, seed=13), torch.tensor([1, 2, 2, 0, 1])
    mod(z1, y1)
    assert mod.initialized.tolist() == [True, True, False]
    loss = mod(z2, y2)
    n1 = torch.stack([_unit(r) for r in z1])
    n2 = torch.stack([_unit(r) for r in z2.detach()])
    m1, m2 = ref_means(n1, y1.tolist(), 3), ref_means(n2, y2.tolist(), 3)
    exp_protos = torch.stack([0.5 * m1[0] + 0.5 * m2[0], 0.5 * m1[1] + 0.5 * m2[1], m2[2]])
    assert torch.allclose(mod.prototypes, exp_protos, atol=1e-12)
    exp = ref_proto_nce(z2, exp_protos, [[int(v)] for v in y2], [0.2] * 3, "cosine")
    assert torch.allclose(loss, exp, atol=1e-12)
    (g,) = torch.autograd.grad(loss, z2)
    (ge,) = torch.autograd.grad(
        ref_proto_nce(z2, exp_protos, [[int(v)] for v in y2], [0.2] * 3, "cosine"), z2
    )
    assert torch.allclose(g, ge, atol=1e-10)


def test_module_excludes_unseen_prototypes_and_state_dict_roundtrip():
    mod = P.PrototypeContrastLoss(4, 3, temperature=0.5, momentum=0.9).double()
    z, y = _leaf(4, 3, seed=14), torch.tensor([0, 1, 1, 0])
    loss = mod(z, y)
    protos = mod.prototypes.clone()
    exp = ref_proto_nce(z, protos, [[int(v)] for v in y], [0.5] * 4, "cosine", excluded=(2, 3))
    assert torch.allclose(loss, exp, atol=1e-12)
    fresh = P.PrototypeContrastLoss(4, 3, temperature=0.5, momentum=0.9).double()
    fresh.load_state_dict(mod.state_dict())
    fresh.eval()
    assert torch.allclose(fresh(z, y), mod.eval()(z, y))
    assert torch.equal(fresh.prototypes, protos)  # eval mode: no update


def test_module_with_given_prototypes_leaves_buffer():
    mod = P.PrototypeContrastLoss(3, 4)
    z, y, c = torch.randn(5, 4), torch.tensor([0, 1, 2, 0, 1]), torch.randn(3, 4)
    assert torch.allclose(mod(z, y, prototypes=c), P.prototype_info_nce(z, c, y, temperature=0.1))
    assert not bool(mod.initialized.any())


# -- validation -------------------------------------------------------------------------------
def test_bad_inputs_raise():
    z, c = torch.randn(4, 3), torch.randn(2, 3)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\)"):
        P.prototype_info_nce(z, c, torch.tensor([0, 1, 2, 0]))
    with pytest.raises(ValueError, match="one per prototype"):
        P.prototype_info_nce(z, c, torch.tensor([0, 1, 1, 0]), temperature=torch.ones(3))
    with pytest.raises(ValueError, match="must be finite and > 0"):
        P.prototype_info_nce(
            z, c, torch.tensor([0, 1, 1, 0]), temperature=torch.tensor([1.0, -1.0])
        )
    with pytest.raises(ValueError, match="feature sizes"):
        P.prototype_info_nce(z, torch.randn(2, 5), torch.tensor([0, 1, 1, 0]))
    with pytest.raises(ValueError, match="no row has a positive"):
        P.prototype_info_nce(z, c, torch.tensor([0, 0, 0, 0]), exclude=torch.tensor([True, False]))
    with pytest.raises(ValueError, match="0/1 mask"):  # an integer (B, K) mask holding a 2
        P.prototype_info_nce(z, c, torch.tensor([[1, 0], [0, 2], [1, 1], [0, 1]]))
    with pytest.raises(ValueError, match="momentum"):
        P.PrototypeContrastLoss(3, 4, momentum=1.0)
