"""Retrieval metrics against loops over a dense score matrix and against scikit-learn."""

from __future__ import annotations

import doctest
import math

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, ndcg_score, roc_auc_score

import contrastkit.metrics.retrieval as R
from contrastkit.metrics import (
    intra_inter_retrieval,
    map_at_r,
    mean_average_precision,
    mean_rank,
    mean_rank_variance,
    mean_reciprocal_rank,
    median_rank,
    ndcg,
    recall_at_k,
    relevant_ranks,
    retrieval_auc,
    retrieval_metrics,
    roc_auc,
)

# ---------------------------------------------------------------- loop-level references
CHUNKS = [dict(query_chunk_size=5, key_chunk_size=7), dict()]


def scores(q, k):
    """Cosine similarity, one pair at a time."""
    out = np.zeros((len(q), len(k)))
    for i, a in enumerate(q.tolist()):
        for j, b in enumerate(k.tolist()):
            dot = sum(x * y for x, y in zip(a, b, strict=True))
            out[i, j] = dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))
    return out


def ranking(s_row, candidates):
    """Candidates sorted by decreasing score (ties broken by index)."""
    return sorted(candidates, key=lambda j: (-s_row[j], j))


def ref_ranks(s, rel, exclude_self=False):
    """For each query: the 1-based ranks of its relevant keys in the sorted candidates."""
    out = []
    for i in range(s.shape[0]):
        cands = [j for j in range(s.shape[1]) if not (exclude_self and j == i)]
        order = ranking(s[i], cands)
        out.append(sorted(order.index(j) + 1 for j in rel[i] if j in cands))
    return out


def rel_from_labels(ql, kl, exclude_self=False):
    return [
        [j for j in range(len(kl)) if kl[j] == ql[i] and not (exclude_self and i == j)]
        for i in range(len(ql))
    ]


def data(seed, nq=13, nk=29, d=6, classes=4):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(nq, d, generator=g, dtype=torch.float64)
    k = torch.randn(nk, d, generator=g, dtype=torch.float64)
    k[:nq] += 0.8 * q  # make the paired key somewhat close
    ql = torch.randint(0, classes, (nq,), generator=g)
    kl = torch.randint(0, classes, (nk,), generator=g)
    return q, k, ql, kl


# ---------------------------------------------------------------- ranks and simple metrics
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("chunks", CHUNKS)
def test_ranks_match_loop_for_diagonal_labels_and_sets(seed, chunks):
    q, k, ql, kl = data(seed)
    s = scores(q, k)
    cases = [
        (dict(), [[i] for i in range(len(q))]),
        (dict(labels=ql, key_labels=kl), rel_from_labels(ql.tolist(), kl.tolist())),
        (dict(relevant=[{i, (i + 3) % 29, 28} for i in range(13)]), None),
    ]
    cases[2] = (cases[2][0], [sorted(r) for r in cases[2][0]["relevant"]])
    for kw, rel in cases:
        r = relevant_ranks(q, k, **kw, **chunks)
        got = [sorted(x for x in row if x > 0) for row in r.ranks.tolist()]
        assert got == ref_ranks(s, rel)


@pytest.mark.parametrize("chunks", CHUNKS)
def test_many_relevant_keys_use_the_sorted_path(chunks):
    # 3 classes over 60 keys: about 20 relevant keys per query (> 8: searchsorted path)
    q, k, ql, kl = data(5, nq=9, nk=60, classes=3)
    r = relevant_ranks(q, k, labels=ql, key_labels=kl, **chunks)
    got = [sorted(x for x in row if x > 0) for row in r.ranks.tolist()]
    assert got == ref_ranks(scores(q, k), rel_from_labels(ql.tolist(), kl.tolist()))


def test_relevance_order_is_kept_for_index_input():
    q, k, _, _ = data(3)
    idx = torch.tensor([[2, 0, -1]] * 13)
    r = relevant_ranks(q, k, relevant=idx)
    s = scores(q, k)
    for i in range(13):
        order = ranking(s[i], list(range(29)))
        assert r.ranks[i].tolist() == [order.index(2) + 1, order.index(0) + 1, 0]


@pytest.mark.parametrize("seed", [0, 4])
def test_recall_mrr_mean_median_rank(seed):
    q, k, ql, kl = data(seed)
    s = scores(q, k)
    for kw, rel in [
        (dict(), [[i] for i in range(13)]),
        (dict(labels=ql, key_labels=kl), rel_from_labels(ql.tolist(), kl.tolist())),
    ]:
        ranks = [x for x in ref_ranks(s, rel)]
        rows = [x for x in ranks if x]
        first = [x[0] for x in rows]
        for kk in (1, 3, 10):
            assert float(recall_at_k(q, k, kk, **kw)) == pytest.approx(
                sum(f <= kk for f in first) / len(first), abs=1e-12
            )
            frac = np.mean([sum(x <= kk for x in row) / len(row) for row in rows])
            assert float(recall_at_k(q, k, kk, mode="fraction", **kw)) == pytest.approx(frac)
        multi = recall_at_k(q, k, [1, 5], **kw)
        assert multi.shape == (2,)
        assert float(mean_reciprocal_rank(q, k, **kw)) == pytest.approx(
            np.mean([1 / f for f in first]), abs=1e-12
        )
        assert float(mean_rank(q, k, **kw)) == pytest.approx(np.mean(first), abs=1e-12)
        assert float(median_rank(q, k, **kw)) == pytest.approx(np.median(first), abs=1e-12)


# ---------------------------------------------------------------- against scikit-learn
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("chunks", CHUNKS)
def test_map_ndcg_auc_match_sklearn(seed, chunks):
    q, k, ql, kl = data(seed, nq=11, nk=40, classes=3)
    s = scores(q, k)
    rel = (ql[:, None] == kl[None, :]).numpy()
    kw = dict(labels=ql, key_labels=kl, **chunks)
    aps = [average_precision_score(rel[i], s[i]) for i in range(11)]
    assert float(mean_average_precision(q, k, **kw)) == pytest.approx(np.mean(aps), abs=1e-12)
    assert float(ndcg(q, k, **kw)) == pytest.approx(ndcg_score(rel, s), abs=1e-12)
    for kk in (1, 5, 12):
        assert float(ndcg(q, k, k=kk, **kw)) == pytest.approx(ndcg_score(rel, s, k=kk), abs=1e-12)
    aucs = [roc_auc_score(rel[i], s[i]) for i in range(11)]
    assert float(retrieval_auc(q, k, **kw)) == pytest.approx(np.mean(aucs), abs=1e-12)


@pytest.mark.parametrize("seed", [0, 1])
def test_graded_ndcg_matches_sklearn(seed):
    q, k, _, _ = data(seed, nq=8, nk=20)
    g = torch.Generator().manual_seed(seed)
    grades = torch.randint(0, 4, (8, 20), generator=g).to(torch.float64)
    grades[:, 0] = 1.0  # every query has something relevant
    s = scores(q, k)
    for kk in (None, 3, 10):
        want = ndcg_score(grades.numpy(), s, k=kk)
        assert float(ndcg(q, k, k=kk, relevant=grades)) == pytest.approx(want, abs=1e-12)


def test_dense_bool_relevance_equals_label_relevance():
    q, k, ql, kl = data(7)
    dense = ql[:, None] == kl[None, :]
    a = retrieval_metrics(q, k, relevant=dense)
    b = retrieval_metrics(q, k, labels=ql, key_labels=kl)
    assert a == pytest.approx(b)


def test_map_at_r_matches_loop():
    q, k, ql, kl = data(11, nq=10, nk=30, classes=3)
    s = scores(q, k)
    rel = rel_from_labels(ql.tolist(), kl.tolist())
    vals = []
    for i in range(10):
        order = ranking(s[i], list(range(30)))
        r = len(rel[i])
        hits, total = 0, 0.0
        for pos, j in enumerate(order[:r], start=1):  # precision at each hit within the top R
            if j in rel[i]:
                hits += 1
                total += hits / pos
        vals.append(total / r)
    assert float(map_at_r(q, k, labels=ql, key_labels=kl)) == pytest.approx(np.mean(vals))


def test_exclude_self_intra_modal():
    q, _, ql, _ = data(2, nq=15)
    s = scores(q, q)
    rel = rel_from_labels(ql.tolist(), ql.tolist(), exclude_self=True)
    r = relevant_ranks(q, q, labels=ql, exclude_self=True, key_chunk_size=4)
    got = [sorted(x for x in row if x > 0) for row in r.ranks.tolist()]
    assert got == ref_ranks(s, rel, exclude_self=True)
    assert r.num_candidates.tolist() == [14] * 15
    aps = [
        average_precision_score(np.delete(ql.numpy() == ql[i].item(), i), np.delete(s[i], i))
        for i in range(15)
        if rel[i]
    ]
    got_map = float(mean_average_precision(q, q, labels=ql, exclude_self=True))
    assert got_map == pytest.approx(np.mean(aps), abs=1e-12)


def test_ties_count_against_the_query():
    q = torch.randn(5, 4, dtype=torch.float64)
    k = torch.ones(5, 4, dtype=torch.float64)  # collapsed keys: every score ties
    r = relevant_ranks(q, k)
    assert r.ranks.flatten().tolist() == [5] * 5
    assert float(recall_at_k(q, k, 1)) == 0.0
    assert float(retrieval_auc(q, k)) == 0.0


def test_streaming_in_float32_and_bfloat16_agrees_with_float64():
    q, k, ql, kl = data(9, nq=20, nk=50)
    ref = relevant_ranks(q, k, labels=ql, key_labels=kl).ranks
    got = relevant_ranks(q.float(), k.float(), labels=ql, key_labels=kl, key_chunk_size=8).ranks
    assert torch.equal(ref, got)
    bf = relevant_ranks(q.bfloat16(), k.bfloat16())
    assert bf.ranks.dtype == torch.long and bool((bf.ranks >= 1).all())


def test_precomputed_ranks_are_accepted():
    q, k, _, _ = data(1)
    r = relevant_ranks(q, k)
    assert float(mean_reciprocal_rank(r)) == float(mean_reciprocal_rank(q, k))
    with pytest.raises(ValueError, match="RelevantRanks alone"):
        mean_rank(r, k)


# ---------------------------------------------------------------- pooled AUC and MRV
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_roc_auc_matches_sklearn_with_ties(seed):
    g = torch.Generator().manual_seed(seed)
    pos = torch.randint(0, 6, (17,), generator=g).double()  # integers: many ties
    neg = torch.randint(0, 5, (23,), generator=g).double()
    y = np.r_[np.ones(17), np.zeros(23)]
    want = roc_auc_score(y, np.r_[pos.numpy(), neg.numpy()])
    assert float(roc_auc(pos, neg)) == pytest.approx(want, abs=1e-12)
    assert float(roc_auc(pos.float(), neg.float())) == pytest.approx(want, abs=1e-12)


def test_mean_rank_variance_matches_loop():
    g = torch.Generator().manual_seed(0)
    ranks = torch.randint(1, 50, (9, 4), generator=g)
    want = np.mean([np.mean([(r - np.mean(row)) ** 2 for r in row]) for row in ranks.tolist()])
    assert float(mean_rank_variance(ranks)) == pytest.approx(want, abs=1e-12)
    for bad in (torch.tensor([[1.0, float("nan")]]), torch.tensor([[0, 2]])):
        with pytest.raises(ValueError, match="ranks must be finite 1-based ranks"):
            mean_rank_variance(bad)


def test_mean_rank_variance_from_one_to_k_retrieval():
    # 6 images, 3 languages: caption (i, l) is query i * 3 + l; its relevant key is image i
    g = torch.Generator().manual_seed(3)
    img = torch.randn(6, 8, generator=g, dtype=torch.float64)
    cap = img.repeat_interleave(3, dim=0) + 0.9 * torch.randn(
        18, 8, generator=g, dtype=torch.float64
    )
    r = relevant_ranks(cap, img, relevant=torch.arange(6).repeat_interleave(3))
    s = scores(cap, img)
    loop = [
        [ranking(s[i * 3 + lang], list(range(6))).index(i) + 1 for lang in range(3)]
        for i in range(6)
    ]
    want = np.mean([np.var(row) for row in loop])
    assert float(mean_rank_variance(r.ranks.view(6, 3))) == pytest.approx(want, abs=1e-12)
    # image -> its 3 captions: a rank is the key's position in the full ranking
    r2 = relevant_ranks(img, cap, relevant=torch.arange(18).view(6, 3))
    st = scores(img, cap)
    loop2 = []
    for i in range(6):
        order = ranking(st[i], list(range(18)))
        loop2.append([order.index(i * 3 + lang) + 1 for lang in range(3)])
    assert r2.ranks.tolist() == loop2
    assert float(mean_rank_variance(r2)) == pytest.approx(np.mean([np.var(x) for x in loop2]))


# ---------------------------------------------------------------- composite helpers
def test_retrieval_metrics_and_intra_inter_agree_with_single_metrics():
    q, k, ql, _ = data(4, nq=13, nk=13)
    m = retrieval_metrics(q, k, ks=(1, 5))
    assert m["R@5"] == pytest.approx(float(recall_at_k(q, k, 5)))
    assert m["map"] == pytest.approx(float(mean_average_precision(q, k)))
    both = intra_inter_retrieval(q, k, ql)
    assert both["x->x"]["map"] == pytest.approx(
        float(mean_average_precision(q, q, labels=ql, exclude_self=True))
    )
    assert both["y->x"]["R@1"] == pytest.approx(float(recall_at_k(k, q, 1, labels=ql)))
    assert set(intra_inter_retrieval(q, k)) == {"x->y", "y->x"}


# ---------------------------------------------------------------- bad input
def test_bad_input_errors_name_the_argument():
    q, k, ql, kl = data(0)
    with pytest.raises(
        ValueError, match=r"k=30 is larger than the number of candidate keys \(29\)"
    ):
        recall_at_k(q, k, 30)
    with pytest.raises(ValueError, match="k must be"):
        recall_at_k(q, k, 0)
    with pytest.raises(ValueError, match="labels must have shape"):
        recall_at_k(q, k, 1, labels=ql[:5], key_labels=kl)
    with pytest.raises(ValueError, match="key_labels must have shape"):
        recall_at_k(q, k, 1, labels=ql, key_labels=kl[:3])
    bad = q.clone()
    bad[2, 1] = float("nan")
    with pytest.raises(ValueError, match="query contains NaN"):
        recall_at_k(bad, k, 1)
    with pytest.raises(ValueError, match="relevant indices must lie"):
        recall_at_k(q, k, 1, relevant=torch.full((13,), 99))
    with pytest.raises(ValueError, match="no query has a relevant key"):
        recall_at_k(q, k, 1, relevant=torch.full((13,), -1))
    with pytest.raises(ValueError, match="only 13 keys"):
        recall_at_k(k, q, 1)
    with pytest.raises(ValueError, match="exclude_self"):
        recall_at_k(q, k, 1, exclude_self=True)
    with pytest.raises(ValueError, match="positive_scores is empty"):
        roc_auc(torch.tensor([]), torch.tensor([1.0]))
    with pytest.raises(ValueError, match="ranks must have shape"):
        mean_rank_variance(torch.tensor([1, 2, 3]))
    mask = torch.zeros(13, 29, dtype=torch.long)
    mask[torch.arange(13), torch.arange(13)] = 1
    with pytest.raises(ValueError, match=r"looks like a 0/1 mask.*relevant\.bool\(\)"):
        recall_at_k(q, k, 1, relevant=mask)
    # the same mask as bool is what was meant: key i for query i, the default
    assert recall_at_k(q, k, 1, relevant=mask.bool()) == recall_at_k(q, k, 1)


def test_inputs_are_not_modified():
    q, k, ql, kl = data(0)
    q0, k0 = q.clone(), k.clone()
    retrieval_metrics(q, k, labels=ql, key_labels=kl)
    assert torch.equal(q, q0) and torch.equal(k, k0)


def test_docstring_examples_run():
    assert doctest.testmod(R, raise_on_error=False).failed == 0


# ---------------------------------------------------------------- audit regressions
@pytest.mark.parametrize("chunks", CHUNKS)
def test_mixed_float_dtypes_rank_as_float64(chunks):
    # float32 queries against a float64 gallery (e.g. loaded from numpy): ranked, not a crash
    q, k, ql, kl = data(0)
    r = relevant_ranks(q.float(), k, labels=ql, key_labels=kl, **chunks)
    s = scores(q.float().double(), k)
    expected = ref_ranks(s, rel_from_labels(ql.tolist(), kl.tolist()))
    assert [sorted(int(v) for v in row if v > 0) for row in r.ranks] == expected
    assert float(recall_at_k(q.float(), k, k=3)) == float(recall_at_k(q.float().double(), k, k=3))
