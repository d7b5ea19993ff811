"""Multi-process exactness of ``distributed=True``: real gloo process groups on the CPU.

Each spawn runs many checks in its processes (process start-up dominates the cost).  Every check
builds a global float64 batch from a fixed seed, gives each rank its rows (uneven: rank ``r``
holds ``3 + r`` queries), and compares with one process on the concatenated batch:

- the loss, the same on every rank;
- each rank's input gradients = ``world_size x`` the single-process gradient of its rows (the
  documented scale, which DDP's averaging turns into the single-process parameter gradient);
- learnable temperature / scale / bias gradients = the single-process gradient on every rank.

Plus two DistributedDataParallel steps of a tiny dual encoder equal one process with the global
batch, GradCache with a distributed loss, cross-rank shape/dtype mismatches, a hung rank and a dead
rank.
"""

from __future__ import annotations

import os
import tempfile
import time
import traceback
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

import contrastkit.distributed as cdist
from contrastkit.functional import info_nce, nt_xent, siglip, supcon
from contrastkit.losses import InfoNCE
from contrastkit.negatives import NegativeQueue, sycon_loss
from contrastkit.objectives.margin import circle_loss
from contrastkit.objectives.soft import cwcl
from contrastkit.training import grad_cache_step

TOL = 1e-6
F64 = torch.float64


# -- the harness -------------------------------------------------------------------------------
def _entry(rank: int, world: int, init_file: str, out_dir: str, scenario: str) -> None:
    torch.set_num_threads(1)
    results: dict = {}
    try:
        dist.init_process_group(
            "gloo", init_method=f"file://{init_file}", rank=rank, world_size=world
        )
        cdist.set_timeout(60)
        results["_path"] = os.path.join(out_dir, f"rank{rank}.pt")
        SCENARIOS[scenario](rank, world, results)
    except BaseException:  # noqa: BLE001 - reported to the parent
        results["error"] = traceback.format_exc()
    results.pop("_path", None)
    torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    os._exit(0)  # skip process-group teardown (hangs when a peer is gone)


def _spawn(scenario: str, world: int, deadline: float = 120.0) -> list[dict]:
    with tempfile.TemporaryDirectory() as tmp:
        init_file = os.path.join(tmp, "init")
        ctx = mp.start_processes(
            _entry,
            args=(world, init_file, tmp, scenario),
            nprocs=world,
            join=False,
            start_method="spawn",
        )
        start = time.monotonic()
        while not ctx.join(timeout=1.0):
            if time.monotonic() - start > deadline:
                for p in ctx.processes:
                    p.kill()
                raise AssertionError(f"scenario {scenario} with {world} ranks hung")
        out = []
        for r in range(world):
            path = Path(tmp) / f"rank{r}.pt"
            assert path.exists(), f"rank {r} wrote no result"
            out.append(torch.load(path, weights_only=False))
    for r, res in enumerate(out):
        assert "error" not in res, f"rank {r} failed:\n{res['error']}"
    return out


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-300))


# -- exactness checks (run inside the ranks) ---------------------------------------------------
def _sizes(world: int, extra: int = 0) -> list[int]:
    return [3 + r + extra for r in range(world)]


def _rows(t: torch.Tensor, sizes: list[int], rank: int) -> torch.Tensor:
    start = sum(sizes[:rank])
    return t[start : start + sizes[rank]]


def _eng(engine: str, kw: dict) -> str:
    """The engine under test with distributed=True; the dense reference otherwise."""
    return engine if kw["distributed"] else "auto"


def _compare(call, inputs: dict, world: int, rank: int, out: dict, name: str) -> None:
    """``inputs``: name -> (global tensor, rows per rank, requires grad); rows ``None``: the
    same tensor on every rank, whose gradient is the whole gradient on every rank (temperature,
    scale, bias); ``"shared"``: the same on every rank, each rank getting its share."""
    glob = {k: (t.clone().requires_grad_(g) if g else t) for k, (t, _, g) in inputs.items()}
    diff = [k for k, (_, _, g) in inputs.items() if g]
    ref = call(distributed=False, **glob)
    ref_grads = torch.autograd.grad(ref, [glob[k] for k in diff])
    loc = {}
    for k, (t, sizes, g) in inputs.items():
        t = t if sizes in (None, "shared") else _rows(t, sizes, rank)
        loc[k] = t.detach().clone().requires_grad_(g) if g else t
    loss = call(distributed=True, **loc)
    grads = torch.autograd.grad(loss, [loc[k] for k in diff])
    errs = {"loss": _rel(loss.detach(), ref.detach())}
    for k, g, rg in zip(diff, grads, ref_grads, strict=True):
        sizes = inputs[k][1]
        if sizes == "shared":  # every rank's copy gets its share; DDP's mean is the gradient
            g = g.clone()
            dist.all_reduce(g)
            errs[k] = _rel(g / world, rg)
        else:
            expect = rg if sizes is None else world * _rows(rg, sizes, rank)
            errs[k] = _rel(g, expect)
    out[name] = {"errs": errs, "loss": float(loss.detach())}


def _exactness(rank: int, world: int, out: dict) -> None:
    g = torch.Generator().manual_seed(1234 + world)
    d = 5
    qs, ks = _sizes(world), _sizes(world, extra=1)
    B, N = sum(qs), sum(ks)

    def randn(*shape):
        return torch.randn(*shape, generator=g, dtype=F64)

    q, k = randn(B, d), randn(N, d)
    qb = randn(B, d)  # paired keys (N = B)
    lab, klab = torch.randint(0, 3, (B,), generator=g), torch.randint(0, 3, (N,), generator=g)
    tau = torch.tensor(0.3, dtype=F64)
    for engine in ("auto", "streaming"):
        _compare(
            lambda query, key, temperature, e=engine, **kw: info_nce(
                query, key, temperature=temperature, symmetric=True, engine=_eng(e, kw), **kw
            ),
            {"query": (q, qs, True), "key": (qb, qs, True), "temperature": (tau, None, True)},
            world,
            rank,
            out,
            f"clip-{engine}",
        )
        _compare(
            lambda query, key, labels, key_labels, negatives, temperature, e=engine, **kw: info_nce(
                query,
                key,
                labels=labels,
                key_labels=key_labels,
                negatives=negatives,
                temperature=temperature,
                variant="in",
                decoupled=True,
                margin=0.1,
                symmetric=True,
                engine=_eng(e, kw),
                **kw,
            ),
            {
                "query": (q, qs, True),
                "key": (k, ks, True),
                "labels": (lab, qs, False),
                "key_labels": (klab, ks, False),
                "negatives": (randn(B, 2, d), qs, True),
                "temperature": (tau, None, True),
            },
            world,
            rank,
            out,
            f"labels-in-{engine}",
        )
        _compare(
            lambda query, key, negatives, e=engine, **kw: info_nce(
                query,
                key,
                negatives=negatives,
                similarity="neg_sq_euclidean",
                temperature=2.0,
                engine=_eng(e, kw),
                **kw,
            ),
            {
                "query": (q, qs, True),
                "key": (k, ks, True),
                "negatives": (randn(4, d), "shared", True),
            },
            world,
            rank,
            out,
            f"uneven-keys-shared-negatives-{engine}",
        )
        _compare(
            lambda query, labels, e=engine, **kw: info_nce(
                query, labels=labels, temperature=0.2, symmetric=True, engine=_eng(e, kw), **kw
            ),
            {"query": (q, qs, True), "labels": (lab, qs, False)},
            world,
            rank,
            out,
            f"same-set-{engine}",
        )
        _compare(
            lambda query, key, labels, key_labels, scale, bias, e=engine, **kw: siglip(
                query,
                key,
                labels=labels,
                key_labels=key_labels,
                scale=scale,
                bias=bias,
                engine=_eng(e, kw),
                **kw,
            ),
            {
                "query": (q, qs, True),
                "key": (k, ks, True),
                "labels": (lab, qs, False),
                "key_labels": (klab, ks, False),
                "scale": (torch.tensor(5.0, dtype=F64), None, True),
                "bias": (torch.tensor(-2.0, dtype=F64), None, True),
            },
            world,
            rank,
            out,
            f"siglip-{engine}",
        )
    for engine in ("auto", "streaming"):  # reduction="none": this rank's rows of the global rows
        ref_rows = info_nce(q, k, labels=lab, key_labels=klab, reduction="none")
        rows = info_nce(
            _rows(q, qs, rank),
            _rows(k, ks, rank),
            labels=_rows(lab, qs, rank),
            key_labels=_rows(klab, ks, rank),
            reduction="none",
            distributed=True,
            engine=engine,
        )
        out[f"rows-none-{engine}"] = _rel(rows, _rows(ref_rows, qs, rank))
    soft = torch.rand(B, N, generator=g, dtype=F64) * (torch.rand(B, N, generator=g) < 0.3)
    soft[torch.arange(B), torch.arange(B)] = 1.0
    excl = torch.rand(B, N, generator=g) < 0.1
    excl[torch.arange(B), torch.arange(B)] = False
    _compare(
        lambda query, key, positives, exclude, **kw: info_nce(
            query,
            key,
            positives=positives,
            exclude=exclude,
            symmetric=True,
            reduction="sum",
            **kw,
        ),
        {
            "query": (q, qs, True),
            "key": (k, ks, True),
            "positives": (soft, qs, False),
            "exclude": (excl, qs, False),
        },
        world,
        rank,
        out,
        "soft-positives-exclude-sum",
    )
    _compare(
        lambda query, key, positives, **kw: siglip(query, key, positives=positives, **kw),
        {"query": (q, qs, True), "key": (k, ks, True), "positives": (soft, qs, False)},
        world,
        rank,
        out,
        "siglip-soft",
    )
    _compare(
        lambda z1, z2, z3, **kw: nt_xent(z1, z2, z3, temperature=0.4, **kw),
        {"z1": (q, qs, True), "z2": (qb, qs, True), "z3": (randn(B, d), qs, True)},
        world,
        rank,
        out,
        "nt_xent-3-views",
    )
    _compare(
        lambda z, zp, p, h, negatives, **kw: sycon_loss(
            z, zp, p, predicted=h, negatives=negatives, temperature=0.3, **kw
        ),
        {
            "z": (q, qs, True),
            "zp": (qb, qs, True),
            "p": (randn(B, d), qs, True),
            "h": (randn(B, d), qs, True),
            "negatives": (randn(3, d), "shared", True),
        },
        world,
        rank,
        out,
        "sycon",
    )
    feats = randn(B, 2, d)
    _compare(
        lambda features, **kw: supcon(features, **kw),
        {"features": (feats, qs, True)},
        world,
        rank,
        out,
        "supcon-no-labels",
    )
    _compare(
        lambda features, labels, **kw: supcon(features, labels, variant="in", **kw),
        {"features": (feats, qs, True), "labels": (lab, qs, False)},
        world,
        rank,
        out,
        "supcon-labels",
    )

    # Losses without a ``distributed`` option: gather every rank's rows (differentiable) and
    # compute the global batch's loss on every rank; the gather's backward gives the same
    # world_size x scaling as distributed=True (docs/distributed.md, "Every other loss").
    def gathered(fn):
        def call(distributed, **kw):
            if distributed:
                kw = {k: cdist.all_gather(v) for k, v in kw.items()}
            return fn(**kw)

        return call

    _compare(
        gathered(lambda query, key, frozen: cwcl(query, key, frozen=frozen, temperature=0.1)),
        {"query": (q, qs, True), "key": (qb, qs, True), "frozen": (randn(B, d), qs, False)},
        world,
        rank,
        out,
        "gathered-cwcl",
    )
    _compare(
        gathered(lambda query, labels: circle_loss(query, labels=labels, gamma=8.0)),
        {"query": (q, qs, True), "labels": (lab, qs, False)},
        world,
        rank,
        out,
        "gathered-circle",
    )


class _Dual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.q = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 4))
        self.k = nn.Sequential(nn.Linear(7, 8), nn.Tanh(), nn.Linear(8, 4))

    def forward(self, x, y):
        return self.q(x), self.k(y)


def _train(model, loss_fn, batches, rank_rows, ddp: bool) -> None:
    net = nn.parallel.DistributedDataParallel(model) if ddp else model
    params = [*model.parameters(), *loss_fn.parameters()]
    opt = torch.optim.SGD(params, lr=0.5, momentum=0.9)
    for x, y in batches:
        if rank_rows is not None:
            x, y = x[rank_rows], y[rank_rows]
        opt.zero_grad()
        loss_fn(*net(x, y)).backward()
        opt.step()


def _ddp(rank: int, world: int, out: dict) -> None:
    qs = _sizes(world)
    B = sum(qs)
    g = torch.Generator().manual_seed(7)
    batches = [
        (torch.randn(B, 6, generator=g, dtype=F64), torch.randn(B, 7, generator=g, dtype=F64))
        for _ in range(2)
    ]
    rows = slice(sum(qs[:rank]), sum(qs[: rank + 1]))
    weights = {}
    for mode in ("single", "ddp"):
        torch.manual_seed(0)
        model = _Dual().double()
        loss_fn = InfoNCE(
            0.2, symmetric=True, learnable_temperature=True, distributed=mode == "ddp"
        )
        _train(model, loss_fn, batches, rows if mode == "ddp" else None, ddp=mode == "ddp")
        state = {**model.state_dict(), "logit_scale": loss_fn.logit_scale.logit_scale.detach()}
        weights[mode] = {k: v.clone() for k, v in state.items()}
    torch.manual_seed(0)
    init = _Dual().double().state_dict()
    out["ddp"] = {
        "errs": {k: _rel(weights["ddp"][k], v) for k, v in weights["single"].items()},
        "moved": min(_rel(weights["single"][k], v) for k, v in init.items()),
    }

    # GradCache over DDP towers with a distributed loss == one process, full global batch.
    x, y = batches[0]
    grads = {}
    for mode in ("single", "gradcache"):
        torch.manual_seed(0)
        model = _Dual().double()
        loss_fn = InfoNCE(
            0.2, symmetric=True, learnable_temperature=True, distributed=mode != "single"
        )
        if mode == "single":
            loss_fn(*model(x, y)).backward()
        else:
            towers = [nn.parallel.DistributedDataParallel(m) for m in (model.q, model.k)]
            grad_cache_step(towers, [x[rows], y[rows]], loss_fn, chunk_size=2)
        named = [*model.named_parameters(), *loss_fn.named_parameters()]
        grads[mode] = {k: p.grad.clone() for k, p in named}
    out["gradcache"] = {
        "errs": {k: _rel(grads["gradcache"][k], v) for k, v in grads["single"].items()}
    }


def _catch(fn) -> str:
    try:
        fn()
    except Exception as err:  # noqa: BLE001
        return f"{type(err).__name__}: {err}"
    return "no error"


def _faults(rank: int, world: int, out: dict) -> None:
    d = 8 if rank == 0 else 6
    out["feature size"] = _catch(
        lambda: info_nce(torch.randn(4, d), torch.randn(4, d), distributed=True)
    )
    dtype = F64 if rank == 1 else torch.float32
    out["dtype"] = _catch(
        lambda: info_nce(
            torch.randn(4, 8, dtype=dtype), torch.randn(4, 8, dtype=dtype), distributed=True
        )
    )
    labels = torch.arange(4) if rank == 0 else None
    out["labels on some ranks"] = _catch(
        lambda: info_nce(torch.randn(4, 8), torch.randn(4, 8), labels=labels, distributed=True)
    )
    bad = 5 if rank == world - 1 else 4
    out["local error"] = _catch(
        lambda: info_nce(
            torch.randn(4, 8), torch.randn(4, 8), labels=torch.arange(bad), distributed=True
        )
    )
    pos = torch.ones(4, 4 * world - (rank == 0))
    out["positives columns"] = _catch(
        lambda: info_nce(torch.randn(4, 8), torch.randn(4, 8), positives=pos, distributed=True)
    )
    # all_gather of any tensor: shapes and dtypes are checked first, not crashed on in gloo
    out["gather feature size"] = _catch(
        lambda: cdist.all_gather(torch.ones(2, 3 + rank), what="embeddings")
    )
    out["gather dtype"] = _catch(
        lambda: cdist.all_gather(torch.ones(2, 3, dtype=F64 if rank == 1 else torch.float32))
    )
    out["gather sizes"] = _catch(lambda: cdist.all_gather(torch.ones(2, 3), sizes=[3] * world))
    # a local validation error (NaN, bad labels) in the functional losses on the last rank: every
    # rank raises at once, not after the 60 s timeout
    bad_rank = rank == world - 1
    x = torch.randn(4, 8)
    nan = x.clone()
    nan[1, 2] = float("nan")
    z = nan if bad_rank else x
    local_checks = {
        "info_nce": lambda: info_nce(z, torch.randn(4, 8), distributed=True),
        "nt_xent": lambda: nt_xent(z, torch.randn(4, 8), distributed=True),
        "supcon": lambda: supcon(
            torch.randn(4, 2, 8), torch.arange(3 if bad_rank else 4), distributed=True
        ),
        "siglip": lambda: siglip(torch.randn(4, 8), z, distributed=True),
    }
    for name, call in local_checks.items():
        start = time.monotonic()
        out[f"local {name}"] = _catch(call)
        out[f"local {name} seconds"] = time.monotonic() - start
    # the group is still usable after these errors
    loss = info_nce(
        torch.ones(2, 3, dtype=F64) * (rank + 1), torch.ones(2, 3, dtype=F64), distributed=True
    )
    out["usable after errors"] = float(loss)
    # a rank that stops answering: the others fail within the timeout, naming the collective
    cdist.set_timeout(2.0)
    if rank == world - 1:
        time.sleep(6.0)  # alive but silent for longer than the timeout
        out["hung"] = "slept"
        return
    start = time.monotonic()
    out["hung"] = _catch(lambda: info_nce(torch.randn(4, 8), torch.randn(4, 8), distributed=True))
    out["hung seconds"] = time.monotonic() - start


def _dead(rank: int, world: int, out: dict) -> None:
    info_nce(torch.randn(3, 4), torch.randn(3, 4), distributed=True)  # all alive
    cdist.set_timeout(5.0)
    if rank == world - 1:
        torch.save(out, out.pop("_path"))
        os._exit(0)  # dies without a word
    time.sleep(0.5)
    start = time.monotonic()
    out["dead"] = _catch(
        lambda: info_nce(torch.randn(3, 4), torch.randn(3, 4), engine="streaming", distributed=True)
    )
    out["dead seconds"] = time.monotonic() - start


def _queue(rank: int, world: int, out: dict) -> None:
    """Every rank enqueues every rank's keys in rank order; wrap-around drops nothing."""
    queue = NegativeQueue(9, 2, labels=True, distributed=True)
    pushed = []
    for step in range(3):
        sizes = [2 + (r + step) % 3 for r in range(world)]
        batch = [
            torch.full((n, 2), 100.0 * step + 10 * r) + torch.arange(n)[:, None]
            for r, n in enumerate(sizes)
        ]
        labels = [torch.full((n,), r) for r, n in enumerate(sizes)]
        snap = queue(batch[rank], labels[rank])
        expect = torch.cat(pushed)[-9:] if pushed else torch.zeros(0, 2)
        out.setdefault("queue", []).append(
            torch.equal(snap.negatives, expect) and len(snap.labels) == len(expect)
        )
        pushed += batch
    out["queue state"] = {k: v.clone() for k, v in queue.state_dict().items()}
    # invalid keys on one rank: the same ValueError on every rank, not a wait for the timeout
    bad = torch.full((2, 2), float("nan")) if rank == 1 else torch.ones(2, 2)
    start = time.monotonic()
    out["queue bad push"] = _catch(lambda: queue(bad, torch.zeros(2, dtype=torch.int64)))
    out["queue bad push seconds"] = time.monotonic() - start
    out["queue unchanged"] = all(
        torch.equal(v, out["queue state"][k]) for k, v in queue.state_dict().items()
    )


def _two(rank: int, world: int, out: dict) -> None:
    _exactness(rank, world, out)
    _queue(rank, world, out)
    _ddp(rank, world, out)
    _faults(rank, world, out)


def _four(rank: int, world: int, out: dict) -> None:
    _exactness(rank, world, out)
    _queue(rank, world, out)
    _dead(rank, world, out)


SCENARIOS = {"two": _two, "four": _four}


# -- the tests ---------------------------------------------------------------------------------
def _check_exactness(results: list[dict], world: int) -> None:
    for res in results:
        assert res["rows-none-auto"] <= TOL and res["rows-none-streaming"] <= TOL
    names = [k for k, v in results[0].items() if isinstance(v, dict) and "loss" in v]
    assert len(names) == 18
    for name in names:
        losses = {res[name]["loss"] for res in results}
        assert len(losses) == 1, f"{name}: ranks disagree on the loss: {losses}"
        for r, res in enumerate(results):
            for what, err in res[name]["errs"].items():
                assert err <= TOL, f"{name} rank {r}/{world}: {what} rel err {err:.3g}"


@pytest.fixture(scope="module")
def two_ranks() -> list[dict]:
    return _spawn("two", 2)


def test_two_ranks_match_one_process(two_ranks):
    _check_exactness(two_ranks, 2)


def test_four_ranks_match_one_process_and_a_dead_rank_fails_fast():
    results = _spawn("four", 4)
    _check_exactness(results, 4)
    for res in results:
        assert res["queue"] == [True, True, True]
        assert torch.equal(res["queue state"]["keys"], results[0]["queue state"]["keys"])
    for r in range(3):
        assert "CollectiveError" in results[r]["dead"], results[r]["dead"]
        assert "rank" in results[r]["dead"] and "of 4" in results[r]["dead"]
        assert results[r]["dead seconds"] < 5.0 + 3.0


def test_distributed_queue_same_on_every_rank(two_ranks):
    for res in two_ranks:
        assert res["queue"] == [True, True, True]
        for name, value in res["queue state"].items():
            assert torch.equal(value, two_ranks[0]["queue state"][name])


def test_invalid_queue_push_on_one_rank_raises_on_every_rank(two_ranks):
    for res in two_ranks:
        msg = res["queue bad push"]
        assert "ValueError" in msg and "rank 1: ValueError: keys contains NaN" in msg, msg
        assert res["queue bad push seconds"] < 10.0  # not the 60 s timeout
        assert res["queue unchanged"]


def test_ddp_two_steps_equal_one_process(two_ranks):
    for res in two_ranks:
        assert res["ddp"]["moved"] > 1e-2  # the steps did change the weights
        for name, err in res["ddp"]["errs"].items():
            assert err <= TOL, f"{name}: rel err {err:.3g}"


def test_gradcache_over_ddp_with_distributed_loss(two_ranks):
    for res in two_ranks:
        for name, err in res["gradcache"]["errs"].items():
            assert err <= TOL, f"{name}: rel err {err:.3g}"


def test_mismatches_raise_on_every_rank(two_ranks):
    for res in two_ranks:
        assert "ValueError" in res["feature size"] and "differs across ranks" in res["feature size"]
        assert "(4, 8)" in res["feature size"] and "(4, 6)" in res["feature size"]
        assert "ValueError" in res["dtype"] and "float64" in res["dtype"]
        assert (
            "ValueError" in res["labels on some ranks"]
            and "None on rank" in res["labels on some ranks"]
        )
        assert "ValueError" in res["local error"] and "rank 1: labels" in res["local error"]
        assert "ValueError" in res["positives columns"] and "rank 0" in res["positives columns"]
        assert res["usable after errors"] == two_ranks[0]["usable after errors"]


def test_local_validation_errors_of_the_losses_raise_on_every_rank(two_ranks):
    wanted = {
        "info_nce": "query contains NaN",
        "nt_xent": "views[0] contains NaN",
        "supcon": "labels must have shape (4,)",
        "siglip": "key contains NaN",
    }
    for r, res in enumerate(two_ranks):
        for name, text in wanted.items():
            msg = res[f"local {name}"]
            assert "ValueError" in msg and text in msg, (r, name, msg)
            if r == 0:  # the healthy rank names the rank that failed
                assert "rank 1: ValueError" in msg, msg
            assert res[f"local {name} seconds"] < 10.0  # not the 60 s timeout
    assert two_ranks[0]["usable after errors"] == two_ranks[1]["usable after errors"]


def test_all_gather_mismatches_raise_on_every_rank(two_ranks):
    for res in two_ranks:
        msg = res["gather feature size"]
        assert "ValueError" in msg and "embeddings differs across ranks" in msg, msg
        assert "rank 0: shape (2, 3)" in msg and "rank 1: shape (2, 4)" in msg, msg
        assert "ValueError" in res["gather dtype"] and "float64" in res["gather dtype"]
        msg = res["gather sizes"]
        assert "ValueError" in msg and "sizes must hold every rank's row count" in msg, msg
        assert res["usable after errors"] == two_ranks[0]["usable after errors"]


def test_hung_rank_times_out_naming_the_collective(two_ranks):
    res = two_ranks[0]
    assert "CollectiveError" in res["hung"] and "all_gather" in res["hung"], res["hung"]
    assert "timeout 2s" in res["hung"]
    assert 1.5 <= res["hung seconds"] < 5.5  # the timeout fired, not the peer's exit at 6 s
