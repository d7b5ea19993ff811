"""Token-level objectives and contrastive search against loop-level float64 references."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from contrastkit.objectives import token as T

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


def _cos(a, b):
    return (a * b).sum() / torch.sqrt((a * a).sum() * (b * b).sum())


class TinyCausalLM(nn.Module):
    """A randomly initialised one-layer causal transformer: ids -> (logits, last hidden)."""

    def __init__(self, vocab=13, dim=8, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.emb = nn.Embedding(vocab, dim)
        self.pos = nn.Embedding(64, dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.Tanh(), nn.Linear(2 * dim, dim))
        self.out = nn.Linear(dim, vocab)
        self.double()

    def forward(self, ids):
        x = self.emb(ids) + self.pos(torch.arange(ids.shape[1]))[None]
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        x = x + F.scaled_dot_product_attention(q, k, v, is_causal=True)
        h = x + self.mlp(x)
        return self.out(h), h


# -- SimCTG -----------------------------------------------------------------------------------
def ref_simctg(h, mask, rho):
    total, count = 0.0, 0
    for b in range(h.shape[0]):
        idx = [i for i in range(h.shape[1]) if mask[b][i]]
        for i in idx:
            for j in idx:
                if i != j:
                    total = total + torch.relu(
                        rho - _cos(h[b, i], h[b, i]) + _cos(h[b, i], h[b, j])
                    )
                    count += 1
    return total / count


@pytest.mark.parametrize("seed,rho", [(0, 0.5), (1, 1.2), (2, 0.1)])
def test_simctg_matches_paper(seed, rho):
    h = _leaf(3, 5, 4, seed=seed)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 1, 0, 0, 0]], dtype=torch.bool)
    _check(
        lambda x: T.simctg_contrastive_loss(x, margin=rho, attention_mask=mask),
        lambda x: ref_simctg(x, mask.tolist(), rho),
        (h,),
    )


def test_simctg_module_is_mle_plus_cl():
    logits, h = _leaf(2, 4, 7, seed=3), _leaf(2, 4, 5, seed=4)
    labels = torch.tensor([[1, 2, 3, -100], [4, 5, -100, -100]])
    mask = labels != -100
    out = T.SimCTGLoss(margin=0.5)(logits, labels, h)
    nll = 0.0
    for b in range(2):
        for t in range(4):
            if mask[b, t]:
                nll = nll - torch.log_softmax(logits[b, t], -1)[labels[b, t]]
    exp = nll / int(mask.sum()) + ref_simctg(h, mask.tolist(), 0.5)
    assert torch.allclose(out, exp, atol=1e-12)


def test_simctg_gradcheck():
    h = _leaf(2, 3, 4, seed=5)
    assert torch.autograd.gradcheck(lambda x: T.simctg_contrastive_loss(x, margin=1.5), (h,))


# -- contrastive search -----------------------------------------------------------------------
def ref_contrastive_search(model, prompt, steps, k, alpha):
    seq = list(prompt)
    for _ in range(steps):
        ids = torch.tensor([seq])
        logits, hidden = model(ids)
        probs = torch.softmax(logits[0, -1], -1)
        order = sorted(range(len(probs)), key=lambda v: -float(probs[v]))[:k]
        best, best_score = None, -math.inf
        for v in order:
            _, h2 = model(torch.tensor([seq + [v]]))
            penalty = max(float(_cos(h2[0, -1], hidden[0, j])) for j in range(len(seq)))
            score = (1 - alpha) * float(probs[v]) - alpha * penalty
            if score > best_score:
                best, best_score = v, score
        seq.append(best)
    return seq


@pytest.mark.parametrize("seed,k,alpha", [(0, 4, 0.6), (1, 3, 0.3), (2, 5, 0.9)])
def test_contrastive_search_matches_loop_reference(seed, k, alpha):
    model = TinyCausalLM(seed=seed)
    prompts = torch.tensor([[1, 5, 2], [7, 7, 3]])
    with torch.no_grad():
        out = T.contrastive_search(model, prompts, max_new_tokens=6, top_k=k, alpha=alpha)
        for b in range(2):
            exp = ref_contrastive_search(model, prompts[b].tolist(), 6, k, alpha)
            assert out[b].tolist() == exp


def test_contrastive_search_alpha_zero_is_greedy_and_penalty_changes_choice():
    model = TinyCausalLM(seed=4)
    prompt = torch.tensor([[3, 1]])
    greedy = prompt
    with torch.no_grad():
        for _ in range(8):
            nxt = model(greedy)[0][:, -1].argmax(-1, keepdim=True)
            greedy = torch.cat([greedy, nxt], 1)
        assert torch.equal(T.contrastive_search(model, prompt, max_new_tokens=8, alpha=0.0), greedy)
        strong = T.contrastive_search(model, prompt, max_new_tokens=8, alpha=0.95, top_k=6)
    assert not torch.equal(strong, greedy)


def test_contrastive_search_scores_formula():
    g = torch.Generator().manual_seed(0)
    p = torch.rand(2, 3, generator=g, dtype=D64)
    cand, ctx = (
        torch.randn(2, 3, 4, generator=g, dtype=D64),
        torch.randn(2, 5, 4, generator=g, dtype=D64),
    )
    sc = T.contrastive_search_scores(p, cand, ctx, alpha=0.4)
    for b in range(2):
        for v in range(3):
            pen = max(float(_cos(cand[b, v], ctx[b, j])) for j in range(5))
            assert float(sc[b, v]) == pytest.approx(0.6 * float(p[b, v]) - 0.4 * pen, abs=1e-12)
    with pytest.raises(ValueError, match="alpha must lie"):
        T.contrastive_search_scores(p, cand, ctx, alpha=1.5)


# -- contrastive token loss -------------------------------------------------------------------
def ref_ct(logits, labels, window, ignore=-100):
    total, count = 0.0, 0
    b_, t_ = labels.shape
    for b in range(b_):
        for t in range(t_):
            y = int(labels[b, t])
            if y == ignore:
                continue
            lo = 0 if window is None else max(0, t - window)
            negs = {int(labels[b, s]) for s in range(lo, t)} - {ignore, y}
            den = torch.exp(logits[b, t, y]) + sum(torch.exp(logits[b, t, n]) for n in negs)
            total = total - torch.log(torch.exp(logits[b, t, y]) / den)
            count += 1
    return total / count


@pytest.mark.parametrize("seed,window", [(0, None), (1, 3), (2, 1), (3, 10)])
def test_contrastive_token_loss_matches_paper(seed, window):
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 5, (3, 9), generator=g)  # small vocab: many repeats
    labels[0, :2] = -100
    labels[2, 6:] = -100
    logits = _leaf(3, 9, 6, seed=seed)
    _check(
        lambda x: T.contrastive_token_loss(x, labels, window=window),
        lambda x: ref_ct(x, labels, window),
        (logits,),
    )


def test_contrastive_token_module_adds_cross_entropy():
    logits = _leaf(2, 5, 6, seed=7)
    labels = torch.tensor([[1, 2, 1, 3, 2], [0, 0, 4, -100, -100]])
    out = T.ContrastiveTokenLoss(window=None, ce_weight=0.5, ct_weight=2.0)(logits, labels)
    ce = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100)
    assert torch.allclose(out, 0.5 * ce + 2.0 * ref_ct(logits, labels, None), atol=1e-12)


def test_contrastive_token_loss_bad_labels():
    with pytest.raises(ValueError, match="labels must lie"):
        T.contrastive_token_loss(torch.randn(1, 3, 4), torch.tensor([[0, 1, 4]]))
    with pytest.raises(ValueError, match="labels must be an integer tensor"):
        T.contrastive_token_loss(torch.randn(1, 3, 4), torch.zeros(1, 3))
    with pytest.raises(ValueError, match="ignore_index"):
        T.contrastive_token_loss(torch.randn(1, 2, 4), torch.full((1, 2), -100))


# -- DistiLLM-2 -------------------------------------------------------------------------------
def ref_skl(p_logits, q_logits, alpha, mask):
    total, count = 0.0, 0
    for b in range(p_logits.shape[0]):
        for t in range(p_logits.shape[1]):
            if mask is not None and not mask[b][t]:
                continue
            p = torch.softmax(p_logits[b, t], -1)
            q = torch.softmax(q_logits[b, t], -1)
            kl = sum(
                p[v] * torch.log(p[v] / (alpha * p[v] + (1 - alpha) * q[v])) for v in range(len(p))
            )
            total, count = total + kl, count + 1
    return total / count


@pytest.mark.parametrize("seed,alpha,beta", [(0, 0.1, 0.1), (1, 0.0, 0.3), (2, 0.5, 0.0)])
def test_distillm2_matches_paper(seed, alpha, beta):
    tt, st = _leaf(2, 3, 5, seed=seed), _leaf(2, 3, 5, seed=seed + 1)
    ts, ss = _leaf(2, 4, 5, seed=seed + 2), _leaf(2, 4, 5, seed=seed + 3)
    m_t = torch.tensor([[1, 1, 0], [1, 1, 1]], dtype=torch.bool)
    m_s = torch.tensor([[1, 1, 1, 1], [0, 1, 1, 0]], dtype=torch.bool)

    def lib(a, b, c, d):
        return T.distillm2_loss(
            a, b, c, d, teacher_mask=m_t, student_mask=m_s, alpha=alpha, beta=beta
        )

    def ref(a, b, c, d):
        # SKL(p, q) = KL(p || a p + (1-a) q); SRKL(p, q) = KL(q || (1-b) p + b q)
        return ref_skl(a, b, alpha, m_t.tolist()) + ref_skl(d, c, beta, m_s.tolist())

    _check(lib, ref, (tt, st, ts, ss))


def test_skew_kl_limits():
    p, q = torch.randn(2, 3, 6, dtype=D64), torch.randn(2, 3, 6, dtype=D64)
    fwd = (
        (torch.softmax(p, -1) * (torch.log_softmax(p, -1) - torch.log_softmax(q, -1)))
        .sum(-1)
        .mean()
    )
    rev = (
        (torch.softmax(q, -1) * (torch.log_softmax(q, -1) - torch.log_softmax(p, -1)))
        .sum(-1)
        .mean()
    )
    assert torch.allclose(T.skew_kl_divergence(p, q, alpha=0.0), fwd)
    assert torch.allclose(T.skew_reverse_kl_divergence(p, q, alpha=0.0), rev)
    with pytest.raises(ValueError, match="alpha"):
        T.skew_kl_divergence(p, q, alpha=1.0)
    with pytest.raises(ValueError, match="same shape"):
        T.skew_kl_divergence(p, q[:, :2])


def test_distillm2_module_and_fp16_logits():
    a, b, c, d = (torch.randn(2, 3, 50).half() for _ in range(4))
    out = T.DistiLLM2Loss()(a, b, c, d)
    assert out.dtype == torch.float32 and torch.isfinite(out)


def test_distillm2_mask_errors_name_the_mask():
    a, b, c, d = (torch.randn(2, 3, 5) for _ in range(4))
    good = torch.ones(2, 3, dtype=torch.bool)
    with pytest.raises(ValueError, match="teacher_mask"):
        T.distillm2_loss(a, b, c, d, teacher_mask=torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="student_mask selects no token"):
        T.distillm2_loss(a, b, c, d, teacher_mask=good, student_mask=~good)


def test_gradcheck_ct_and_distillm2():
    logits = _leaf(2, 4, 5, seed=30)
    labels = torch.tensor([[1, 2, 1, 3], [0, 0, 4, -100]])
    assert torch.autograd.gradcheck(lambda z: T.contrastive_token_loss(z, labels), (logits,))
    a, b = _leaf(1, 3, 4, seed=31), _leaf(1, 3, 4, seed=32)
    assert torch.autograd.gradcheck(
        lambda s, t: T.distillm2_loss(t, s, t, s, alpha=0.2, beta=0.3), (a, b)
    )


def test_bf16_hidden_and_logits_accumulate_in_fp32():
    h = torch.randn(2, 6, 8).bfloat16()
    hc = h.clone()
    out = T.simctg_contrastive_loss(h)
    assert out.dtype == torch.float32 and torch.equal(h, hc)
    logits = (torch.randn(2, 6, 10) * 100).bfloat16()
    ct = T.contrastive_token_loss(logits, torch.randint(0, 10, (2, 6)))
    assert ct.dtype == torch.float32 and torch.isfinite(ct)
