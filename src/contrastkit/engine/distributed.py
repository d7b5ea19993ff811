"""The losses' ``distributed=True`` path: every rank contrasts its queries with every rank's keys.

The *global batch* is the concatenation of every rank's inputs in rank order (uneven row counts
allowed).  With ``distributed=True`` a loss returns the loss of the global batch — the number
that one process holding the whole batch would compute, the same on every rank — and each rank
computes only the loss terms of its own rows: rank ``r``'s queries are the global rows
``offset_r : offset_r + B_r``, and the pairing (diagonal, labels, matrices, self-exclusion) is
built in global coordinates, so that query ``i`` of rank 1 is paired with the global key
``offset_1 + i``.

Gradients: every rank calls ``backward()`` on the same ``L``; each rank's embeddings receive
``world_size * dL/d(embeddings)`` — the gradient of the sum of the ``world_size`` copies of ``L``
— so that DistributedDataParallel's *average* of the parameter gradients is exactly the
single-process gradient ``dL/d(theta)``.  Learnable temperatures, scales and biases (replicated on
every rank) receive ``dL/d(param)`` itself on every rank (see
:func:`contrastkit.distributed.sync_replicated`), right with or without DDP.

Two ways to see the other ranks' keys:

- **all-gather** (``engine="auto"`` or ``"dense"``): keys (and, for the symmetric loss, queries),
  labels and the rows of ``positives``/``exclude`` are gathered; the rank's ``B_r x N`` logits go
  through the dense engine.  Every pairing and option is supported.
- **ring** (``engine="streaming"``): no rank ever holds all keys or the global matrix.  Key
  blocks (and query blocks, when symmetric) travel around the ring with point-to-point ops; each
  rank keeps per-row running log-sum-exp statistics (the online softmax) over the blocks it has
  seen.  The backward sends the blocks around again with a gradient accumulator that returns to
  the block's owner.  Supported: diagonal and label pairings (self-exclusion included),
  ``variant`` out/in, ``decoupled``, ``margin``, ``symmetric``, extra ``negatives``, learnable
  temperature, and the sigmoid loss.  Labels (``O(B)`` integers) are gathered.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from contrastkit import distributed as D
from contrastkit._validation import finite_checks_enabled
from contrastkit.engine import dense
from contrastkit.objectives.infonce import InfoNCESpec, apply_margin, masked_fill_value
from contrastkit.objectives.sigmoid import sigmoid_row_sums
from contrastkit.pairing import Pairing
from contrastkit.similarity import autocast_off, no_autocast, pairwise_similarity, prepare

__all__ = ["info_nce", "siglip"]


def _use_ring(engine: str) -> bool:
    if engine in ("auto", "dense"):
        return False
    if engine == "streaming":
        return True
    raise ValueError(
        f"engine={engine!r} does not run with distributed=True; use 'auto'/'dense' (all-gather) "
        "or 'streaming' (ring)"
    )


@dataclass(frozen=True)
class _RowWindow:
    """Rows ``r0:r1`` of a global pairing, read the way the dense engine reads a pairing."""

    pairing: Pairing
    r0: int
    r1: int

    def __getattr__(self, name: str) -> Any:  # kind, exclude, exclude_self: the global pairing's
        return getattr(self.pairing, name)

    @property
    def diagonal_offset(self) -> int:
        """For a diagonal pairing: row ``i`` of the window pairs with key ``r0 + i``."""
        return self.r0

    def dense(self, dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor | None]:
        return self.pairing.tile(self.r0, self.r1, 0, self.pairing.num_keys, dtype)


def _ranges(sizes: list[int]) -> list[tuple[int, int]]:
    out, start = [], 0
    for n in sizes:
        out.append((start, start + n))
        start += n
    return out


#: The inputs each loss exchanges first (their shapes and dtypes), in this order.
INFONCE_INPUTS = (
    "query", "key", "labels", "key_labels", "positives", "exclude", "negatives", "shared negatives"
)  # fmt: skip
SIGLIP_INPUTS = ("query", "key", "labels", "key_labels", "positives", "exclude")


@contextlib.contextmanager
def errors_on_every_rank(loss: str, group: Any = None) -> Iterator[None]:
    """Around the local checks of a ``distributed=True`` loss (``"info_nce"`` or ``"siglip"``):
    a ``TypeError``/``ValueError`` raised in the block on one rank is sent through the input
    exchange the other ranks are waiting in, so that they raise at once too (naming this rank
    and the error) instead of waiting for the collective timeout; this rank re-raises it."""
    try:
        yield
    except (TypeError, ValueError) as err:
        if getattr(err, "_sent_to_every_rank", False):
            raise
        err._sent_to_every_rank = True  # type: ignore[attr-defined]
        if D.is_initialized() and D.get_world_size(group) > 1:
            names = INFONCE_INPUTS if loss == "info_nce" else SIGLIP_INPUTS
            message = f"{type(err).__name__}: {err}"
            try:
                D.exchange_meta(
                    dict.fromkeys(names),
                    error=message,
                    group=group,
                    what=f"{loss}(distributed=True)",
                )
            except Exception:  # noqa: BLE001 - the exchange raises the error just sent
                pass
        raise


def _local_error(**checks: tuple[Tensor | None, int]) -> str | None:
    """A message for the first ``name=(tensor, rows)`` whose dim 0 is not ``rows``."""
    for name, (t, rows) in checks.items():
        if t is not None and (t.dim() == 0 or t.shape[0] != rows):
            return f"{name} must have {rows} rows (this rank's batch), got shape {tuple(t.shape)}"
    return None


def _check_matrix_rows(metas, name: str, rows: list[int], num_keys: int, what: str) -> None:
    for r, m in enumerate(metas):
        if m[name] is not None and tuple(m[name][0]) != (rows[r], num_keys):
            raise ValueError(
                f"{what}: {name} on rank {r} has shape {tuple(m[name][0])}, expected "
                f"({rows[r]}, {num_keys}): with distributed=True it holds this rank's rows of the "
                "global matrix, whose columns are every rank's keys in rank order"
            )


def _global_reduce(rows: list[tuple[Tensor, Tensor]], reduction: str, group, what: str) -> Tensor:
    if reduction == "none":
        return torch.cat([loss for loss, _ in rows])
    counts = D.all_reduce_sum(torch.stack([v.sum() for _, v in rows]), group=group, what="counts")
    counts = counts.tolist()
    # As the single-process loss: at least one row per direction, unless the checks are off
    # (set_finite_checks(False)), where a direction without a valid row contributes 0.
    if min(counts) == 0 and finite_checks_enabled():
        raise ValueError(
            f"{what}: no row of the global batch has both a positive and a negative: check "
            "labels/positives"
        )
    parts = [
        loss.sum() / (max(c, 1) if reduction == "mean" else 1)
        for (loss, _), c in zip(rows, counts, strict=True)
    ]
    local = sum(parts) / len(parts)
    return D.all_reduce_sum(local, group=group, what="loss")


def info_nce(
    query: Tensor,
    key: Tensor | None,
    *,
    labels: Tensor | None,
    key_labels: Tensor | None,
    positives: Tensor | None,
    exclude: Tensor | None,
    negatives: tuple[Tensor | None, Tensor | None],
    scale: float | Tensor,
    spec: InfoNCESpec,
    symmetric: bool,
    reduction: str,
    engine: str,
    group: Any = None,
) -> Tensor:
    """InfoNCE over the global batch (see the module doc); ``key=None`` contrasts the queries
    with themselves (self-pairs excluded).  Arguments are this rank's share of those of
    :func:`contrastkit.functional.info_nce`; ``positives``/``exclude`` are ``(B_r, N)``, this
    rank's rows of the global matrices.  Users call ``info_nce(..., distributed=True)``.

    Example:
        >>> import torch
        >>> from contrastkit.functional import info_nce as plain_info_nce
        >>> from contrastkit.objectives.infonce import InfoNCESpec
        >>> q, k = torch.randn(4, 8), torch.randn(4, 8)
        >>> loss = info_nce(q, k, labels=None, key_labels=None, positives=None, exclude=None,
        ...                 negatives=(None, None), scale=10.0, spec=InfoNCESpec(),
        ...                 symmetric=False, reduction="mean", engine="auto")
        >>> torch.allclose(loss, plain_info_nce(q, k, temperature=0.1))  # a world of one
        True
    """
    from contrastkit.functional import build_pairing

    what = "info_nce(distributed=True)"
    ring = _use_ring(engine)
    same_set = key is None
    per_query, shared = negatives
    b = query.shape[0]
    n = b if same_set else key.shape[0]  # type: ignore[union-attr]
    error = _local_error(labels=(labels, b), key_labels=(key_labels, n))
    inputs = (query, key, labels, key_labels, positives, exclude, per_query, shared)
    metas = D.exchange_meta(
        dict(zip(INFONCE_INPUTS, inputs, strict=True)),
        same=INFONCE_INPUTS[:-1],
        error=error,
        group=group,
        what=what,
    )
    b_sizes = [m["query"][0][0] for m in metas]
    n_sizes = b_sizes if same_set else [m["key"][0][0] for m in metas]
    for name in ("positives", "exclude"):
        _check_matrix_rows(metas, name, b_sizes, sum(n_sizes), what)
    if ring and (positives is not None or exclude is not None):
        raise ValueError(
            f"{what}: the ring (engine='streaming') supports diagonal and label pairings; "
            "positives=/exclude= matrices need engine='auto' (all-gather)"
        )
    rank = D.get_rank(group)
    (q0, q1), (k0, k1) = _ranges(b_sizes)[rank], _ranges(n_sizes)[rank]

    def gather(t: Tensor | None, sizes: list[int], name: str) -> Tensor | None:
        return None if t is None else D.all_gather(t, sizes, group=group, what=name)

    pairing = build_pairing(
        sum(b_sizes),
        sum(n_sizes),
        query.device,
        labels=gather(labels, b_sizes, "labels"),
        key_labels=gather(key_labels, n_sizes, "key_labels"),
        positives=gather(positives, b_sizes, "positives"),
        exclude=gather(exclude, b_sizes, "exclude"),
        exclude_self=same_set,
    )
    if isinstance(scale, Tensor):
        scale = D.sync_replicated(scale, group=group, what="temperature")
    key_local = query if same_set else key
    assert key_local is not None
    if ring:
        q = prepare(query, spec.similarity)
        k = q if same_set else prepare(key_local, spec.similarity)
        with no_autocast(q.device):
            extra = dense.extra_negative_logits(q, per_query, shared, scale, spec.similarity)
        plan = _RingPlan(pairing, b_sizes, n_sizes, rank, group, spec=spec, symmetric=symmetric)
        scale_t = scale if isinstance(scale, Tensor) else torch.tensor(scale, dtype=q.dtype)
        scale_t = scale_t.to(device=q.device, dtype=q.dtype)
        no_bias = torch.zeros((), dtype=q.dtype, device=q.device)
        loss_q, valid_q, loss_k, valid_k = _RingLoss.apply(plan, q, k, scale_t, no_bias, extra)
        rows = [(loss_q, valid_q)] + ([(loss_k, valid_k)] if symmetric else [])
    else:
        k_all = gather(key_local, n_sizes, "keys")
        window = _RowWindow(pairing, q0, q1)
        rows = dense.infonce_rows(query, k_all, window, scale, spec, per_query, shared)  # type: ignore[arg-type]
        if symmetric:
            q_all = k_all if same_set else gather(query, b_sizes, "queries")
            window_t = _RowWindow(pairing.transpose(), k0, k1)
            rows += dense.infonce_rows(key_local, q_all, window_t, scale, spec)  # type: ignore[arg-type]
    return _global_reduce(rows, reduction, group, what)


def siglip(
    query: Tensor,
    key: Tensor,
    *,
    labels: Tensor | None,
    key_labels: Tensor | None,
    positives: Tensor | None,
    exclude: Tensor | None,
    scale: float | Tensor,
    bias: float | Tensor,
    similarity: str,
    engine: str,
    group: Any = None,
) -> Tensor:
    """The sigmoid loss over the global batch, ``sum over all pairs / B`` (see module doc).
    Users call ``siglip(..., distributed=True)``.

    Example:
        >>> import torch
        >>> from contrastkit.functional import siglip as plain_siglip
        >>> q, k = torch.randn(4, 8), torch.randn(4, 8)
        >>> loss = siglip(q, k, labels=None, key_labels=None, positives=None, exclude=None,
        ...               scale=10.0, bias=-10.0, similarity="cosine", engine="auto")
        >>> torch.allclose(loss, plain_siglip(q, k, scale=10.0, bias=-10.0))  # a world of one
        True
    """
    from contrastkit.functional import build_pairing

    what = "siglip(distributed=True)"
    ring = _use_ring(engine)
    b, n = query.shape[0], key.shape[0]
    error = _local_error(labels=(labels, b), key_labels=(key_labels, n))
    inputs = (query, key, labels, key_labels, positives, exclude)
    metas = D.exchange_meta(
        dict(zip(SIGLIP_INPUTS, inputs, strict=True)),
        same=SIGLIP_INPUTS,
        error=error,
        group=group,
        what=what,
    )
    b_sizes = [m["query"][0][0] for m in metas]
    n_sizes = [m["key"][0][0] for m in metas]
    for name in ("positives", "exclude"):
        _check_matrix_rows(metas, name, b_sizes, sum(n_sizes), what)
    if ring and (positives is not None or exclude is not None):
        raise ValueError(
            f"{what}: the ring (engine='streaming') supports diagonal and label pairings; "
            "positives=/exclude= matrices need engine='auto' (all-gather)"
        )
    rank = D.get_rank(group)
    q0, q1 = _ranges(b_sizes)[rank]

    def gather(t: Tensor | None, sizes: list[int], name: str) -> Tensor | None:
        return None if t is None else D.all_gather(t, sizes, group=group, what=name)

    pairing = build_pairing(
        sum(b_sizes),
        sum(n_sizes),
        query.device,
        labels=gather(labels, b_sizes, "labels"),
        key_labels=gather(key_labels, n_sizes, "key_labels"),
        positives=gather(positives, b_sizes, "positives"),
        exclude=gather(exclude, b_sizes, "exclude"),
    )
    if isinstance(scale, Tensor):
        scale = D.sync_replicated(scale, group=group, what="scale")
    if isinstance(bias, Tensor):
        bias = D.sync_replicated(bias, group=group, what="bias")
    if ring:
        q, k = prepare(query, similarity), prepare(key, similarity)
        plan = _RingPlan(pairing, b_sizes, n_sizes, rank, group, similarity=similarity)
        scale_t, bias_t = (
            (v if isinstance(v, Tensor) else torch.tensor(v)).to(device=q.device, dtype=q.dtype)
            for v in (scale, bias)
        )
        row_sums = _RingLoss.apply(plan, q, k, scale_t, bias_t, None)[0]
    else:
        k_all = gather(key, n_sizes, "keys")
        window = _RowWindow(pairing, q0, q1)
        row_sums = dense.sigmoid_rows(query, k_all, window, scale, bias, similarity)  # type: ignore[arg-type]
    return D.all_reduce_sum(row_sums.sum() / sum(b_sizes), group=group, what="loss")


# -- the ring ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class _RingPlan:
    """Who holds what: the global pairing, every rank's query/key row counts, the objective."""

    pairing: Pairing
    q_sizes: list[int]
    k_sizes: list[int]
    rank: int
    group: Any
    spec: InfoNCESpec | None = None  # None: the sigmoid loss
    symmetric: bool = False
    similarity: str = "cosine"
    pairing_t: Pairing = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "pairing_t", self.pairing.transpose())

    @property
    def world(self) -> int:
        return len(self.q_sizes)

    def order(self) -> list[int]:
        """The rank whose blocks this rank holds at each step of the ring."""
        return [(self.rank - t) % self.world for t in range(self.world)]

    def block_shapes(self, s: int, dim: int) -> list[tuple[int, int]]:
        """Shapes of the circulating blocks of rank ``s``: its keys, and queries if symmetric."""
        shapes = [(self.k_sizes[s], dim)]
        return shapes + [(self.q_sizes[s], dim)] if self.symmetric else shapes


class _InfoNCERows:
    """Running per-row statistics of the InfoNCE family over key blocks (online log-sum-exp)."""

    def __init__(self, n: int, like: Tensor, spec: InfoNCESpec) -> None:
        self.spec = spec
        self.fill = masked_fill_value(like.dtype)
        self.lse = torch.full((n,), self.fill, dtype=like.dtype, device=like.device)
        self.has_den = torch.zeros(n, dtype=torch.bool, device=like.device)
        self.sum_w = torch.zeros(n, dtype=like.dtype, device=like.device)
        pos_init = 0.0 if spec.variant == "out" else self.fill
        self.pos = torch.full((n,), pos_init, dtype=like.dtype, device=like.device)

    def in_den(self, w: Tensor, excl: Tensor | None) -> Tensor:
        den = torch.ones_like(w, dtype=torch.bool) if excl is None else ~excl
        return den & (w <= 0) if self.spec.decoupled else den

    def add_extra(self, extra: Tensor) -> None:
        if extra.shape[1] > 0:
            self.lse = torch.logaddexp(self.lse, torch.logsumexp(extra, dim=1))
            self.has_den = torch.ones_like(self.has_den)

    def update(self, logits: Tensor, w: Tensor, excl: Tensor | None) -> None:
        den = self.in_den(w, excl)
        block_lse = torch.logsumexp(logits.masked_fill(~den, self.fill), dim=1)
        self.lse = torch.logaddexp(self.lse, block_lse)
        self.has_den |= den.any(dim=1)
        self.sum_w += w.sum(dim=1)
        if self.spec.variant == "out":
            self.pos += (w * logits).sum(dim=1)
        else:
            tiny = torch.finfo(logits.dtype).tiny
            pos_logits = torch.where(w > 0, logits + w.clamp_min(tiny).log(), self.fill)
            self.pos = torch.logaddexp(self.pos, torch.logsumexp(pos_logits, dim=1))

    def finish(self) -> tuple[Tensor, Tensor]:
        self.valid = (self.sum_w > 0) & self.has_den
        self.safe_w = torch.where(self.valid, self.sum_w, torch.ones_like(self.sum_w))
        if self.spec.variant == "out":
            positive_term = self.pos / self.safe_w
        else:
            positive_term = self.pos - self.safe_w.log()
        loss = torch.where(self.valid, self.lse - positive_term, torch.zeros_like(self.lse))
        return loss, self.valid

    def grad_logits(self, logits: Tensor, w: Tensor, excl: Tensor | None, c: Tensor) -> Tensor:
        """``d(sum_i c_i loss_i) / d logits`` of one block (``c`` is 0 on invalid rows)."""
        den = self.in_den(w, excl)
        p = torch.exp(logits - self.lse[:, None]).masked_fill(~den, 0.0)
        if self.spec.variant == "out":
            rho = w / self.safe_w[:, None]
        else:
            tiny = torch.finfo(logits.dtype).tiny
            log_rho = logits + w.clamp_min(tiny).log() - self.pos[:, None]
            rho = torch.where(w > 0, torch.exp(log_rho), 0.0)
        return c[:, None] * (p - rho)


def _block(rows: Tensor, cols: Tensor, scale: Tensor, bias: Tensor, plan: _RingPlan, rr, cr, t):
    """Logits (InfoNCE) or per-row sums (sigmoid) of the block ``rows x cols`` at global
    coordinates ``rr x cr``; ``t`` says whether the rows are keys (transposed pairing)."""
    pairing = plan.pairing_t if t else plan.pairing
    if plan.spec is None:
        sim = pairwise_similarity(rows, cols, plan.similarity)
        targets, excl = pairing.tile(rr[0], rr[1], cr[0], cr[1], dtype=sim.dtype)
        return sigmoid_row_sums(sim, targets, excl, scale, bias), targets, excl
    sim = pairwise_similarity(rows, cols, plan.spec.similarity)
    w, excl = pairing.tile(rr[0], rr[1], cr[0], cr[1], dtype=sim.dtype)
    return apply_margin(sim, w, scale, plan.spec.margin), w, excl


class _RingLoss(torch.autograd.Function):
    """Per-row losses of this rank's queries (and keys, if symmetric) against every rank's
    keys (queries), computed block by block as the blocks travel around the ring."""

    @staticmethod
    @autocast_off  # float32 blocks under torch.autocast too
    def forward(ctx, plan, q, k, scale, bias, extra):  # type: ignore[override]
        ctx.plan = plan
        dim = q.shape[1]
        q_range = _ranges(plan.q_sizes)[plan.rank]
        k_range = _ranges(plan.k_sizes)[plan.rank]
        q_ranges, k_ranges = _ranges(plan.q_sizes), _ranges(plan.k_sizes)
        sigmoid = plan.spec is None
        if sigmoid:
            sums = torch.zeros(q.shape[0], dtype=q.dtype, device=q.device)
        else:
            fwd = _InfoNCERows(q.shape[0], q, plan.spec)
            rev = _InfoNCERows(k.shape[0], k, plan.spec) if plan.symmetric else None
            if extra is not None:
                fwd.add_extra(extra)
        blocks = [k, q] if plan.symmetric else [k]
        order = plan.order()
        for t, s in enumerate(order):
            pending = None
            if t < plan.world - 1:
                shapes = plan.block_shapes(order[t + 1], dim)
                pending = D.ring_shift(blocks, shapes, group=plan.group, what="keys", wait=False)
            out, w, excl = _block(q, blocks[0], scale, bias, plan, q_range, k_ranges[s], False)
            if sigmoid:
                sums += out
            else:
                fwd.update(out, w, excl)
                if rev is not None:
                    out, w, excl = _block(
                        k, blocks[1], scale, bias, plan, k_range, q_ranges[s], True
                    )
                    rev.update(out, w, excl)
            if pending is not None:
                blocks = pending.wait()
        ctx.save_for_backward(q, k, scale, bias, extra)
        empty = q.new_zeros(0)
        none_valid = torch.zeros(0, dtype=torch.bool, device=q.device)
        if sigmoid:
            ctx.rows = None
            valid = torch.ones(q.shape[0], dtype=torch.bool, device=q.device)
            ctx.mark_non_differentiable(valid, none_valid)
            return sums, valid, empty, none_valid
        loss_q, valid_q = fwd.finish()
        loss_k, valid_k = rev.finish() if rev is not None else (empty, none_valid)
        ctx.rows = (fwd, rev)
        ctx.mark_non_differentiable(valid_q, valid_k)
        return loss_q, valid_q, loss_k, valid_k

    @staticmethod
    @autocast_off
    def backward(ctx, g_q, _gv_q, g_k, _gv_k):  # type: ignore[override]
        plan = ctx.plan
        q, k, scale, bias, extra = ctx.saved_tensors
        dim = q.shape[1]
        params = [scale, bias]
        need = [ctx.needs_input_grad[3], ctx.needs_input_grad[4]]
        d_params = [torch.zeros_like(p) for p in params]
        q_range = _ranges(plan.q_sizes)[plan.rank]
        k_range = _ranges(plan.k_sizes)[plan.rank]
        q_ranges, k_ranges = _ranges(plan.q_sizes), _ranges(plan.k_sizes)
        fwd, rev = ctx.rows if ctx.rows is not None else (None, None)
        c_q = g_q if fwd is None else torch.where(fwd.valid, g_q, torch.zeros_like(g_q))
        c_k = None if rev is None else torch.where(rev.valid, g_k, torch.zeros_like(g_k))

        def block_grads(rows, cols, rr, cr, transposed, stats, c):
            with torch.enable_grad():
                rows_ = rows.detach().requires_grad_()
                cols_ = cols.detach().requires_grad_()
                ps = [p.detach().requires_grad_(n) for p, n in zip(params, need, strict=True)]
                out, w, excl = _block(rows_, cols_, ps[0], ps[1], plan, rr, cr, transposed)
                grad_out = c if stats is None else stats.grad_logits(out.detach(), w, excl, c)
                wrt = [rows_, cols_] + [p for p, n in zip(ps, need, strict=True) if n]
                grads = list(torch.autograd.grad(out, wrt, grad_out))
            for i, n in enumerate(need):
                if n:
                    d_params[i] += grads.pop(2)
            return grads[0], grads[1]

        dq, dk = torch.zeros_like(q), torch.zeros_like(k)
        blocks = [k, q] if plan.symmetric else [k]
        accs = [torch.zeros_like(b) for b in blocks]
        order = plan.order()
        for t, s in enumerate(order):
            g_rows, g_cols = block_grads(q, blocks[0], q_range, k_ranges[s], False, fwd, c_q)
            dq += g_rows
            accs[0] += g_cols
            if rev is not None:
                g_rows, g_cols = block_grads(k, blocks[1], k_range, q_ranges[s], True, rev, c_k)
                dk += g_rows
                accs[1] += g_cols
            # Send the accumulators on with their blocks; after `world` hops they are home.
            nxt = order[(t + 1) % plan.world]
            shapes = plan.block_shapes(nxt, dim)
            if t < plan.world - 1:
                out = D.ring_shift(blocks + accs, shapes + shapes, group=plan.group, what="keys")
                blocks, accs = out[: len(blocks)], out[len(blocks) :]
            else:
                accs = D.ring_shift(accs, shapes, group=plan.group, what="key gradients")
        dk += accs[0]
        if plan.symmetric:
            dq += accs[1]
        d_extra = None
        if extra is not None and ctx.needs_input_grad[5]:
            d_extra = c_q[:, None] * torch.exp(extra - fwd.lse[:, None])
        return (
            None,
            dq,
            dk,
            d_params[0] if need[0] else None,
            d_params[1] if need[1] else None,
            d_extra,
        )
