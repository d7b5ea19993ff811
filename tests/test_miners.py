"""Miners and false-negative filters against loop-level references; their use with the losses."""

from __future__ import annotations

import doctest
import math

import numpy as np
import pytest
import torch

import contrastkit.training.miners as M
from contrastkit.functional import info_nce, siglip
from contrastkit.training.miners import (
    guided_false_negatives,
    hardest_positives,
    indices_to_mask,
    keep_negatives,
    kmeans,
    neighbour_negatives,
    semi_hard_negatives,
    shared_id_false_negatives,
    threshold_false_negatives,
    topk_negatives,
)

SEEDS = [0, 1, 2]


def rand(seed, *shape):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def ints(seed, high, n):
    return torch.randint(0, high, (n,), generator=torch.Generator().manual_seed(seed + 100))


def cos(a, b):
    return sum(x * y for x, y in zip(a, b, strict=True)) / (
        math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    )


def sim(q, k, similarity="cosine"):
    out = np.zeros((len(q), len(k)))
    for i, a in enumerate(q.tolist()):
        for j, b in enumerate(k.tolist()):
            if similarity == "cosine":
                out[i, j] = cos(a, b)
            elif similarity == "dot":
                out[i, j] = sum(x * y for x, y in zip(a, b, strict=True))
            else:
                out[i, j] = -sum((x - y) ** 2 for x, y in zip(a, b, strict=True))
    return out


def positive_sets(nq, nk, labels=None, key_labels=None, positives=None, same_set=False):
    """Loop version of "which keys are positives" (self-pairs are not)."""
    out = []
    for i in range(nq):
        row = set()
        for j in range(nk):
            if same_set and i == j:
                continue
            if positives is not None:
                pos = bool(positives[i, j] > 0)
            elif labels is not None:
                kl = labels if key_labels is None else key_labels
                pos = int(labels[i]) == int(kl[j])
            else:
                pos = i == j
            if pos:
                row.add(j)
        out.append(row)
    return out


# ---------------------------------------------------------------- top-k negatives
def ref_topk(s, k, pos, exclude=None, same_set=False):
    out = []
    for i in range(s.shape[0]):
        cands = [
            j
            for j in range(s.shape[1])
            if j not in pos[i]
            and not (same_set and i == j)
            and not (exclude is not None and bool(exclude[i, j]))
        ]
        out.append(sorted(cands, key=lambda j: -s[i, j])[:k])
    return out


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("similarity", ["cosine", "dot", "neg_sq_euclidean"])
@pytest.mark.parametrize("chunk_size", [3, 1000])
def test_topk_negatives_matches_loop(seed, similarity, chunk_size):
    q, k = rand(seed, 9, 5), rand(seed + 1, 23, 5)
    s = sim(q, k, similarity)
    ql, kl = ints(seed, 4, 9), ints(seed + 1, 4, 23)
    excl = torch.rand(9, 23, generator=torch.Generator().manual_seed(seed)) < 0.2
    cases = [
        (dict(), positive_sets(9, 23), None),
        (dict(labels=ql, key_labels=kl), positive_sets(9, 23, ql, kl), None),
        (dict(exclude=excl), positive_sets(9, 23), excl),
    ]
    for kw, pos, ex in cases:
        got = topk_negatives(q, k, 4, similarity=similarity, chunk_size=chunk_size, **kw)
        assert got.tolist() == ref_topk(s, 4, pos, ex)


@pytest.mark.parametrize("seed", SEEDS)
def test_topk_negatives_same_set_and_soft_positives(seed):
    x = rand(seed, 12, 4)
    y = ints(seed, 3, 12)
    s = sim(x, x)
    got = topk_negatives(x, k=3, labels=y, chunk_size=5)
    assert got.tolist() == ref_topk(s, 3, positive_sets(12, 12, y, same_set=True), same_set=True)
    soft = torch.rand(12, 12, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    soft = soft * (soft > 0.7)
    got = topk_negatives(x, x.clone(), k=2, positives=soft)
    assert got.tolist() == ref_topk(s, 2, positive_sets(12, 12, positives=soft))


def test_topk_negatives_from_an_index_far_larger_than_the_batch():
    bank = rand(0, 20_000, 16)
    q = bank[:32] + 0.1 * rand(1, 32, 16)
    ids = torch.arange(20_000)
    idx = topk_negatives(q, bank, 8, labels=torch.arange(32), key_labels=ids, chunk_size=1024)
    # reference: dense similarities, positive (the query's own item) removed
    s = torch.nn.functional.normalize(q, dim=1) @ torch.nn.functional.normalize(bank, dim=1).T
    s[torch.arange(32), torch.arange(32)] = -2.0
    assert idx.tolist() == s.topk(8, dim=1).indices.tolist()
    assert not bool((idx == torch.arange(32)[:, None]).any())


def test_topk_negatives_protect_positives_across_ranks():
    # rank 1 of 2: local queries 4..7 of a global batch of 8; keys gathered from both ranks
    world, b = 2, 4
    keys = rand(0, world * b, 6)
    q = keys[b:] + 1e-3 * rand(1, b, 6)  # each query's most similar key is its positive
    got = topk_negatives(q, keys, 2, labels=1 * b + torch.arange(b), key_labels=torch.arange(8))
    assert not bool((got == (b + torch.arange(b))[:, None]).any())


def test_faiss_backend_agrees_with_torch():
    pytest.importorskip("faiss")
    q, k = rand(0, 10, 8).float(), rand(1, 300, 8).float()
    for kw in (dict(), dict(labels=ints(0, 5, 10), key_labels=ints(1, 5, 300))):
        for similarity in ("cosine", "dot", "neg_sq_euclidean"):
            a = topk_negatives(q, k, 5, similarity=similarity, **kw)
            b = topk_negatives(q, k, 5, similarity=similarity, backend="faiss", **kw)
            assert a.tolist() == b.tolist()
    x, y = rand(2, 40, 8).float(), ints(2, 4, 40)
    assert topk_negatives(x, k=3, labels=y, backend="faiss").tolist() == (
        topk_negatives(x, k=3, labels=y).tolist()
    )
    with pytest.raises(ValueError, match="backend='faiss' supports"):
        topk_negatives(q, k, 2, exclude=torch.zeros(10, 300, dtype=torch.bool), backend="faiss")


# ---------------------------------------------------------------- semi-hard, hardest positives
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("margin", [0.2, 0.6])
def test_semi_hard_matches_loop(seed, margin):
    x = rand(seed, 14, 4)
    y = ints(seed, 4, 14)
    s = sim(x, x)
    pos = positive_sets(14, 14, y, same_set=True)
    want = np.zeros((14, 14), dtype=bool)
    for i in range(14):
        if not pos[i]:
            continue
        sp = min(s[i, j] for j in pos[i])  # the hardest positive
        for j in range(14):
            if j != i and j not in pos[i] and sp - margin < s[i, j] < sp:
                want[i, j] = True
    got = semi_hard_negatives(x, margin=margin, labels=y)
    assert np.array_equal(got.numpy(), want)
    # with the default pairing the positive is key i
    q, k = rand(seed, 6, 4), rand(seed + 1, 9, 4)
    s2 = sim(q, k)
    want2 = np.array(
        [[j != i and s2[i, i] - margin < s2[i, j] < s2[i, i] for j in range(9)] for i in range(6)]
    )
    assert np.array_equal(semi_hard_negatives(q, k, margin=margin).numpy(), want2)


@pytest.mark.parametrize("seed", SEEDS)
def test_hardest_positives_matches_loop(seed):
    x = rand(seed, 12, 4)
    y = torch.arange(12) % 3
    s = sim(x, x)
    pos = positive_sets(12, 12, y, same_set=True)
    got = hardest_positives(x, k=2, labels=y)
    want = [sorted(pos[i], key=lambda j: s[i, j])[:2] for i in range(12)]
    assert got.tolist() == want


# ---------------------------------------------------------------- neighbourhood negatives
def test_neighbour_negatives_from_distances_match_loop():
    g = torch.Generator().manual_seed(0)
    gps = torch.rand(15, 2, generator=g, dtype=torch.float64) * 100
    gps[3] = gps[7]  # two photos of the very same place
    d = torch.cdist(gps, gps)
    got = neighbour_negatives(4, distance=d)
    for i in range(15):
        cands = [j for j in range(15) if float(d[i, j]) > 0]
        want = sorted(cands, key=lambda j: float(d[i, j]))[:4]  # 3 and 7 tie for the others
        assert [float(d[i, j]) for j in got[i]] == [float(d[i, j]) for j in want]
        assert set(got[i].tolist()) <= set(cands)
    assert 7 not in got[3].tolist() and 3 not in got[7].tolist()
    far = neighbour_negatives(2, distance=d, min_distance=30.0)
    assert bool((d.gather(1, far) > 30.0).all())


def test_neighbour_negatives_from_adjacency():
    g = torch.Generator().manual_seed(0)
    adj = torch.rand(10, 30, generator=g) < 0.4
    adj[:, :3] = True
    got = neighbour_negatives(3, adjacency=adj, generator=torch.Generator().manual_seed(1))
    for i in range(10):
        row = got[i].tolist()
        assert len(set(row)) == 3 and all(bool(adj[i, j]) for j in row)
    again = neighbour_negatives(3, adjacency=adj, generator=torch.Generator().manual_seed(1))
    assert torch.equal(got, again)
    sparse = torch.zeros(2, 5, dtype=torch.bool)
    sparse[0, :3] = True
    with pytest.raises(ValueError, match="k=3 but query row 1 has only 0 candidate"):
        neighbour_negatives(3, adjacency=sparse)


# ---------------------------------------------------------------- false-negative filters
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("threshold", [0.5, 0.8])
def test_threshold_filter_matches_tmr(seed, threshold):
    sent = rand(seed, 10, 6)
    sent[4] = sent[1] + 0.01  # near-duplicate descriptions
    s = sim(sent, sent)
    # TMR: cosine rescaled to [0, 1]; pairs above the threshold leave the denominator
    want = np.array(
        [[i != j and (s[i, j] + 1) / 2 > threshold for j in range(10)] for i in range(10)]
    )
    got = threshold_false_negatives(sent, threshold=threshold)
    assert np.array_equal(got.numpy(), want)
    assert bool(got[1, 4]) and bool(got[4, 1])
    raw = threshold_false_negatives(sent, threshold=0.3, unit_interval=False)
    assert np.array_equal(
        raw.numpy(), np.array([[i != j and s[i, j] > 0.3 for j in range(10)] for i in range(10)])
    )


def test_filters_never_drop_a_positive():
    a = rand(0, 8, 5)
    everything = threshold_false_negatives(a, threshold=-1.0)  # every pair is "too similar"
    assert not bool(everything.diagonal().any()) and int(everything.sum()) == 8 * 7
    y = torch.arange(8) % 2
    by_label = threshold_false_negatives(a, threshold=-1.0, labels=y)
    assert not bool((by_label & (y[:, None] == y[None, :])).any())
    g = guided_false_negatives(a, margin=10.0)  # bound far below every similarity
    assert not bool(g.diagonal().any()) and int(g.sum()) == 8 * 7
    ids = torch.zeros(8, dtype=torch.long)  # every item shares one id
    assert not bool(shared_id_false_negatives(ids).diagonal().any())


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize(
    "strategy,margin", [("absolute", 0.0), ("absolute", 0.1), ("relative", 0.2)]
)
def test_guided_filter_matches_gist(seed, strategy, margin):
    ga, gp = rand(seed, 9, 6), rand(seed + 1, 9, 6)
    gp[:3] = ga[:3] + 0.3 * gp[:3]
    s = sim(ga, gp)
    want = np.zeros((9, 9), dtype=bool)
    for i in range(9):
        bound = s[i, i] - margin if strategy == "absolute" else s[i, i] * (1 - margin)
        for j in range(9):
            want[i, j] = j != i and s[i, j] > bound
    got = guided_false_negatives(ga, gp, margin=margin, strategy=strategy)
    assert np.array_equal(got.numpy(), want)
    # GISTEmbed's anchor-anchor block: same bound (the anchor-positive guide similarity)
    saa = sim(ga, ga)
    want_aa = np.array([[saa[i, j] > s[i, i] - margin for j in range(9)] for i in range(9)])
    if strategy == "absolute":
        got_aa = guided_false_negatives(
            ga,
            ga,
            margin=margin,
            positive_similarity=torch.tensor(np.diag(s)),
            positives=torch.zeros(9, 9, dtype=torch.bool),
        )
        assert np.array_equal(got_aa.numpy(), want_aa)


def test_guided_filter_with_several_positives_uses_the_least_similar():
    g = rand(3, 10, 4)
    y = torch.arange(10) % 3
    s = sim(g, g)
    got = guided_false_negatives(g, g.clone(), labels=y)
    for i in range(10):
        pos = [j for j in range(10) if y[j] == y[i]]
        bound = min(s[i, j] for j in pos)
        for j in range(10):
            assert bool(got[i, j]) == (j not in pos and s[i, j] > bound)


@pytest.mark.parametrize("strategy,margin", [("absolute", 0.5), ("relative", 1.5)])
def test_guided_filter_drops_nothing_in_a_row_without_a_positive(strategy, margin):
    g = rand(4, 6, 4)
    y, ky = torch.tensor([0, 1, 2, 3, 4, 9]), torch.tensor([0, 1, 2, 3, 4, 5])
    got = guided_false_negatives(g, g.clone(), labels=y, key_labels=ky, margin=margin,
                                 strategy=strategy)  # fmt: skip
    assert not bool(got[5].any())  # label 9 has no positive key: no bound, nothing dropped
    s = sim(g, g)
    for i in range(5):  # the other rows: the paper's rule with the row's own positive
        bound = s[i, i] - margin if strategy == "absolute" else s[i, i] * (1 - margin)
        for j in range(6):
            assert bool(got[i, j]) == (j != i and s[i, j] > bound)


def test_shared_id_filter_duplicates_and_clusters_across_ranks():
    caption = torch.tensor([10, 11, 10, 12, 13, 11, 14, 10])
    got = shared_id_false_negatives(caption)
    want = [[i != j and caption[i] == caption[j] for j in range(8)] for i in range(8)]
    assert got.tolist() == want
    # rank 1 of 2 (local rows 4..7) against keys gathered from both ranks
    local = caption[4:]
    ex = shared_id_false_negatives(
        local, caption, labels=4 + torch.arange(4), key_labels=torch.arange(8)
    )
    assert ex.tolist() == [want[i] for i in range(4, 8)]
    assert not bool(ex[torch.arange(4), 4 + torch.arange(4)].any())
    # same-cluster exclusion with pseudo-labels
    clusters = torch.tensor([0, 1, 0, 2])
    assert shared_id_false_negatives(clusters, clusters).int().tolist() == [
        [0, 0, 1, 0],
        [0, 0, 0, 0],
        [1, 0, 0, 0],
        [0, 0, 0, 0],
    ]


def test_nearest_report_exclusion_c_melt():
    # keys whose report is among the k nearest reports of the query's own report leave the
    # denominator (likely false negatives); the positive itself stays
    reports = rand(4, 10, 6)
    s = sim(reports, reports)
    ex = indices_to_mask(topk_negatives(reports, k=2), 10)
    for i in range(10):
        nearest = sorted((j for j in range(10) if j != i), key=lambda j: -s[i, j])[:2]
        assert ex[i].nonzero().flatten().tolist() == sorted(nearest)
    assert not bool(ex.diagonal().any())


# ---------------------------------------------------------------- usable with the losses
def ref_info_nce(q, k, tau, dropped, extra=None):
    """Loop InfoNCE, positive key i, denominators without the dropped pairs, plus extras."""
    total = 0.0
    for i in range(len(q)):
        logits = [cos(q[i], k[j]) / tau for j in range(len(k)) if not dropped[i][j]]
        if extra is not None:
            logits += [cos(q[i], n) / tau for n in extra[i]]
        m = max(logits)
        lse = m + math.log(sum(math.exp(v - m) for v in logits))
        total += lse - cos(q[i], k[i]) / tau
    return total / len(q)


@pytest.mark.parametrize("seed", SEEDS)
def test_masks_and_indices_plug_into_info_nce_and_siglip(seed):
    q, k = rand(seed, 8, 5), rand(seed + 1, 8, 5)
    aux = rand(seed + 2, 8, 7)
    ex = threshold_false_negatives(aux, threshold=0.55) | shared_id_false_negatives(
        torch.tensor([0, 1, 0, 2, 3, 1, 4, 5])
    )
    ql, kl = q.tolist(), k.tolist()
    got = info_nce(q, k, exclude=ex, temperature=0.1)
    assert float(got) == pytest.approx(ref_info_nce(ql, kl, 0.1, ex.tolist()), abs=1e-10)
    # hard negatives from a bank, as per-query negatives=
    bank = rand(seed + 3, 50, 5)
    idx = topk_negatives(q, bank, 3)
    got = info_nce(q, k, negatives=bank[idx], temperature=0.1)
    extra = [[bank[j].tolist() for j in row] for row in idx.tolist()]
    want = ref_info_nce(ql, kl, 0.1, [[False] * 8] * 8, extra)
    assert float(got) == pytest.approx(want, abs=1e-10)
    # in-batch restriction to the 2 hardest negatives
    keep = keep_negatives(indices_to_mask(topk_negatives(q, k, 2), 8))
    assert keep.sum(1).tolist() == [5] * 8 and not bool(keep.diagonal().any())
    got = info_nce(q, k, exclude=keep, temperature=0.1)
    assert float(got) == pytest.approx(ref_info_nce(ql, kl, 0.1, keep.tolist()), abs=1e-10)
    # the sigmoid loss takes the same mask
    sl = siglip(q, k, exclude=ex, scale=5.0, bias=-2.0)
    want = 0.0
    for i in range(8):
        for j in range(8):
            if not ex[i, j]:
                z = 1.0 if i == j else -1.0
                x = 5.0 * cos(ql[i], kl[j]) - 2.0
                want += math.log1p(math.exp(-z * x))
    assert float(sl) == pytest.approx(want / 8, abs=1e-10)


# ---------------------------------------------------------------- k-means
@pytest.mark.parametrize("seed", SEEDS)
def test_kmeans_matches_sklearn_from_the_same_start(seed):
    from sklearn.cluster import KMeans

    x = rand(seed, 80, 3) + 4 * (ints(seed, 4, 80)[:, None].double())
    init = x[torch.randperm(80, generator=torch.Generator().manual_seed(seed))[:4]]
    labels, centres = kmeans(x, 4, init=init, chunk_size=17)
    sk = KMeans(4, init=init.numpy(), n_init=1, algorithm="lloyd", tol=0.0, max_iter=300).fit(x)
    assert labels.tolist() == sk.labels_.tolist()
    assert np.allclose(centres.numpy(), sk.cluster_centers_, atol=1e-10)


def test_kmeans_plus_plus_finds_separated_clusters_and_spherical_variant():
    truth = torch.arange(60) // 20
    x = rand(0, 60, 4) * 0.3 + 10 * torch.eye(4, dtype=torch.float64)[truth]
    labels, _ = kmeans(x, 3, generator=torch.Generator().manual_seed(0))
    # same partition up to renaming
    assert len({(int(a), int(b)) for a, b in zip(labels, truth, strict=True)}) == 3
    labels_s, centres_s = kmeans(x, 3, spherical=True, generator=torch.Generator().manual_seed(1))
    assert len({(int(a), int(b)) for a, b in zip(labels_s, truth, strict=True)}) == 3
    assert torch.allclose(centres_s.norm(dim=1), torch.ones(3, dtype=torch.float64))


# ---------------------------------------------------------------- bad input
def test_bad_input_errors_name_the_argument():
    q, k = rand(0, 6, 4), rand(1, 10, 4)
    with pytest.raises(ValueError, match=r"k=11 is larger than the number of keys \(10\)"):
        topk_negatives(q, k, 11)
    with pytest.raises(ValueError, match="k=10 but query row 0 has only 9 candidate negatives"):
        topk_negatives(q, k, 10)
    with pytest.raises(ValueError, match="k must be >= 1"):
        topk_negatives(q, k, 0)
    nan = q.clone()
    nan[0, 0] = float("nan")
    with pytest.raises(ValueError, match="query contains NaN"):
        topk_negatives(nan, k)
    with pytest.raises(ValueError, match="aux_query contains NaN"):
        threshold_false_negatives(nan)
    with pytest.raises(ValueError, match="labels must have shape"):
        topk_negatives(q, k, labels=torch.arange(5), key_labels=torch.arange(10))
    with pytest.raises(ValueError, match="positive_similarity must have shape"):
        guided_false_negatives(q, positive_similarity=torch.zeros(3))
    with pytest.raises(ValueError, match="positive_similarity contains NaN"):
        guided_false_negatives(q, positive_similarity=torch.full((6,), float("nan")))
    with pytest.raises(ValueError, match="k=2 but query row 0 has only 1 positives"):
        hardest_positives(q, k, 2)
    with pytest.raises(ValueError, match="margin must be > 0"):
        semi_hard_negatives(q, k, margin=0.0)
    with pytest.raises(ValueError, match="num_clusters=7 is larger than the number of points"):
        kmeans(q, 7)
    with pytest.raises(ValueError, match="exactly one of distance= or adjacency="):
        neighbour_negatives(2)
    with pytest.raises(ValueError, match="query_ids must be a 1-D integer tensor"):
        shared_id_false_negatives(torch.zeros(3))
    with pytest.raises(ValueError, match="unit_interval=True rescales cosine"):
        threshold_false_negatives(q, similarity="dot")


def test_inputs_are_not_modified():
    q, k = rand(0, 6, 4), rand(1, 10, 4)
    q0, k0 = q.clone(), k.clone()
    topk_negatives(q, k, 3), semi_hard_negatives(q, k, margin=0.3), kmeans(k, 2)
    guided_false_negatives(q, k[:6]), threshold_false_negatives(q, k)
    assert torch.equal(q, q0) and torch.equal(k, k0)


def test_docstring_examples_run():
    assert doctest.testmod(M, raise_on_error=False).failed == 0


# ---------------------------------------------------------------- audit regressions
def test_neighbour_negatives_infinite_distance_never_returns_ineligible_keys():
    # graph distances: node 2 is unreachable from node 0 (inf), node 0 itself is at 0
    inf = math.inf
    for k, distance in (
        (2, torch.tensor([[0.0, 1.0, inf], [1.0, 0.0, 2.0]])),
        (3, torch.tensor([[0.0, 1.0, inf, 3.0], [1.0, 0.0, 2.0, inf]])),
    ):
        idx = neighbour_negatives(k, distance=distance)
        for i in range(2):  # loop reference: eligible keys (d > 0) by distance, index ties
            ref = sorted((d, j) for j, d in enumerate(distance[i].tolist()) if d > 0)
            assert idx[i].tolist() == [j for _, j in ref[:k]]


def test_miners_accept_mixed_float_dtypes():
    q = rand(0, 6, 4).float()
    bank = rand(1, 20, 4)  # float64, e.g. a numpy memory bank
    idx = topk_negatives(q, bank, k=3)
    for i, a in enumerate(q.double().tolist()):
        s = [(-cos(a, b), j) for j, b in enumerate(bank.tolist()) if j != i]  # i: positive
        assert idx[i].tolist() == [j for _, j in sorted(s)[:3]]
    sel = semi_hard_negatives(q, bank[:6], margin=0.5)
    assert sel.shape == (6, 6) and not bool(sel.diagonal().any())


def test_spherical_kmeans_normalises_a_given_init():
    # unit points; the init's first centroid is long: unnormalised, every point would go to the
    # second centroid (euclidean distance) and the clusters would come out wrong
    angles = torch.tensor([0.0, 0.2, 0.4, 1.2, 1.4, 1.57], dtype=torch.float64)
    x = torch.stack([angles.cos(), angles.sin()], dim=1)
    init = torch.tensor([[10.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    labels, centres = kmeans(x, 2, init=init, spherical=True, iters=1)
    assert labels.tolist() == [0, 0, 0, 1, 1, 1]
    same, _ = kmeans(x, 2, init=init / 10.0 * torch.tensor([[1.0], [10.0]]), spherical=True)
    assert same.tolist() == labels.tolist()
