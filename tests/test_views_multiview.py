"""Views, pooling, late interaction, multi-view CMC and InfoNCE on precomputed logits."""

from __future__ import annotations

import math

import pytest
import torch

import contrastkit.functional as CF
from contrastkit import views
from contrastkit.diagnostics import infonce_mutual_information_bound
from contrastkit.similarity import late_interaction_similarity
from reference import infonce_reference

TOL = 1e-10


def _leaf(*shape, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64).requires_grad_(True)


def test_late_interaction_matches_loop():
    q, k = _leaf(3, 4, 5, seed=0).detach(), _leaf(2, 6, 5, seed=1).detach()
    qm = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1]], dtype=torch.bool)
    km = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]], dtype=torch.bool)
    out = late_interaction_similarity(q, k, qm, km)
    for i in range(3):
        for j in range(2):
            per_token = []
            for t in range(4):
                if not qm[i, t]:
                    continue
                best = -math.inf
                for u in range(6):
                    if not km[j, u]:
                        continue
                    a, b = q[i, t], k[j, u]
                    cos = float((a * b).sum() / (a.norm() * b.norm()))
                    best = max(best, cos)
                per_token.append(best)
            assert abs(float(out[i, j]) - sum(per_token) / len(per_token)) < TOL


@pytest.mark.parametrize("variant", ["out", "in"])
def test_info_nce_from_logits_matches_loop(variant):
    logits = _leaf(4, 6, seed=2)
    labels, key_labels = torch.tensor([0, 1, 2, 0]), torch.tensor([0, 0, 1, 3, 2, 1])
    loss = CF.info_nce_from_logits(logits, labels=labels, key_labels=key_labels, variant=variant)
    (g,) = torch.autograd.grad(loss, [logits])

    lg = logits.detach().clone().requires_grad_(True)
    total = 0.0
    for i in range(4):
        lse = torch.log(sum(torch.exp(lg[i, j]) for j in range(6)))
        pos = [j for j in range(6) if key_labels[j] == labels[i]]
        if variant == "out":
            total = total - sum(lg[i, j] - lse for j in pos) / len(pos)
        else:
            total = total - (torch.log(sum(torch.exp(lg[i, j]) for j in pos) / len(pos)) - lse)
    ref = total / 4
    (rg,) = torch.autograd.grad(ref, [lg])
    torch.testing.assert_close(loss, ref, rtol=TOL, atol=TOL)
    torch.testing.assert_close(g, rg, rtol=TOL, atol=TOL)


@pytest.mark.parametrize("mode", ["all", "core"])
def test_multiview_cmc_matches_loop(mode):
    vs = [_leaf(4, 3, seed=s) for s in range(3)]
    tau = 0.2
    out = CF.multiview_info_nce(vs, mode=mode, temperature=tau)
    grads = torch.autograd.grad(out, vs)

    rvs = [v.detach().clone().requires_grad_(True) for v in vs]
    kw = dict(positive=lambda i, j: float(i == j), excluded=lambda i, j: False, tau=tau)
    pairs = [(0, 1), (0, 2), (1, 2)] if mode == "all" else [(0, 1), (0, 2)]
    ref = sum(
        0.5 * (infonce_reference(rvs[a], rvs[b], **kw) + infonce_reference(rvs[b], rvs[a], **kw))
        for a, b in pairs
    ) / len(pairs)
    rgrads = torch.autograd.grad(ref, rvs)
    torch.testing.assert_close(out, ref, rtol=TOL, atol=TOL)
    for g, rg in zip(grads, rgrads, strict=True):
        torch.testing.assert_close(g, rg, rtol=TOL, atol=TOL)


def test_mean_std_pool_matches_loop():
    x = torch.randn(2, 4, 3, dtype=torch.float64)
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]], dtype=torch.bool)
    out = views.mean_std_pool(x, mask, eps=0.0)
    for b in range(2):
        rows = [x[b, t] for t in range(4) if mask[b, t]]
        for d in range(3):
            vals = [float(r[d]) for r in rows]
            mu = sum(vals) / len(vals)
            sd = math.sqrt(sum((v - mu) ** 2 for v in vals) / len(vals))
            assert abs(float(out[b, d]) - mu) < TOL
            assert abs(float(out[b, 3 + d]) - sd) < TOL


def test_token_dropout_keeps_an_ordered_subsequence():
    g = torch.Generator().manual_seed(0)
    ids = torch.tensor([[5, 6, 7, 8, 9, 0, 0], [3, 0, 0, 0, 0, 0, 0]])
    before = ids.clone()
    for _ in range(20):
        out = views.token_dropout(ids, 0.5, pad_id=0, generator=g)
        for row in range(2):
            kept = [t for t in out[row].tolist() if t != 0]
            src = [t for t in ids[row].tolist() if t != 0]
            assert kept, "at least one token stays"
            it = iter(src)
            assert all(t in it for t in kept)  # subsequence, order preserved
            assert out[row, len(kept) :].eq(0).all()
    assert torch.equal(ids, before)
    with pytest.raises(ValueError, match="p must lie"):
        views.token_dropout(ids, 1.0, pad_id=0)


def test_token_mask_swap_crop():
    g = torch.Generator().manual_seed(1)
    ids = torch.arange(1, 11)[None].repeat(3, 1)
    masked = views.token_mask(ids, 0.5, mask_id=99, generator=g)
    assert ((masked == ids) | (masked == 99)).all() and (masked == 99).any()
    swapped = views.token_swap(ids, 2, pad_id=0, generator=g)
    assert torch.equal(swapped.sort(1).values, ids)
    cropped = views.span_crop(ids, 0.5, pad_id=0, generator=g)
    for row in cropped.tolist():
        span = [t for t in row if t != 0]
        assert len(span) >= 5 and span == list(range(span[0], span[0] + len(span)))


def test_dropout_views_differ_and_restore_mode():
    enc = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Dropout(0.5))
    enc.eval()
    a, b = views.dropout_views(enc, torch.randn(3, 4))
    assert not torch.equal(a, b)
    assert not enc.training
    with pytest.raises(ValueError, match="num_views"):
        views.dropout_views(enc, torch.randn(3, 4), num_views=1)


def test_compose_and_image_views():
    parts = torch.randn(2, 4, 3, dtype=torch.float64)
    torch.testing.assert_close(views.compose(parts), parts.mean(1))
    torch.testing.assert_close(
        views.compose(parts, mode="concat_mean"),
        0.5 * (parts[:, :2].mean(1) + parts[:, 2:].mean(1)),
    )
    img = torch.rand(5, 8, 8)
    shifted = views.random_shift(img, 1, generator=torch.Generator().manual_seed(0))
    assert shifted.shape == img.shape
    # every shifted image is the original translated by at most one pixel
    for i in range(5):
        found = False
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                moved = torch.roll(img[i], (dy, dx), (0, 1))
                inner = shifted[i, 1:-1, 1:-1]
                found |= torch.allclose(inner, moved[1:-1, 1:-1])
        assert found


def test_diagnostics():
    assert abs(infonce_mutual_information_bound(0.0, 8) - math.log(8)) < 1e-12
    with pytest.raises(ValueError, match="num_candidates"):
        infonce_mutual_information_bound(1.0, 1)


def test_hydra_gated_similarity_matches_loop_and_pairs_are_symmetric():
    from contrastkit.similarity import ClassPairGates, gated_cosine_similarity

    q, k = _leaf(3, 4, seed=5), _leaf(5, 4, seed=6)
    qd, kd = q.detach(), k.detach()
    gates = torch.rand(3, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    s = gated_cosine_similarity(q, k, gates)
    for i in range(3):
        for j in range(5):
            a = [float(gates[i, d] * qd[i, d]) for d in range(4)]
            b = [float(gates[i, d] * kd[j, d]) for d in range(4)]
            dot = sum(x * y for x, y in zip(a, b, strict=True))
            ref = dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))
            assert abs(float(s[i, j].detach()) - ref) < TOL
    loss = CF.info_nce_from_logits(s / 0.1)
    loss.backward()
    assert torch.isfinite(q.grad).all()
    g = ClassPairGates(5, 4)
    idx = {
        int(g.pair_index(torch.tensor(a), torch.tensor(b))) for a in range(5) for b in range(a, 5)
    }
    assert idx == set(range(15))  # one gate per unordered pair, no collisions
    torch.testing.assert_close(
        g(torch.tensor([1, 4]), torch.tensor([4, 2])), g(torch.tensor([4, 2]), torch.tensor([1, 4]))
    )


def test_random_shift_max_shift_is_validated():
    img = torch.rand(2, 4, 4)
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="max_shift"):
            views.random_shift(img, bad)
    assert torch.equal(views.random_shift(img, 0), img)  # no shift: the images themselves


def test_concat_mean_with_one_half_masked_takes_the_other_half():
    parts = torch.randn(2, 4, 3, dtype=torch.float64)
    mask = torch.tensor([[True, True, False, False], [True, False, True, True]])
    out = views.compose(parts, mask, mode="concat_mean")
    torch.testing.assert_close(out[0], parts[0, :2].mean(0))  # second half empty
    torch.testing.assert_close(out[1], 0.5 * (parts[1, 0] + parts[1, 2:].mean(0)))


def test_noise_and_swap_counts_are_validated():
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="std must be a finite number >= 0"):
            views.gaussian_noise(torch.zeros(3), bad)
    ids = torch.tensor([[1, 2, 3, 0]])
    for bad in (-1, 1.5):
        with pytest.raises(ValueError, match="num_swaps must be an int >= 0"):
            views.token_swap(ids, bad, pad_id=0)
    assert torch.equal(views.token_swap(ids, 0, pad_id=0), ids)


def test_late_interaction_in_key_chunks_equals_one_block_with_gradients():
    q, k = _leaf(3, 4, 5, seed=2), _leaf(7, 6, 5, seed=3)
    qm = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1]], dtype=torch.bool)
    km = torch.ones(7, 6, dtype=torch.bool)
    km[2, 3:] = False
    whole = late_interaction_similarity(q, k, qm, km, chunk_size=7)
    gq, gk = torch.autograd.grad(whole.sum(), [q, k])
    for chunk in (1, 3):
        part = late_interaction_similarity(q, k, qm, km, chunk_size=chunk)
        torch.testing.assert_close(part, whole, rtol=0, atol=1e-15)
        hq, hk = torch.autograd.grad(part.sum(), [q, k])
        torch.testing.assert_close(hq, gq, rtol=0, atol=1e-15)
        torch.testing.assert_close(hk, gk, rtol=0, atol=1e-15)


def test_late_interaction_rejects_bad_masks_and_values():
    q, k = torch.randn(2, 3, 4), torch.randn(2, 5, 4)
    empty = torch.ones(2, 5, dtype=torch.bool)
    empty[1] = False
    with pytest.raises(ValueError, match="key_mask must keep at least one token"):
        late_interaction_similarity(q, k, key_mask=empty)
    with pytest.raises(ValueError, match=r"query_mask must be a bool tensor of shape \(2, 3\)"):
        late_interaction_similarity(q, k, query_mask=torch.ones(2, 3))
    nan = q.clone()
    nan[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="query_tokens contains NaN"):
        late_interaction_similarity(nan, k)
    with pytest.raises(ValueError, match="chunk_size must be an int >= 1"):
        late_interaction_similarity(q, k, chunk_size=0)
