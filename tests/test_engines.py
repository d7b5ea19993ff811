"""The streaming engine (and ``engine="auto"``) against the dense engine.

Every case compares the per-row losses, the validity masks and the gradients of every input
(query, key, extra negatives, the scale, the bias) under a random upstream gradient, with a tile
small enough that every loop runs over several tiles and a ragged last tile.

Tolerances: float64 to 1e-10.  float32 to 1e-5 relative (max abs error / max abs value) for the
losses and the embedding gradients.  The scalar gradients (``dLoss/dscale``, ``dLoss/dbias``) are
sums over all ``B x N`` pairs that can cancel to almost nothing, where no float32 engine (the
dense one included, ~1e-5..2e-5 typical) reaches 1e-5 relative; there the error against a
float64 reference must be within ``SCALAR_RTOL`` relative, or within twice the dense engine's
error, or within ``SCALAR_ATOL`` of the a-priori bound ``sum_i |g_i| * row_bound * max|s_ij|``
(``row_bound`` = 2 for InfoNCE, whose per-row logit gradients sum to at most 2 in absolute value;
``N`` for the sigmoid loss).
"""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from contrastkit import functional as CF
from contrastkit import losses
from contrastkit.engine import ENGINES, choose, dense, select_engine, streaming
from contrastkit.objectives.infonce import InfoNCESpec
from contrastkit.pairing import Pairing

TILE = 4
SCALAR_RTOL = 5e-5
SCALAR_ATOL = 1e-6  # times the a-priori bound (observed: < 1e-7 for every engine)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-300))


def infonce(engine, query, key, pairing, scale, spec, negatives=None, shared=None, both=True, **kw):
    """Row losses, validity masks and the gradients of sum(row losses * random weights)."""
    leaves = [t.detach().clone().requires_grad_() for t in (query, key, scale)]
    extra = [
        None if t is None else t.detach().clone().requires_grad_() for t in (negatives, shared)
    ]
    key_in = leaves[0] if key is query else leaves[1]
    rows = engine.infonce_rows(leaves[0], key_in, pairing, leaves[2], spec, *extra, both, **kw)
    total = sum((loss * w).sum() for (loss, _), w in zip(rows, upstream(rows), strict=True))
    # gradients of query, key (unless key is query), the negatives, then the scale
    inputs = [leaves[0]] + ([] if key is query else [leaves[1]]) + extra + [leaves[2]]
    inputs = [t for t in inputs if t is not None]
    grads = torch.autograd.grad(total, inputs)
    return [r for r, _ in rows], [v for _, v in rows], list(grads)


def sigmoid(engine, query, key, pairing, scale, bias, similarity, **kw):
    leaves = [t.detach().clone().requires_grad_() for t in (query, key, scale, bias)]
    rows = engine.sigmoid_rows(*leaves[:2], pairing, leaves[2], leaves[3], similarity, **kw)
    total = (rows * upstream([(rows, None)])[0]).sum()
    return [rows], [], list(torch.autograd.grad(total, leaves))


def upstream(rows) -> list[torch.Tensor]:
    """The fixed random upstream gradients of the row losses."""
    gen = torch.Generator().manual_seed(1)
    return [torch.randn(r.shape, generator=gen).to(r.dtype).to(r.device) for r, _ in rows]


def assert_matches_dense(engine, run, args, n_scalars, row_bound, **kwargs):
    """``run(engine, *args)`` equals ``run(dense, *args)``: losses, validity, every gradient (the
    last ``n_scalars`` gradients are the scalar ones)."""
    ref_loss, ref_valid, ref_grads = run(dense, *args)
    loss, valid, grads = run(engine, *args, **kwargs)
    for v, rv in zip(valid, ref_valid, strict=True):
        assert torch.equal(v.cpu(), rv.cpu())
    if loss[0].dtype == torch.float64:
        for a, b in zip(loss + grads, ref_loss + ref_grads, strict=True):
            assert a.dtype == b.dtype and _rel(a, b) <= 1e-10
        return
    n_emb = len(grads) - n_scalars
    doubled = {id(a): a.double() for a in args if torch.is_tensor(a) and a.is_floating_point()}
    truth = run(dense, *[doubled.get(id(a), a) for a in args])[2]  # keeps ``key is query``
    for a, b in zip(loss, ref_loss, strict=True):
        assert a.dtype == b.dtype and torch.isfinite(a).all() and _rel(a, b) <= 1e-5
    float32_limit = torch.finfo(torch.float32).eps * _max_logit(args)
    for a, b, t in zip(grads[:n_emb], ref_grads[:n_emb], truth[:n_emb], strict=True):
        assert a.dtype == b.dtype and torch.isfinite(a).all()
        # equal to the dense engine, or as close to the float64 truth as float32 logits of this
        # size allow (a float32 log-sum-exp of logits ~|l| is off by ~eps |l|, and so is p_ij)
        assert _rel(a, b) <= 1e-5 or _rel(a, t) <= max(2 * _rel(b, t), float32_limit)
    bound = _scalar_bound(args, [(r, None) for r in loss], row_bound)
    for a, b, t in zip(grads[n_emb:], ref_grads[n_emb:], truth[n_emb:], strict=True):
        err, ref_err = abs(float(a) - float(t)), abs(float(b) - float(t))
        assert err <= max(SCALAR_RTOL * abs(float(t)), 2 * ref_err, SCALAR_ATOL * bound)


def _max_logit(args) -> float:
    """``max |scale * s(q_i, k_j)|`` of a case, in float64."""
    from contrastkit.similarity import pairwise_similarity, prepare

    similarity = next(
        (a.similarity for a in args if isinstance(a, InfoNCESpec)),
        next((a for a in args if isinstance(a, str)), "cosine"),
    )
    q, k = (prepare(a.double(), similarity) for a in args[:2])
    scale = next(a for a in args[2:] if torch.is_tensor(a) and a.dim() == 0)
    return float(pairwise_similarity(q, k, similarity).abs().max() * scale.double().abs())


def _scalar_bound(args, rows, row_bound) -> float:
    """``sum_i |g_i| * row_bound * max|s|``, with ``max|s|`` bounded through the norms."""
    similarity = next(
        (a.similarity for a in args if isinstance(a, InfoNCESpec)),
        next((a for a in args if isinstance(a, str)), "cosine"),
    )
    norms = [a.double().norm(dim=-1).max() for a in args if torch.is_tensor(a) and a.dim() >= 2]
    r = float(max(norms))
    s_max = {"cosine": 1.0, "dot": r * r, "neg_sq_euclidean": 4 * r * r}[similarity]
    g = sum(float(w.abs().sum()) for w in upstream(rows))
    return g * row_bound * s_max


def make_pairing(kind: str, b: int, n: int, dtype=torch.float64):
    """(pairing, key rows); "self" contrasts a set with itself (key is query)."""
    if kind == "diagonal":
        return Pairing.diagonal(b, n), n
    if kind == "labels":
        return Pairing.from_labels(torch.randint(0, 3, (b,)), torch.randint(0, 3, (n,))), n
    if kind == "self":
        return Pairing.from_labels(torch.randint(0, 4, (b,)), exclude_self=True), b
    soft = torch.rand(b, n, dtype=dtype) * (torch.rand(b, n) < 0.3)
    return Pairing.from_matrix(soft, exclude=torch.rand(b, n) < 0.2), n


OPTIONS = {
    "plain": {},
    "decoupled": dict(decoupled=True),
    "margin": dict(margin=0.3),
    "negatives": dict(negatives=True),
    "dot": dict(similarity="dot"),
    "euclid": dict(similarity="neg_sq_euclidean"),
}


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("option", list(OPTIONS))
@pytest.mark.parametrize("variant", ["out", "in"])
@pytest.mark.parametrize("kind", ["diagonal", "labels", "self", "matrix"])
def test_streaming_infonce_equals_dense(kind, variant, option, dtype):
    opts = dict(OPTIONS[option])
    b, d = 13, 5
    pairing, n = make_pairing(kind, b, 17, dtype)
    query = torch.randn(b, d, dtype=dtype)
    key = query if kind == "self" else torch.randn(n, d, dtype=dtype)
    sim = opts.pop("similarity", "cosine")
    scale = torch.tensor({"cosine": 14.0, "dot": 2.0, "neg_sq_euclidean": 0.4}[sim], dtype=dtype)
    negs = shared = None
    if opts.pop("negatives", False):
        negs, shared = torch.randn(b, 3, d, dtype=dtype), torch.randn(6, d, dtype=dtype)
    spec = InfoNCESpec(similarity=sim, variant=variant, **opts)
    args = (query, key, pairing, scale, spec, negs, shared)
    assert_matches_dense(streaming, infonce, args, 1, 2, tile=TILE)


@pytest.mark.parametrize("both", [False, True])
def test_one_direction_and_more_keys_or_more_queries(both):
    scale = torch.tensor(5.0, dtype=torch.float64)
    few, many = torch.randn(7, 6, dtype=torch.float64), torch.randn(19, 6, dtype=torch.float64)
    cases = [
        (few, many, Pairing.diagonal(7, 19)),
        (few, many, Pairing.from_labels(torch.arange(7) % 2, torch.arange(19) % 3)),
        (many, few, Pairing.from_labels(torch.arange(19) % 3, torch.arange(7) % 2)),
    ]
    for query, key, pairing in cases:
        args = (query, key, pairing, scale, InfoNCESpec(), None, None, both)
        assert_matches_dense(streaming, infonce, args, 1, 2, tile=3)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("decoupled", [False, True])
@pytest.mark.parametrize("variant", ["out", "in"])
def test_rows_with_every_key_positive_and_rows_with_none(variant, decoupled, dtype):
    # queries labelled 0 match every key, the others none
    query_labels = torch.tensor([0, 1, 0, 1, 2, 0, 2])
    key_labels = torch.zeros(9, dtype=torch.long)
    pairing = Pairing.from_labels(query_labels, key_labels)
    query, key = torch.randn(7, 4, dtype=dtype), torch.randn(9, 4, dtype=dtype)
    spec = InfoNCESpec(variant=variant, decoupled=decoupled)
    args = (query, key, pairing, torch.tensor(10.0, dtype=dtype), spec)
    assert_matches_dense(streaming, infonce, args, 1, 2, tile=TILE)
    _, valid, _ = infonce(streaming, *args, tile=TILE)
    assert not valid[0][1] and not valid[0][4]
    assert bool(valid[0][0]) is not decoupled  # every key positive: no denominator if decoupled


@pytest.mark.parametrize("similarity", ["cosine", "dot"])
def test_temperature_001_and_huge_logits_do_not_overflow(similarity):
    query, key = 6 * torch.randn(40, 16), 6 * torch.randn(40, 16)  # dot logits reach ~1e4
    labels = torch.randint(0, 5, (40,))
    scale = torch.tensor(100.0)  # temperature 0.01
    for pairing in (Pairing.diagonal(40), Pairing.from_labels(labels)):
        for variant in ("out", "in"):
            spec = InfoNCESpec(similarity=similarity, variant=variant)
            args = (query, key, pairing, scale, spec)
            assert_matches_dense(streaming, infonce, args, 1, 2, tile=16)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_inputs_accumulate_in_float32(dtype):
    query, key = torch.randn(30, 16).to(dtype), torch.randn(30, 16).to(dtype)
    args = (query, key, Pairing.diagonal(30), torch.tensor(100.0), InfoNCESpec())
    loss, _, grads = infonce(streaming, *args, tile=8)
    ref_loss, _, ref_grads = infonce(dense, *args)
    assert loss[0].dtype == torch.float32 and torch.isfinite(loss[0]).all()
    assert _rel(loss[0], ref_loss[0]) <= 1e-5
    for g, rg in zip(grads, ref_grads, strict=True):
        assert g.dtype == rg.dtype and torch.isfinite(g).all()
        assert _rel(g, rg) <= 1e-2  # the gradients are rounded to the input dtype


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("kind", ["diagonal", "labels", "self", "matrix"])
@pytest.mark.parametrize("similarity", ["cosine", "dot", "neg_sq_euclidean"])
def test_streaming_sigmoid_equals_dense(similarity, kind, dtype):
    b, d = 13, 5
    pairing, n = make_pairing(kind, b, 17, dtype)
    query = torch.randn(b, d, dtype=dtype)
    key = query if kind == "self" else torch.randn(n, d, dtype=dtype)
    scale = torch.tensor(10.0 if similarity == "cosine" else 0.7, dtype=dtype)
    bias = torch.tensor(-3.0, dtype=dtype)
    args = (query, key, pairing, scale, bias, similarity)
    assert_matches_dense(streaming, sigmoid, args, 2, n, tile=TILE)


def test_gradcheck_streaming():
    q = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    k = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    negs = torch.randn(5, 2, 3, dtype=torch.float64, requires_grad=True)
    shared = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    scale = torch.tensor(3.0, dtype=torch.float64, requires_grad=True)
    bias = torch.tensor(-1.0, dtype=torch.float64, requires_grad=True)
    labels = Pairing.from_labels(torch.tensor([0, 1, 0, 2, 1]), torch.tensor([0, 1, 1, 2, 0, 3]))
    for variant in ("out", "in"):
        spec = InfoNCESpec(variant=variant, margin=0.1)

        def f(q, k, scale, negs, shared, spec=spec):
            rows = streaming.infonce_rows(q, k, labels, scale, spec, negs, shared, True, tile=2)
            return torch.cat([r for r, _ in rows])

        assert torch.autograd.gradcheck(f, (q, k, scale, negs, shared))

    def g(q, k, scale, bias):
        return streaming.sigmoid_rows(q, k, labels, scale, bias, "dot", tile=4)

    assert torch.autograd.gradcheck(g, (q, k, scale, bias))


class _LargestTensor(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


@pytest.mark.parametrize("variant", ["out", "in"])
def test_streaming_never_materialises_the_logits(variant):
    b, d, tile = 96, 4, 16
    query = torch.randn(b, d, requires_grad=True)
    key = torch.randn(b, d, requires_grad=True)
    shared = torch.randn(b, d, requires_grad=True)
    pairing = Pairing.from_labels(torch.randint(0, 6, (b,)))
    spec = InfoNCESpec(variant=variant)
    with _LargestTensor() as mode:
        rows = streaming.infonce_rows(
            query, key, pairing, 10.0, spec, None, shared, True, tile=tile
        )
        sum(r.sum() for r, _ in rows).backward()
    assert mode.largest <= max(b * d, tile * tile) < b * b // 4
    with _LargestTensor() as mode:
        streaming.sigmoid_rows(
            query, key, pairing, 10.0, -5.0, "cosine", tile=tile
        ).sum().backward()
    assert mode.largest <= max(b * d, tile * tile)


def test_streaming_is_deterministic():
    query, key = torch.randn(50, 8), torch.randn(50, 8)
    args = (
        query,
        key,
        Pairing.from_labels(torch.arange(50) % 7),
        torch.tensor(20.0),
        InfoNCESpec(),
    )
    first, second = infonce(streaming, *args, tile=16), infonce(streaming, *args, tile=16)
    for a, b in zip(first[0] + first[2], second[0] + second[2], strict=True):
        assert torch.equal(a, b)


def test_losses_with_streaming_engine_equal_dense(monkeypatch):
    monkeypatch.setattr(streaming, "DEFAULT_TILE", 8)
    torch.manual_seed(3)
    x, y, negatives = torch.randn(21, 10), torch.randn(21, 10), torch.randn(5, 10)
    labels = torch.randint(0, 4, (21,))
    calls = {
        "info_nce": lambda e: CF.info_nce(x, y, symmetric=True, engine=e),
        "info_nce labels negatives": lambda e: CF.info_nce(
            x, y, labels=labels, negatives=negatives, variant="in", engine=e
        ),
        "nt_xent": lambda e: CF.nt_xent(x, y, engine=e),
        "supcon": lambda e: CF.supcon(torch.stack([x, y], 1), labels, engine=e),
        "siglip": lambda e: CF.siglip(x, y, labels=labels, engine=e),
    }
    for name, call in calls.items():
        assert abs(float(call("streaming")) - float(call("dense"))) <= 1e-5 * abs(
            float(call("dense"))
        ), name

    grads = {}
    for engine in ("dense", "streaming"):
        loss_fn = losses.InfoNCE(0.05, symmetric=True, learnable_temperature=True, engine=engine)
        loss_fn(x, y).backward()
        grads[engine] = loss_fn.logit_scale.logit_scale.grad
    assert _rel(grads["streaming"], grads["dense"]) <= 1e-4


def test_streaming_rejects_bad_tiles_and_differentiable_weights():
    q, k = torch.randn(4, 3), torch.randn(4, 3)
    with pytest.raises(ValueError, match="tile"):
        streaming.infonce_rows(q, k, Pairing.diagonal(4), 1.0, InfoNCESpec(), tile=0)
    with pytest.raises(ValueError, match="tile"):
        streaming.sigmoid_rows(q, k, Pairing.diagonal(4), 1.0, 0.0, "cosine", tile=2.5)
    soft = torch.rand(4, 4, requires_grad=True)
    with pytest.raises(ValueError, match="positives"):
        streaming.infonce_rows(q, k, Pairing.from_matrix(soft), 1.0, InfoNCESpec())
    with pytest.raises(ValueError, match="engine"):
        select_engine("bogus", q, k)


def test_auto_picks_streaming_for_large_logits(monkeypatch):
    q, k = torch.randn(64, 8), torch.randn(64, 8)
    assert select_engine("auto", q, k) is ENGINES["auto"]
    assert choose(q, k, Pairing.diagonal(64)) is dense
    monkeypatch.setattr("contrastkit.engine.STREAMING_MIN_LOGITS", 64 * 63)
    assert choose(q, k, Pairing.diagonal(64)) is streaming
    soft = torch.rand(64, 64, requires_grad=True)
    assert choose(q, k, Pairing.from_matrix(soft)) is dense  # streaming can't differentiate it
    # and the auto engine's result is the streaming engine's
    auto_loss = CF.info_nce(q, k, engine="auto")
    assert float(auto_loss) == float(CF.info_nce(q, k, engine="streaming"))


@pytest.mark.parametrize("option", ["plain", "decoupled", "margin"])
@pytest.mark.parametrize("variant", ["out", "in"])
def test_accelerator_path_keeps_empty_tiles_and_agrees(monkeypatch, variant, option):
    """On a GPU the streaming engine does not ask each tile whether it holds a positive (a host
    sync per tile): it computes the positive terms of every tile, exact zeros where there are
    none.  Forced on the CPU, that path equals the dense engine and the CPU path."""
    import importlib

    streaming_module = importlib.import_module("contrastkit.engine.streaming")
    # rows 0-1 (a whole row tile) and 4 have no positive; label-0 rows match every key
    pairing = Pairing.from_labels(
        torch.tensor([1, 1, 0, 0, 2, 0, 0, 1]), torch.tensor([0, 0, 0, 3, 3, 0, 0, 0, 3])
    )
    query, key = torch.randn(8, 4, dtype=torch.float64), torch.randn(9, 4, dtype=torch.float64)
    spec = InfoNCESpec(variant=variant, **dict(OPTIONS[option]))
    args = (query, key, pairing, torch.tensor(10.0, dtype=torch.float64), spec)
    skipping = infonce(streaming, *args, tile=2)
    monkeypatch.setattr(streaming_module, "SKIP_EMPTY_TILES_ON", ())
    tiles = []
    tile_init = streaming_module._Tile.__init__

    def recording_init(self, *a, **kw):
        tile_init(self, *a, **kw)
        tiles.append(self.w is not None and not bool(self.pos.any()))

    monkeypatch.setattr(streaming_module._Tile, "__init__", recording_init)
    keeping = infonce(streaming, *args, tile=2)
    assert any(tiles), "no tile without positives was computed: the case does not test the path"
    for a, b in zip(sum(skipping, []), sum(keeping, []), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    assert_matches_dense(streaming, infonce, args, 1, 2, tile=2)


@pytest.mark.parametrize("engine", ["dense", "streaming"])
def test_autocast_does_not_lower_the_float32_accumulation(engine, monkeypatch):
    # An enclosing torch.autocast(bfloat16) must not turn the losses' float32 matmuls into
    # bfloat16 ones (logits of 100 at tau = 0.01 would be off by up to 0.25).
    from reference import infonce_reference, siglip_reference, supcon_reference

    monkeypatch.setattr(streaming, "DEFAULT_TILE", TILE)
    g = torch.Generator().manual_seed(0)
    q64, k64 = torch.randn(6, 8, generator=g).double(), torch.randn(6, 8, generator=g).double()
    labels = torch.tensor([0, 1, 0, 1, 2, 2])
    both = labels.repeat(2)
    diag = dict(positive=lambda i, j: float(i == j), excluded=lambda i, j: False, tau=0.01)
    same = dict(positive=lambda i, j: float(both[i] == both[j]), tau=0.01)

    def both_directions(q, k):
        return 0.5 * (infonce_reference(q, k, **diag) + infonce_reference(k, q, **diag))

    cases = [
        (
            lambda q, k: CF.info_nce(q, k, temperature=0.01, symmetric=True, engine=engine),
            both_directions,
        ),
        (
            lambda q, k: CF.info_nce(
                torch.cat([q, k]), labels=both, temperature=0.01, engine=engine
            ),
            lambda q, k: infonce_reference(
                torch.cat([q, k]), torch.cat([q, k]), excluded=lambda i, j: i == j, **same
            ),
        ),
        (
            lambda q, k: CF.supcon(torch.stack([q, k], 1), labels, temperature=0.01, engine=engine),
            lambda q, k: supcon_reference(torch.stack([q, k], 1), labels, 0.01),
        ),
        (
            lambda q, k: CF.siglip(q, k, scale=100.0, bias=-10.0, engine=engine),
            lambda q, k: siglip_reference(q, k, 100.0, -10.0, lambda i, j: i == j),
        ),
    ]
    for lib, ref_fn in cases:
        q, k = q64.float().requires_grad_(), k64.float().requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = lib(q, k)
            # backward outside the autocast region, as the AMP recipe has it; the streaming
            # engine's own backward recomputes its tiles in float32 even inside one
            if engine == "streaming":
                grads = torch.autograd.grad(loss, [q, k], retain_graph=True)
        outside = torch.autograd.grad(loss, [q, k])
        if engine != "streaming":
            grads = outside
        for a, b in zip(grads, outside, strict=True):
            assert _rel(a, b) < 1e-6
        assert loss.dtype == torch.float32 and all(g.dtype == torch.float32 for g in grads)
        rq, rk = q64.clone().requires_grad_(), k64.clone().requires_grad_()
        ref = ref_fn(rq, rk)
        ref_grads = torch.autograd.grad(ref, [rq, rk])
        loss, ref = float(loss.detach()), float(ref.detach())
        assert abs(loss - ref) <= 1e-5 * abs(ref) + 1e-5
        for got, want in zip(grads, ref_grads, strict=True):
            assert _rel(got, want) < 1e-4
