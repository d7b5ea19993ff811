"""``distributed=True`` in one process (no process group: a world of one), the ring's online
statistics against a loop-level float64 reference, gradcheck, argument checks and the
collectives' single-process behaviour.  The multi-process checks are in test_distributed.py."""

from __future__ import annotations

import math

import pytest
import torch

import contrastkit.distributed as cdist
from contrastkit.functional import info_nce, nt_xent, siglip, supcon
from contrastkit.losses import InfoNCE as InfoNCELoss
from contrastkit.losses import NTXent, SigLIP, SupCon

torch.set_num_threads(1)
F64 = torch.float64


# -- loop-level references (the papers' equations, one scalar at a time) ------------------------
def _sim(a, b, similarity):
    if similarity == "cosine":
        na = torch.sqrt(sum(x * x for x in a))
        nb = torch.sqrt(sum(x * x for x in b))
        return sum(x * y for x, y in zip(a, b, strict=True)) / (na * nb)
    if similarity == "dot":
        return sum(x * y for x, y in zip(a, b, strict=True))
    return -sum((x - y) ** 2 for x, y in zip(a, b, strict=True))


def _lse(values):
    m = max(float(v.detach()) for v in values)
    return m + torch.log(sum(torch.exp(v - m) for v in values))


def _ref_direction(q, k, weight, excluded, tau, variant, decoupled, margin, extra, similarity):
    """Mean over rows with a positive of the InfoNCE row loss (van den Oord 2018; SupCon's
    L_out / L_in, Khosla 2020; DCL, Yeh 2022), written from the equations."""
    losses = []
    for i in range(q.shape[0]):
        pos, den = [], []
        for j in range(k.shape[0]):
            if excluded(i, j):
                continue
            w = weight(i, j)
            logit = (_sim(q[i], k[j], similarity) - (margin if w > 0 else 0.0)) / tau
            if w > 0:
                pos.append((w, logit))
            if not (decoupled and w > 0):
                den.append(logit)
        for n in extra(i):
            den.append(_sim(q[i], n, similarity) / tau)
        if not pos or not den:
            continue
        total_w = sum(w for w, _ in pos)
        if variant == "out":
            positive = sum(w * logit for w, logit in pos) / total_w
        else:
            positive = _lse([logit + math.log(w) for w, logit in pos]) - math.log(total_w)
        losses.append(_lse(den) - positive)
    return sum(losses) / len(losses)


def _ref_sigmoid(q, k, target, t, b, similarity):
    """SigLIP (Zhai 2023): -1/B sum_ij [y log sig(x) + (1-y) log sig(-x)], x = t s + b."""
    total = 0.0
    for i in range(q.shape[0]):
        for j in range(k.shape[0]):
            x = t * _sim(q[i], k[j], similarity) + b
            y = target(i, j)
            total = total - (
                y * torch.nn.functional.logsigmoid(x) + (1 - y) * torch.nn.functional.logsigmoid(-x)
            )
    return total / q.shape[0]


CASES = [
    dict(),
    dict(variant="in", labels=True),
    dict(labels=True, decoupled=True, symmetric=True),
    dict(margin=0.2, negatives=(3,), similarity="dot"),
    dict(labels=True, negatives=(2, "shared"), similarity="neg_sq_euclidean", symmetric=True),
]


@pytest.mark.parametrize("engine", ["auto", "streaming"])
@pytest.mark.parametrize("case", range(len(CASES)))
@pytest.mark.parametrize("seed", [0, 1])
def test_world_of_one_matches_loop_reference(engine, case, seed):
    opts = dict(CASES[case])
    g = torch.Generator().manual_seed(seed)
    b, n, d = 4, 5, 3
    q = torch.randn(b, d, generator=g, dtype=F64, requires_grad=True)
    k = torch.randn(n, d, generator=g, dtype=F64, requires_grad=True)
    tau = torch.tensor(0.5, dtype=F64, requires_grad=True)
    kwargs = {}
    qlab = torch.randint(0, 2, (b,), generator=g)
    klab = torch.randint(0, 2, (n,), generator=g)
    qlab[0] = klab[0]  # at least one positive
    if opts.pop("labels", False):
        kwargs.update(labels=qlab, key_labels=klab)
        weight = lambda i, j: float(qlab[i] == klab[j])  # noqa: E731
    else:
        weight = lambda i, j: float(i == j)  # noqa: E731
    negs = opts.pop("negatives", None)
    neg = None
    if negs is not None:
        shape = (negs[0], d) if len(negs) == 2 else (b, negs[0], d)
        neg = torch.randn(*shape, generator=g, dtype=F64, requires_grad=True)
        kwargs["negatives"] = neg
    similarity = opts.get("similarity", "cosine")
    symmetric = opts.get("symmetric", False)
    loss = info_nce(q, k, temperature=tau, distributed=True, engine=engine, **kwargs, **opts)
    grads = torch.autograd.grad(loss, [q, k, tau] + ([neg] if neg is not None else []))

    def extra(i):
        if neg is None:
            return []
        return list(neg) if neg.dim() == 2 else list(neg[i])

    common = dict(
        tau=tau,
        variant=opts.get("variant", "out"),
        decoupled=opts.get("decoupled", False),
        margin=opts.get("margin", 0.0),
        similarity=similarity,
    )
    ref = _ref_direction(q, k, weight, lambda i, j: False, extra=extra, **common)
    if symmetric:
        back = _ref_direction(
            k, q, lambda i, j: weight(j, i), lambda i, j: False, extra=lambda i: [], **common
        )
        ref = (ref + back) / 2
    ref_grads = torch.autograd.grad(ref, [q, k, tau] + ([neg] if neg is not None else []))
    torch.testing.assert_close(loss, ref, rtol=1e-10, atol=1e-12)
    for got, want in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("engine", ["auto", "streaming"])
def test_world_of_one_same_set_and_sigmoid_match_loop_reference(engine):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(6, 3, generator=g, dtype=F64, requires_grad=True)
    lab = torch.tensor([0, 1, 0, 1, 2, 2])
    loss = info_nce(x, labels=lab, temperature=0.3, distributed=True, engine=engine)
    ref = _ref_direction(
        x, x, lambda i, j: float(lab[i] == lab[j]), lambda i, j: i == j, 0.3, "out", False, 0.0,
        lambda i: [], "cosine",
    )  # fmt: skip
    torch.testing.assert_close(loss, ref, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(
        torch.autograd.grad(loss, x)[0], torch.autograd.grad(ref, x)[0], rtol=1e-10, atol=1e-12
    )
    q = torch.randn(4, 3, generator=g, dtype=F64, requires_grad=True)
    k = torch.randn(5, 3, generator=g, dtype=F64, requires_grad=True)
    t = torch.tensor(4.0, dtype=F64, requires_grad=True)
    bias = torch.tensor(-1.5, dtype=F64, requires_grad=True)
    loss = siglip(q, k, scale=t, bias=bias, distributed=True, engine=engine)
    ref = _ref_sigmoid(q, k, lambda i, j: float(i == j), t, bias, "cosine")
    torch.testing.assert_close(loss, ref, rtol=1e-10, atol=1e-12)
    for got, want in zip(
        torch.autograd.grad(loss, [q, k, t, bias]),
        torch.autograd.grad(ref, [q, k, t, bias]),
        strict=True,
    ):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("engine", ["auto", "streaming"])
def test_world_of_one_keeps_float32_logits_under_autocast(engine):
    """An enclosing torch.autocast(bfloat16) must not lower the gathered / ring blocks (nor the
    extra negatives' logits) to bfloat16: at tau = 0.01 that costs ~1e-3 of the loss."""
    g = torch.Generator().manual_seed(5)
    q64 = torch.randn(6, 8, generator=g, dtype=F64)
    k64 = torch.randn(6, 8, generator=g, dtype=F64)
    n64 = torch.randn(6, 3, 8, generator=g, dtype=F64)
    ref = _ref_direction(
        q64, k64, lambda i, j: float(i == j), lambda i, j: False, 0.01, "out", False, 0.0,
        lambda i: list(n64[i]), "cosine",
    )  # fmt: skip
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = info_nce(
            q64.float(), k64.float(), negatives=n64.float(), temperature=0.01,
            distributed=True, engine=engine,
        )  # fmt: skip
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss.double(), ref, rtol=2e-5, atol=1e-5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = siglip(q64.float(), k64.float(), scale=100.0, bias=-10.0, distributed=True,
                      engine=engine)  # fmt: skip
    ref = _ref_sigmoid(q64, k64, lambda i, j: float(i == j), 100.0, -10.0, "cosine")
    torch.testing.assert_close(loss.double(), ref, rtol=2e-5, atol=1e-5)


@pytest.mark.parametrize("variant", ["out", "in"])
def test_ring_gradcheck(variant):
    g = torch.Generator().manual_seed(0)
    q = torch.randn(3, 4, generator=g, dtype=F64, requires_grad=True)
    k = torch.randn(4, 4, generator=g, dtype=F64, requires_grad=True)
    neg = torch.randn(3, 2, 4, generator=g, dtype=F64, requires_grad=True)
    tau = torch.tensor(0.4, dtype=F64, requires_grad=True)
    labels, key_labels = torch.tensor([0, 1, 0]), torch.tensor([0, 1, 1, 0])

    def f(q, k, neg, tau):
        return info_nce(
            q, k, labels=labels, key_labels=key_labels, negatives=neg, temperature=tau,
            variant=variant, margin=0.1, symmetric=True, distributed=True, engine="streaming",
        )  # fmt: skip

    assert torch.autograd.gradcheck(f, (q, k, neg, tau))
    bias = torch.tensor(-1.0, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda q, k, s, b: siglip(q, k, scale=s, bias=b, distributed=True, engine="streaming"),
        (q, k[:3], tau * 10, bias),
    )


def test_world_of_one_wrappers_equal_plain_losses():
    g = torch.Generator().manual_seed(5)
    z1, z2 = torch.randn(6, 4, generator=g), torch.randn(6, 4, generator=g)
    feats, labels = torch.randn(6, 2, 4, generator=g), torch.tensor([0, 0, 1, 1, 2, 2])
    assert torch.equal(nt_xent(z1, z2, distributed=True), nt_xent(z1, z2))
    assert torch.equal(supcon(feats, labels, distributed=True), supcon(feats, labels))
    assert torch.equal(supcon(feats, distributed=True), supcon(feats))
    assert torch.equal(NTXent(distributed=True)(z1, z2), NTXent()(z1, z2))
    assert torch.equal(SupCon(distributed=True)(feats, labels), SupCon()(feats, labels))
    assert torch.equal(SigLIP(distributed=True)(z1, z2), SigLIP()(z1, z2))
    clip = InfoNCELoss(symmetric=True, distributed=True)
    assert torch.equal(clip(z1, z2), InfoNCELoss(symmetric=True)(z1, z2))
    assert "distributed=True" in repr(clip)


def test_distributed_argument_errors():
    q, k = torch.randn(4, 3), torch.randn(4, 3)
    with pytest.raises(ValueError, match="engine='fused' does not run with distributed=True"):
        info_nce(q, k, distributed=True, engine="fused")
    with pytest.raises(ValueError, match="ring .* supports diagonal and label pairings"):
        info_nce(
            q, k, positives=torch.eye(4, dtype=torch.bool), distributed=True, engine="streaming"
        )
    with pytest.raises(ValueError, match="ring .* supports diagonal and label pairings"):
        siglip(q, k, exclude=torch.eye(4, dtype=torch.bool), distributed=True, engine="streaming")
    with pytest.raises(ValueError, match="rank 0: labels must have 4 rows"):
        info_nce(q, k, labels=torch.arange(5), distributed=True)
    with pytest.raises(
        ValueError, match=r"positives on rank 0 has shape \(4, 5\), expected \(4, 4\)"
    ):
        info_nce(q, k, positives=torch.ones(4, 5), distributed=True)
    with pytest.raises(ValueError, match="no row of the global batch has both"):
        info_nce(q, labels=torch.arange(4), distributed=True)


def test_collectives_in_a_world_of_one():
    x = torch.randn(3, 2, requires_grad=True)
    assert cdist.all_gather(x) is x
    assert cdist.all_reduce_sum(x) is x
    assert cdist.sync_replicated(x) is x
    assert cdist.row_offset(3) == (0, 3, [3])
    assert cdist.get_rank() == 0 and cdist.get_world_size() == 1 and not cdist.is_initialized()
    assert cdist.ring_shift([x], [(3, 2)])[0] is x
    metas = cdist.exchange_meta({"a": x, "b": None, "c": torch.zeros(2, dtype=torch.int64)})
    assert metas == [{"a": ((3, 2), torch.float32), "b": None, "c": ((2,), torch.int64)}]
    with pytest.raises(ValueError, match="rank 0: broken"):
        cdist.exchange_meta({"a": x}, error="broken")


def test_timeout_setting():
    old = cdist.get_timeout()
    try:
        cdist.set_timeout(3)
        assert cdist.get_timeout() == 3.0
        cdist.set_timeout(None)
        assert cdist.get_timeout() is None
        with pytest.raises(ValueError, match="seconds must be > 0"):
            cdist.set_timeout(0)
        with pytest.raises(TypeError, match="seconds must be a number"):
            cdist.set_timeout("10")
        # an infinite wait is not a timeout (datetime.timedelta cannot hold it): None is
        with pytest.raises(ValueError, match="seconds must be > 0 and finite"):
            cdist.set_timeout(math.inf)
        assert cdist.get_timeout() is None
    finally:
        cdist.set_timeout(old)


@pytest.mark.parametrize("engine", ["auto", "streaming"])
def test_world_of_one_without_finite_checks_gives_zero_like_the_plain_loss(engine):
    # set_finite_checks(False): a batch without a valid row gives 0 instead of a ValueError,
    # with distributed=True as without (contrastkit._validation.set_finite_checks).
    import contrastkit

    q = torch.randn(4, 3, generator=torch.Generator().manual_seed(2), dtype=F64)
    contrastkit.set_finite_checks(False)
    try:
        for reduction in ("mean", "sum"):
            for symmetric in (False, True):
                loss = info_nce(
                    q, labels=torch.arange(4), symmetric=symmetric, reduction=reduction,
                    distributed=True, engine=engine,
                )  # fmt: skip
                assert float(loss) == 0.0, (reduction, symmetric, loss)
    finally:
        contrastkit.set_finite_checks(True)


def test_init_process_group_outside_torchrun_is_a_world_of_one(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    old = cdist.get_timeout()
    try:
        rank, world, device = cdist.init_process_group(backend="gloo", timeout=30)
        assert (rank, world, device.type) == (0, 1, "cpu")
        assert not cdist.is_initialized()  # nothing was started, nothing waits for a peer
        assert cdist.get_timeout() == 30.0
        q = torch.randn(4, 3, dtype=F64)
        assert torch.equal(cdist.all_gather(q), q)
    finally:
        cdist.set_timeout(old)
