"""Configurations of docs/papers.md entries against float64 loop references of the papers' terms."""

from __future__ import annotations

import pytest
import torch

import contrastkit.functional as CF
from reference import compare_with_reference as _compare
from reference import infonce_reference
from reference import leaf as _leaf

TOL = 1e-10


@pytest.mark.parametrize("decoupled", [False, True])
def test_positive_column_logits_match_rationale_and_cdcd(decoupled):
    """Papers 36 and 48: one positive score per row (the rationale-only input's true-class logit;
    the matched conditioning's log-likelihood) in column 0, m negative scores beside it.

    -log(e^{s_i0} / sum_j e^{s_ij}), the denominator over all m + 1 columns, or over the m
    negatives only (decoupled)."""
    b, m = 5, 4
    pos, neg = _leaf(b, seed=1), _leaf(b, m, seed=2)
    positive = torch.zeros(b, m + 1, dtype=torch.bool)
    positive[:, 0] = True

    def lib(pos, neg):
        logits = torch.cat([pos[:, None], neg], dim=1)
        return CF.info_nce_from_logits(logits, positives=positive, decoupled=decoupled)

    def ref(pos, neg):
        total = 0.0
        for i in range(b):
            den = [neg[i, j] for j in range(m)] + ([] if decoupled else [pos[i]])
            total = total - (pos[i] - torch.log(sum(torch.exp(v) for v in den)))
        return total / b

    _compare(lib, ref, [pos, neg])


@pytest.mark.parametrize("seed", [0, 1])
def test_cross_modal_label_positives_symmetric_match_mapformer(seed):
    """Paper 4: supervised cross-modal InfoNCE, image rows and map rows with their own labels,
    averaged over both directions."""
    img, maps = _leaf(6, 4, seed=seed), _leaf(7, 4, seed=seed + 10)
    yi = torch.tensor([0, 1, 2, 0, 1, 3])
    ym = torch.tensor([1, 0, 0, 2, 3, 3, 4])  # map class 4 has no image
    tau = 0.2

    def lib(img, maps):
        return CF.info_nce(img, maps, labels=yi, key_labels=ym, symmetric=True, temperature=tau)

    def ref(img, maps):
        none = lambda i, j: False  # noqa: E731
        i2m = infonce_reference(
            img, maps, positive=lambda i, j: float(yi[i] == ym[j]), excluded=none, tau=tau
        )
        m2i = infonce_reference(
            maps, img, positive=lambda i, j: float(ym[i] == yi[j]), excluded=none, tau=tau
        )
        return 0.5 * (i2m + m2i)

    _compare(lib, ref, [img, maps])


def test_negative_student_positive_teacher_matches_coconut():
    """Paper 56: rehearsal anchors from the current (student) model; positives are the
    same-class features of the previous-task (teacher) model, negatives the other-class
    student features."""
    b, d, tau = 6, 4, 0.1
    student, teacher = _leaf(b, d, seed=3), _leaf(b, d, seed=4)
    y = torch.tensor([0, 1, 0, 2, 1, 0])
    same = y[:, None] == y[None, :]
    positives = torch.cat([same, torch.zeros(b, b, dtype=torch.bool)], dim=1)
    exclude = torch.cat([~same, same], dim=1)  # teacher negatives and student positives leave

    def lib(student, teacher):
        keys = torch.cat([teacher.detach(), student])
        return CF.info_nce(student, keys, positives=positives, exclude=exclude, temperature=tau)

    def cos(a, c):
        return sum(a * c) / torch.sqrt(sum(a * a) * sum(c * c))

    def ref(student, teacher):
        teacher = teacher.detach()
        total = 0.0
        for i in range(b):
            pos = [cos(student[i], teacher[p]) / tau for p in range(b) if y[p] == y[i]]
            neg = [cos(student[i], student[n]) / tau for n in range(b) if y[n] != y[i]]
            lse = torch.log(sum(torch.exp(v) for v in pos + neg))
            total = total - sum(p - lse for p in pos) / len(pos)
        return total / b

    out = lib(student, teacher)
    want = ref(student.detach().clone(), teacher)
    torch.testing.assert_close(out, want, rtol=TOL, atol=TOL)
    g = torch.autograd.grad(out, [student])[0]
    s2 = student.detach().clone().requires_grad_(True)
    rg = torch.autograd.grad(ref(s2, teacher), [s2])[0]
    torch.testing.assert_close(g, rg, rtol=TOL, atol=TOL)


def test_unlabelled_pair_contrastive_matches_cdmlmr():
    """Paper 15: the classic contrastive loss on unlabelled image-text data, co-occurring pairs
    similar, shuffled pairs dissimilar: Y D^2 / 2 + (1 - Y) max(0, m - D)^2 / 2."""
    b, margin = 5, 1.0
    img, txt = _leaf(b, 3, seed=5), _leaf(b, 3, seed=6)
    perm = torch.tensor([1, 2, 3, 4, 0])
    similar = torch.cat([torch.ones(b, dtype=torch.bool), torch.zeros(b, dtype=torch.bool)])

    def lib(img, txt):
        return CF.pair_contrastive_loss(
            torch.cat([img, img]), torch.cat([txt, txt[perm]]), similar=similar, margin=margin
        )

    def ref(img, txt):
        terms = []
        for i in range(b):
            d = torch.sqrt(sum((img[i] - txt[i]) ** 2))
            terms.append(0.5 * d**2)
        for i in range(b):
            d = torch.sqrt(sum((img[i] - txt[int(perm[i])]) ** 2))
            terms.append(0.5 * torch.clamp(margin - d, min=0.0) ** 2)
        return sum(terms) / len(terms)

    _compare(lib, ref, [img, txt])
