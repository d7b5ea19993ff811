"""Negative sources: the queue (MoCo / XBM), momentum encoders, Sy-CON, ContAccum.  Losses
built on them are checked against loop-level float64 formulas written here."""

from __future__ import annotations

import io
import math

import pytest
import torch
from torch import nn

from contrastkit.functional import info_nce
from contrastkit.negatives import (
    ContAccum,
    MomentumEncoder,
    NegativeQueue,
    cosine_momentum,
    frozen_copy,
    momentum_update_,
    sycon_loss,
)

torch.set_num_threads(1)
F64 = torch.float64


def _cos(a, b):
    return sum(x * y for x, y in zip(a, b, strict=True)) / (
        torch.sqrt(sum(x * x for x in a)) * torch.sqrt(sum(y * y for y in b))
    )


def _nll(pos_logit, den_logits):
    """-log( exp(pos) / sum exp(den) ), den including whatever the formula says."""
    m = max(float(v.detach()) for v in den_logits)
    return -(pos_logit - (m + torch.log(sum(torch.exp(v - m) for v in den_logits))))


# -- queue ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("batches", [[3, 3, 3, 3], [2, 5, 1, 7, 4], [9], [4, 10, 3]])
def test_queue_fifo_wraps_around_without_dropping(batches):
    size = 7
    queue = NegativeQueue(size, 2, labels=True, dtype=F64)
    history: list[torch.Tensor] = []
    counter = 0
    for n in batches:
        keys = torch.arange(counter, counter + n, dtype=F64)[:, None].repeat(1, 2)
        labels = torch.arange(counter, counter + n)
        before = keys.clone()
        snap = queue(keys, labels)
        expect = torch.stack(history[-size:]) if history else torch.zeros(0, 2, dtype=F64)
        assert torch.equal(snap.negatives, expect)  # oldest first, exactly the previous keys
        assert torch.equal(snap.labels, expect[:, 0].long())
        current = set(keys[:, 0].tolist())
        assert not current & set(snap.negatives[:, 0].tolist())  # never its own keys
        assert torch.equal(keys, before)  # inputs untouched
        history.extend(keys)
        counter += n
        assert len(queue) == min(len(history), size)
    assert torch.equal(queue.read().negatives, torch.stack(history[-size:]))


def test_queue_snapshot_is_not_changed_by_later_pushes():
    queue = NegativeQueue(4, 3)
    queue.push(torch.randn(4, 3))
    snap = queue.read()
    kept = snap.negatives.clone()
    queue.push(torch.randn(3, 3))
    assert torch.equal(snap.negatives, kept)


def test_queue_state_dict_resumes_exactly():
    g = torch.Generator().manual_seed(0)
    a = NegativeQueue(10, 4, labels=True)
    for n in (3, 4, 6):
        a.push(torch.randn(n, 4, generator=g), torch.randint(0, 5, (n,), generator=g))
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    buf.seek(0)
    b = NegativeQueue(10, 4, labels=True)
    b.load_state_dict(torch.load(buf))
    assert set(a.state_dict()) == {"keys", "key_labels", "ptr", "count"}
    for n in (5, 2, 7, 1):
        keys, labels = torch.randn(n, 4, generator=g), torch.randint(0, 5, (n,), generator=g)
        sa, sb = a(keys, labels), b(keys, labels)
        assert torch.equal(sa.negatives, sb.negatives) and torch.equal(sa.labels, sb.labels)
    assert int(a.ptr) == int(b.ptr) and len(a) == len(b) == 10


def test_moco_loss_with_queue_matches_formula():
    """MoCo (He et al. 2020): L_q = -log exp(q.k+/t) / (exp(q.k+/t) + sum_{queue n} exp(q.n/t))."""
    g = torch.Generator().manual_seed(1)
    queue = NegativeQueue(6, 3, dtype=F64)
    queue.push(torch.randn(6, 3, generator=g, dtype=F64))
    q = torch.randn(4, 3, generator=g, dtype=F64, requires_grad=True)
    k = torch.randn(4, 3, generator=g, dtype=F64)
    neg, _ = queue(k)
    tau = 0.2
    loss = info_nce(q, k, negatives=neg, exclude=~torch.eye(4, dtype=torch.bool), temperature=tau)
    ref = (
        sum(
            _nll(
                _cos(q[i], k[i]) / tau,
                [_cos(q[i], k[i]) / tau] + [_cos(q[i], n) / tau for n in neg],
            )
            for i in range(4)
        )
        / 4
    )
    torch.testing.assert_close(loss, ref, rtol=1e-10, atol=0)
    torch.testing.assert_close(
        torch.autograd.grad(loss, q)[0], torch.autograd.grad(ref, q)[0], rtol=1e-10, atol=1e-14
    )


def test_queue_labels_give_cross_batch_positives():
    """XBM / SupCon L_out (Khosla 2020) over batch keys and memory: positives are every key of
    the anchor's class, in the batch or in the memory."""
    g = torch.Generator().manual_seed(2)
    queue = NegativeQueue(8, 3, labels=True, dtype=F64)
    queue.push(torch.randn(8, 3, generator=g, dtype=F64), torch.randint(0, 3, (8,), generator=g))
    q = torch.randn(5, 3, generator=g, dtype=F64, requires_grad=True)
    k = torch.randn(5, 3, generator=g, dtype=F64)
    y = torch.randint(0, 3, (5,), generator=g)
    neg, neg_y = queue(k, y)
    keys, key_y = torch.cat([k, neg]), torch.cat([y, neg_y])
    loss = info_nce(q, keys, labels=y, key_labels=key_y, temperature=0.5)
    rows = []
    for i in range(5):
        logits = [_cos(q[i], keys[j]) / 0.5 for j in range(len(keys))]
        pos = [j for j in range(len(keys)) if key_y[j] == y[i]]
        rows.append(sum(_nll(logits[j], logits) for j in pos) / len(pos))
    ref = sum(rows) / 5
    torch.testing.assert_close(loss, ref, rtol=1e-10, atol=0)


def test_queue_errors_and_storage_dtype():
    queue = NegativeQueue(4, 3, dtype=torch.bfloat16)
    queue.push(torch.randn(2, 3))
    assert queue.read().negatives.dtype == torch.bfloat16
    with pytest.raises(ValueError, match="keys must have 3 features"):
        queue.push(torch.randn(2, 4))
    with pytest.raises(ValueError, match="created without labels=True"):
        queue.push(torch.randn(2, 3), torch.zeros(2, dtype=torch.int64))
    with pytest.raises(ValueError, match="pass labels="):
        NegativeQueue(4, 3, labels=True).push(torch.randn(2, 3))
    with pytest.raises(ValueError, match="size must be >= 1"):
        NegativeQueue(0, 3)
    with pytest.raises(TypeError, match="dtype must be a floating-point"):
        NegativeQueue(4, 3, dtype=torch.int64)
    queue.reset()
    assert len(queue) == 0 and queue.read().negatives.shape == (0, 3)


# -- momentum encoder, past model ----------------------------------------------------------------
def test_momentum_update_formula_and_no_graph():
    torch.manual_seed(0)
    online = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4)).double()
    ema = MomentumEncoder(nn.DataParallel(online), momentum=0.9)  # wrappers are unwrapped
    online(torch.randn(6, 3, dtype=F64))  # move the running statistics
    with torch.no_grad():
        for p in online.parameters():
            p.add_(1.0)
    before = {n: p.clone() for n, p in ema.encoder.named_parameters()}
    ema.update(online)
    for name, p in online.named_parameters():
        want = 0.9 * before[name] + 0.1 * p
        torch.testing.assert_close(dict(ema.encoder.named_parameters())[name], want)
    torch.testing.assert_close(ema.encoder[1].running_mean, online[1].running_mean)
    assert all(not p.requires_grad for p in ema.parameters())
    assert not ema(torch.randn(2, 3, dtype=F64)).requires_grad
    ema.update(online, momentum=0.0)
    assert all(
        torch.equal(a, b) for a, b in zip(ema.parameters(), online.parameters(), strict=True)
    )
    with pytest.raises(ValueError, match="momentum must lie in"):
        momentum_update_(ema.encoder, online, 1.5)
    with pytest.raises(ValueError, match="same parameters"):
        momentum_update_(nn.Linear(3, 4), online, 0.5)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.compile's import
def test_momentum_update_through_torch_compile_and_into_another_dtype():
    torch.manual_seed(1)
    online = nn.Linear(3, 2).double()
    compiled = torch.compile(online)  # wrapped (not compiled until called)
    target = nn.Linear(3, 2)  # a float32 EMA copy of a float64 model
    before = {n: p.detach().double().clone() for n, p in target.named_parameters()}
    momentum_update_(target, compiled, 0.75)
    for name, p in online.named_parameters():
        want = 0.75 * before[name] + 0.25 * p.detach()
        got = dict(target.named_parameters())[name]
        assert got.dtype == torch.float32
        torch.testing.assert_close(got.double(), want, rtol=1e-6, atol=1e-7)
    past = frozen_copy(compiled)
    assert isinstance(past, nn.Linear) and not past.weight.requires_grad


def test_cosine_momentum_and_frozen_copy():
    assert cosine_momentum(0, 10, 0.99) == pytest.approx(0.99)
    assert cosine_momentum(5, 10, 0.99) == pytest.approx(1 - 0.01 * (math.cos(math.pi / 2) + 1) / 2)
    assert cosine_momentum(10, 10, 0.99) == pytest.approx(1.0)
    model = nn.Sequential(nn.Linear(3, 3), nn.Dropout(0.5))
    past = frozen_copy(model)
    with torch.no_grad():
        model[0].weight.add_(1.0)
    assert not torch.equal(past[0].weight, model[0].weight)  # a copy, not a view
    assert not past.training and not any(p.requires_grad for p in past.parameters())


def _sycon_reference(z, zp, p, h, tau, negs):
    b = z.shape[0]

    def term(anchor, own, other):
        total = 0
        for i in range(b):
            den = [_cos(anchor[i], own[j]) / tau for j in range(b)]
            den += [_cos(anchor[i], other[j]) / tau for j in range(b) if j != i]
            den += [_cos(anchor[i], n) / tau for n in negs]
            total = total + _nll(_cos(anchor[i], own[i]) / tau, den)
        return total / b

    return term(z, zp, p) + term(h, p, zp)


@pytest.mark.parametrize("with_extras", [False, True])
def test_sycon_matches_formula(with_extras):
    g = torch.Generator().manual_seed(3)

    def r(n):
        return torch.randn(n, 4, generator=g, dtype=F64, requires_grad=True)

    z, zp, p, h = r(5), r(5), r(5), r(5)
    negs, past_negs = (r(3), r(2)) if with_extras else (None, None)
    loss = sycon_loss(
        z, zp, p, predicted=h, negatives=negs, past_negatives=past_negs, temperature=0.3
    )
    extra = list(negs) + list(past_negs) if with_extras else []
    ref = _sycon_reference(z, zp, p, h, 0.3, extra)
    torch.testing.assert_close(loss, ref, rtol=1e-10, atol=0)
    for a, b in zip(
        torch.autograd.grad(loss, [z, zp, p, h]),
        torch.autograd.grad(ref, [z, zp, p, h]),
        strict=True,
    ):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-13)
    with pytest.raises(ValueError, match="past_positive must have 5 rows"):
        sycon_loss(z, zp, p[:4])


# -- ContAccum -----------------------------------------------------------------------------------
def _symmetric_reference(q, k, tau):
    """CLIP / symmetric InfoNCE over the (n x n) matrix, loop level."""
    n = q.shape[0]
    fwd = sum(
        _nll(_cos(q[i], k[i]) / tau, [_cos(q[i], k[j]) / tau for j in range(n)]) for i in range(n)
    )
    bwd = sum(
        _nll(_cos(k[i], q[i]) / tau, [_cos(k[i], q[j]) / tau for j in range(n)]) for i in range(n)
    )
    return (fwd + bwd) / (2 * n)


def test_contaccum_keeps_earlier_micro_steps_in_the_denominator():
    g = torch.Generator().manual_seed(4)
    acc = ContAccum()
    seen_q, seen_k, old_grads = [], [], []
    for _ in range(3):
        q = torch.randn(3, 4, generator=g, dtype=F64, requires_grad=True)
        k = torch.randn(3, 4, generator=g, dtype=F64, requires_grad=True)
        batch = acc(q, k)
        loss = info_nce(batch.query, batch.key, symmetric=True, temperature=0.5)
        # reference: current rows with their graph, earlier rows as constants
        all_q = torch.cat([q] + [t.detach() for t in reversed(seen_q)])
        all_k = torch.cat([k] + [t.detach() for t in reversed(seen_k)])
        ref = _symmetric_reference(all_q, all_k, 0.5)
        torch.testing.assert_close(loss, ref, rtol=1e-10, atol=0)
        ref_grads = torch.autograd.grad(ref, [q, k])
        loss.backward()
        torch.testing.assert_close(q.grad, ref_grads[0], rtol=1e-10, atol=1e-14)
        torch.testing.assert_close(k.grad, ref_grads[1], rtol=1e-10, atol=1e-14)
        for t, g0 in zip(seen_q + seen_k, old_grads, strict=True):
            assert torch.equal(t.grad, g0)  # earlier micro-steps get nothing more
        seen_q.append(q)
        seen_k.append(k)
        old_grads = [t.grad.clone() for t in seen_q + seen_k]
    assert batch.key.shape[0] == 9 and len(acc) == 9  # the last micro-step saw every key
    acc.reset()
    assert len(acc) == 0 and acc(q, k).key.shape[0] == 3


def test_contaccum_fifo_memory_and_labels():
    acc = ContAccum(memory_size=5, labels=True)
    rows = []
    for step in range(4):
        q = torch.full((2, 3), float(step)) + torch.arange(2.0)[:, None] / 10
        labels = torch.tensor([step, step])
        batch = acc(q, q * 2, labels)
        expect_mem = torch.cat(rows)[-5:] if rows else torch.zeros(0, 3)
        assert torch.equal(batch.query[2:], expect_mem)
        assert torch.equal(batch.key[2:], expect_mem * 2)  # pairs stay aligned
        assert torch.equal(batch.labels[2:], expect_mem[:, 0].long())
        rows.append(q)
    with pytest.raises(ValueError, match="pass labels="):
        acc(q, q)
    with pytest.raises(ValueError, match="must be pairs"):
        ContAccum()(torch.randn(3, 2), torch.randn(4, 2))
    with pytest.raises(ValueError, match="memory_size must be >= 1"):
        ContAccum(0)


def test_errors_name_the_argument_for_extra_negatives_and_accumulated_memory():
    z = torch.randn(5, 4, dtype=F64)
    with pytest.raises(ValueError, match="past_negatives: 5"):
        sycon_loss(
            z, z, z, negatives=torch.randn(3, 4, dtype=F64), past_negatives=torch.randn(2, 5)
        )
    with pytest.raises(ValueError, match="past_negatives must have shape"):
        sycon_loss(z, z, z, past_negatives=torch.randn(2, 3, 4))
    for memory_size in (None, 8):
        acc = ContAccum(memory_size)
        acc(torch.randn(2, 3), torch.randn(2, 3))
        with pytest.raises(ValueError, match="4 features but the memory holds 3"):
            acc(torch.randn(2, 4), torch.randn(2, 4))
        assert len(acc) == 2  # the failed call stored nothing


@pytest.mark.parametrize("memory_size", [None, 5])
def test_cont_accum_state_dict_resumes_exactly(tmp_path, memory_size):
    g = torch.Generator().manual_seed(0)
    steps = [
        (torch.randn(3, 4, generator=g), torch.randn(3, 4, generator=g), torch.randint(0, 3, (3,)))
        for _ in range(4)
    ]
    straight = ContAccum(memory_size, labels=True)
    for q, k, y in steps[:2]:
        straight(q, k, y)
    torch.save(straight.state_dict(), tmp_path / "acc.pt")
    resumed = ContAccum(memory_size, labels=True)
    resumed.load_state_dict(torch.load(tmp_path / "acc.pt"))
    for q, k, y in steps[2:]:  # the same batches follow: the same memory is offered
        a, b = straight(q, k, y), resumed(q, k, y)
        for x, z in zip(a, b, strict=True):
            assert torch.equal(x, z)
    assert len(resumed) == len(straight)
    with pytest.raises(ValueError, match="memory_size"):
        ContAccum(7, labels=True).load_state_dict(straight.state_dict())
