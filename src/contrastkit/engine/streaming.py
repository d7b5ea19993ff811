"""The streaming engine: the logits in ``tile x tile`` blocks, never the whole ``B x N`` matrix.

Forward, each query tile meets each key tile once; the tile's logits update running per-row (and,
for symmetric losses, per-column) statistics and are dropped:

- the denominator's log-sum-exp, merged online (as in FlashAttention, Dao et al. 2022; Milakov &
  Gimelshein 2018): ``LSE' = logaddexp(LSE, logsumexp_j l_ij)``, where both terms subtract the
  running maximum (``logaddexp(a, b) = max(a, b) + log1p(exp(-|a - b|))``) -- never a fixed
  shift, so logits of any size (temperature 0.01, a logit-scale cap of 100) neither overflow nor
  underflow;
- ``sum_j w_ij`` and ``sum_j w_ij l_ij`` (variant ``"out"``) or the log-sum-exp of
  ``l_ij + log w_ij`` over the positives (variant ``"in"``).

Backward (a custom :class:`torch.autograd.Function`) recomputes each tile and forms
``G = dLoss/dlogits`` from the saved ``O(B)`` statistics -- for a valid row ``i`` with upstream
gradient ``g_i``::

    G_ij = g_i (exp(l_ij - LSE_i) [j in A(i)] - w_ij / sum_j w_ij)             ("out")
    G_ij = g_i (exp(l_ij - LSE_i) [j in A(i)] - w_ij exp(l_ij - PLSE_i))       ("in")

plus the same with the column statistics when both directions are asked for, then
``dq += scale G k``, ``dk += scale G^T q`` and ``dscale += sum G (s - margin [w > 0])``.  Memory is
``O(B D + N D + tile^2)``; the pairing is evaluated per tile (:meth:`Pairing.tile`), and the
off-diagonal tiles of a diagonal pairing skip the positive-pair terms altogether.  For cosine and
dot similarity the scale is folded into the queries (``l = (scale q) k^T``), saving a pass.

Extra negatives are folded in through their log-sum-exp: per-query negatives ``(B, K, D)`` with
plain autograd (``O(B K)``, the size of the input), shared negatives ``(M, D)`` with the same
tiled online log-sum-exp (:class:`_StreamingLSE`).

Determinism: tiles are visited in a fixed order and every reduction is a plain tensor op in that
order (no atomics, no ``index_add``), so two runs on the same device, shapes and tile size give
bit-identical losses and gradients (on CUDA as far as cuBLAS is: set
``CUBLAS_WORKSPACE_CONFIG=:4096:8`` and ``torch.use_deterministic_algorithms(True)``).  A different
tile size changes the summation order and therefore the last bits.

The tile size is ``tile=`` on the engine functions, else the module attribute
:data:`DEFAULT_TILE` (:data:`DEFAULT_CUDA_TILE` on a GPU); ``streaming.DEFAULT_TILE = 512`` sets
it for the losses.

Example:
    >>> import torch
    >>> from contrastkit.functional import info_nce
    >>> q, k = torch.randn(3000, 64), torch.randn(3000, 64)
    >>> streamed = info_nce(q, k, symmetric=True, engine="streaming")  # never 3000 x 3000
    >>> bool(torch.isclose(streamed, info_nce(q, k, symmetric=True, engine="dense")))
    True
"""

from __future__ import annotations

import torch
from torch import Tensor

from contrastkit.objectives.infonce import InfoNCESpec, masked_fill_value
from contrastkit.pairing import Pairing
from contrastkit.similarity import (
    autocast_off,
    no_autocast,
    pairwise_similarity,
    prepare,
    rowwise_similarity,
)

#: Rows (and columns) per tile on a CPU; ``tile^2`` logits live at a time (16 MiB in float32).
#: On 2 cores, B = 8192, D = 256: 2048 runs 1.6x faster than 1024 and 1.1x faster than 4096.
DEFAULT_TILE = 2048
#: The same on a GPU (64 MiB per float32 tile; ``benchmarks/bench_engines_gpu.py`` sweeps it).
DEFAULT_CUDA_TILE = 4096


def _tile_size(tile: int | None, device: torch.device) -> int:
    if tile is None:
        tile = DEFAULT_CUDA_TILE if device.type == "cuda" else DEFAULT_TILE
    t = tile
    if isinstance(t, bool) or not isinstance(t, int) or t < 1:
        raise ValueError(f"tile must be a positive int, got {t!r}")
    return t


def _as_scalar_tensor(value: float | Tensor, like: Tensor) -> Tensor:
    if isinstance(value, Tensor):
        return value.reshape(())
    return torch.tensor(float(value), dtype=like.dtype, device=like.device)


def _lse_update(lse: Tensor, x: Tensor, dim: int) -> Tensor:
    """Merge a tile into a running log-sum-exp: ``logaddexp(lse, logsumexp(x))``, both of which
    subtract the running maximum (never a fixed shift)."""
    return torch.logaddexp(lse, torch.logsumexp(x, dim))


def _has_positives(pairing: Pairing, rows: slice, cols: slice) -> bool:
    """False only when the tile certainly has no positive pair (off-diagonal tiles of a
    diagonal pairing): those tiles skip every positive-pair term."""
    if pairing.kind != "diagonal":
        return True
    return max(rows.start, cols.start) < min(rows.stop, cols.stop)


# Devices on which a tile's positive-pair terms are skipped when it has no positive (a host
# sync per tile, free on the CPU).  Elsewhere those terms are computed and add exact zeros.
SKIP_EMPTY_TILES_ON: tuple[str, ...] = ("cpu",)


class _Tile:
    """One ``rows x keys`` block of logits and its pairing, as forward and backward need it.

    ``w``/``pos`` are ``None`` when the tile has no positive pair; ``logits / scale`` is the
    derivative of the logits w.r.t. the scale (the similarity minus the margin on positives).
    """

    def __init__(self, q, k, q_scaled, pairing, rows: slice, cols: slice, scale, spec):
        logits = _logits(q, k, q_scaled, rows, cols, scale, spec.similarity)
        fill = masked_fill_value(logits.dtype)
        self.w = self.pos = exclude = None
        if _has_positives(pairing, rows, cols) or pairing.exclude is not None:
            w, exclude = pairing.tile(rows.start, rows.stop, cols.start, cols.stop, logits.dtype)
            pos = w > 0
            # On the CPU a tile without positives skips their terms; on an accelerator asking
            # would stall on a host sync every tile, so the (all-zero) terms are computed.
            if logits.device.type not in SKIP_EMPTY_TILES_ON or bool(pos.any()):
                self.w, self.pos = w, pos
                if spec.margin:
                    logits = logits - (spec.margin * scale) * pos.to(logits.dtype)
        self.logits = logits
        den = None if exclude is None else ~exclude
        if spec.decoupled and self.pos is not None:
            den = ~self.pos if den is None else den & ~self.pos
        self.den = den
        self.den_logits = logits if den is None else logits.masked_fill(~den, fill)
        self.pos_logits = None
        if spec.variant == "in" and self.pos is not None:
            log_w = self.w.clamp_min(torch.finfo(logits.dtype).tiny).log()
            self.pos_logits = torch.where(self.pos, logits + log_w, fill)


class _Stats:
    """Running statistics of one direction: per row (``dim=1``) or per column (``dim=0``)."""

    def __init__(self, n: int, like: Tensor, variant: str):
        self.variant = variant
        self.lse = torch.full((n,), float("-inf"), dtype=like.dtype, device=like.device)
        self.sum_w = torch.zeros(n, dtype=like.dtype, device=like.device)
        self.has_den = torch.zeros(n, dtype=torch.bool, device=like.device)
        # "out": sum_j w_ij l_ij; "in": the positives' log-sum-exp of l_ij + log w_ij
        self.pos = torch.zeros_like(self.sum_w) if variant == "out" else self.lse.clone()

    def update(self, t: _Tile, idx: slice, dim: int) -> None:
        self.lse[idx] = _lse_update(self.lse[idx], t.den_logits, dim)
        if t.den is None:
            self.has_den[idx] = True
        else:
            self.has_den[idx] |= t.den.any(dim)
        if t.w is None:
            return
        self.sum_w[idx] += t.w.sum(dim)
        if self.variant == "out":
            self.pos[idx] += (t.w * t.logits).sum(dim)
        else:
            self.pos[idx] = _lse_update(self.pos[idx], t.pos_logits, dim)

    def finish(self, extra_lse: Tensor | None) -> tuple[Tensor, ...]:
        """Per-row losses, validity, and what backward needs (``+inf`` LSEs on invalid rows, so
        that their ``exp(l - LSE)`` is exactly 0)."""
        lse = self.lse
        has_den = self.has_den
        if extra_lse is not None:
            lse = torch.logaddexp(lse, extra_lse)
            has_den = torch.ones_like(has_den)
        valid = (self.sum_w > 0) & has_den
        safe_sum_w = torch.where(valid, self.sum_w, torch.ones_like(self.sum_w))
        if self.variant == "out":
            plse = None
            positive_term = self.pos / safe_sum_w
        else:
            plse = self.pos
            positive_term = plse - safe_sum_w.log()
        loss = torch.where(valid, lse - positive_term, torch.zeros_like(lse))
        inf = torch.full_like(lse, float("inf"))
        lse_bw = torch.where(valid, lse, inf)
        plse_bw = None if plse is None else torch.where(valid, plse, inf)
        return loss, valid, lse_bw, plse_bw, safe_sum_w


def _add_d_logits(g, t: _Tile, coef, lse, plse, sum_w, dim: int) -> Tensor:
    """Add ``coef * dLoss/dlogits`` of one direction (``dim=1`` rows, ``dim=0`` columns) to
    ``g`` (``None``: start a new tile)."""
    coef, lse = coef.unsqueeze(dim), lse.unsqueeze(dim)
    p = torch.exp(t.den_logits - lse)
    if g is None:
        g = p.mul_(coef)
    else:
        g.addcmul_(p, coef)
    if t.w is not None:
        if plse is None:
            g.sub_(t.w * (coef / sum_w.unsqueeze(dim)))
        else:
            g.sub_(torch.exp(t.pos_logits - plse.unsqueeze(dim)).mul_(coef))
    return g


class _StreamingInfoNCE(torch.autograd.Function):
    """Per-row InfoNCE losses of query->key (and key->query), tile by tile."""

    @staticmethod
    def forward(ctx, q, k, scale, extra_lse, pairing, spec, both, tile):
        b, n = q.shape[0], k.shape[0]
        q_scaled = _scaled(q, scale, spec.similarity)
        rows = _Stats(b, q, spec.variant)
        cols = _Stats(n, q, spec.variant) if both else None
        for rs, cs in _tiles(b, n, tile):
            t = _Tile(q, k, q_scaled, pairing, rs, cs, scale, spec)
            rows.update(t, rs, 1)
            if cols is not None:
                cols.update(t, cs, 0)
        loss_r, valid_r, *saved_r = rows.finish(extra_lse)
        outputs = [loss_r, valid_r]
        saved_c = []
        if cols is not None:
            loss_c, valid_c, *saved_c = cols.finish(None)
            outputs += [loss_c, valid_c]
        ctx.mark_non_differentiable(*outputs[1::2])
        ctx.setup = (pairing, spec, both, tile, len(saved_r), len(saved_c))
        ctx.save_for_backward(q, k, scale, extra_lse, *saved_r, *saved_c)
        return tuple(outputs)

    @staticmethod
    @autocast_off  # recomputed tiles in float32, as in forward
    def backward(ctx, *grads):
        pairing, spec, both, tile, n_r, n_c = ctx.setup
        q, k, scale, extra_lse, *saved = ctx.saved_tensors
        need_q, need_k, need_scale, need_extra = ctx.needs_input_grad[:4]
        # upstream gradients, times the scale: the tiles below are dLoss/d(similarity)
        lse_r, plse_r, sum_w_r = saved[:n_r]
        coef_r = torch.where(torch.isfinite(lse_r), grads[0], 0.0)
        if both:
            lse_c, plse_c, sum_w_c = saved[n_r:]
            coef_c = torch.where(torch.isfinite(lse_c), grads[2], 0.0) * scale
        q_scaled = _scaled(q, scale, spec.similarity)
        dq = torch.zeros_like(q) if need_q else None
        dk = torch.zeros_like(k) if need_k else None
        dscale = torch.zeros((), dtype=q.dtype, device=q.device)
        coef_rs = coef_r * scale
        for rs, cs in _tiles(q.shape[0], k.shape[0], tile):
            t = _Tile(q, k, q_scaled, pairing, rs, cs, scale, spec)
            pr = None if plse_r is None else plse_r[rs]
            g = _add_d_logits(None, t, coef_rs[rs], lse_r[rs], pr, sum_w_r[rs], 1)
            if both:
                pc = None if plse_c is None else plse_c[cs]
                g = _add_d_logits(g, t, coef_c[cs], lse_c[cs], pc, sum_w_c[cs], 0)
            if need_scale:  # sum_ij dLoss/dlogits_ij * logits_ij / scale
                dscale += torch.dot(g.view(-1), t.logits.reshape(-1))
            _accumulate_sim_grads(g, q, k, rs, cs, dq, dk, spec.similarity)
        d_extra = None
        if need_extra:
            d_extra = coef_r * torch.exp(extra_lse - lse_r)
        d_scale = (dscale / (scale * scale)).to(scale.dtype) if need_scale else None
        return dq, dk, d_scale, d_extra, None, None, None, None


def _tiles(b: int, n: int, tile: int):
    """The ``(rows, cols)`` slices of every tile, row tiles outer."""
    for r0 in range(0, b, tile):
        for c0 in range(0, n, tile):
            yield slice(r0, min(r0 + tile, b)), slice(c0, min(c0 + tile, n))


def _scaled(q: Tensor, scale: Tensor, similarity: str) -> Tensor | None:
    """``scale * q`` for the similarities that are a plain matrix product, else ``None``."""
    return q * scale if similarity in ("cosine", "dot") else None


def _logits(q, k, q_scaled, rs: slice, cs: slice, scale, similarity: str) -> Tensor:
    """``scale * s(q[rs], k[cs])``."""
    if q_scaled is not None:
        return q_scaled[rs] @ k[cs].T
    return pairwise_similarity(q[rs], k[cs], similarity) * scale


def _accumulate_sim_grads(d_sim, q, k, rs, cs, dq, dk, similarity: str) -> None:
    """``dq[rs] += d/dq sum(d_sim * s(q[rs], k[cs]))`` and the same for ``dk[cs]``, in place."""
    euclid = similarity == "neg_sq_euclidean"  # s = 2 q.k - |q|^2 - |k|^2
    alpha = 2.0 if euclid else 1.0
    if dq is not None:
        dq[rs].addmm_(d_sim, k[cs], alpha=alpha)
        if euclid:
            dq[rs].sub_(2.0 * d_sim.sum(1, keepdim=True) * q[rs])
    if dk is not None:
        dk[cs].addmm_(d_sim.T, q[rs], alpha=alpha)
        if euclid:
            dk[cs].sub_(2.0 * d_sim.sum(0)[:, None] * k[cs])


class _StreamingLSE(torch.autograd.Function):
    """``LSE_i = log sum_m exp(scale * s(q_i, x_m))`` over a large set ``x`` (shared negatives)."""

    @staticmethod
    def forward(ctx, q, x, scale, similarity, tile):
        q_scaled = _scaled(q, scale, similarity)
        lse = torch.full((q.shape[0],), float("-inf"), dtype=q.dtype, device=q.device)
        for rs, cs in _tiles(q.shape[0], x.shape[0], tile):
            lse[rs] = _lse_update(lse[rs], _logits(q, x, q_scaled, rs, cs, scale, similarity), 1)
        ctx.setup = (similarity, tile)
        ctx.save_for_backward(q, x, scale, lse)
        return lse

    @staticmethod
    @autocast_off  # recomputed tiles in float32, as in forward
    def backward(ctx, grad):
        similarity, tile = ctx.setup
        q, x, scale, lse = ctx.saved_tensors
        need_q, need_x, need_scale = ctx.needs_input_grad[:3]
        q_scaled = _scaled(q, scale, similarity)
        dq = torch.zeros_like(q) if need_q else None
        dx = torch.zeros_like(x) if need_x else None
        dscale = torch.zeros((), dtype=q.dtype, device=q.device)
        coef = grad * scale
        for rs, cs in _tiles(q.shape[0], x.shape[0], tile):
            logits = _logits(q, x, q_scaled, rs, cs, scale, similarity)
            g = torch.exp(logits - lse[rs, None]).mul_(coef[rs, None])
            if need_scale:
                dscale += torch.dot(g.view(-1), logits.view(-1))
            _accumulate_sim_grads(g, q, x, rs, cs, dq, dx, similarity)
        d_scale = (dscale / (scale * scale)).to(scale.dtype) if need_scale else None
        return dq, dx, d_scale, None, None


def _extra_lse(
    q: Tensor,
    negatives: Tensor | None,
    shared_negatives: Tensor | None,
    scale: Tensor,
    similarity: str,
    tile: int,
) -> Tensor | None:
    """Log-sum-exp of each query's extra-negative logits, ``(B,)``, or ``None``."""
    parts = []
    if negatives is not None:
        n = prepare(negatives, similarity)
        parts.append(torch.logsumexp(rowwise_similarity(q, n, similarity) * scale, dim=1))
    if shared_negatives is not None:
        x = prepare(shared_negatives, similarity)
        parts.append(_StreamingLSE.apply(q, x, scale, similarity, tile))
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else torch.logaddexp(parts[0], parts[1])


def _prepare_pair(query: Tensor, key: Tensor, similarity: str) -> tuple[Tensor, Tensor]:
    q = prepare(query, similarity)
    return q, (q if key is query else prepare(key, similarity))


def _check_constant_weights(pairing: Pairing) -> None:
    if pairing.weights is not None and pairing.weights.requires_grad:
        raise ValueError(
            "the streaming engine treats positives= weights as constants, but they require "
            "grad; use engine='dense' to differentiate through them"
        )


def infonce_rows(
    query: Tensor,
    key: Tensor,
    pairing: Pairing,
    scale: float | Tensor,
    spec: InfoNCESpec,
    negatives: Tensor | None = None,
    shared_negatives: Tensor | None = None,
    both_directions: bool = False,
    *,
    tile: int | None = None,
) -> list[tuple[Tensor, Tensor]]:
    """Per-row InfoNCE losses and validity, as :func:`contrastkit.engine.dense.infonce_rows`,
    computed tile by tile (``tile`` defaults to :data:`DEFAULT_TILE`)."""
    tile = _tile_size(tile, query.device)
    _check_constant_weights(pairing)
    with no_autocast(query.device):  # float32 logits under torch.autocast too
        q, k = _prepare_pair(query, key, spec.similarity)
        scale_t = _as_scalar_tensor(scale, q)
        extra = _extra_lse(q, negatives, shared_negatives, scale_t, spec.similarity, tile)
        out = _StreamingInfoNCE.apply(q, k, scale_t, extra, pairing, spec, both_directions, tile)
    return [(out[0], out[1])] + ([(out[2], out[3])] if both_directions else [])


class _StreamingSigmoid(torch.autograd.Function):
    """Per-row sums of the pairwise sigmoid loss ``softplus(x) - y x``, ``x = t s + b``."""

    @staticmethod
    def forward(ctx, q, k, scale, bias, pairing, similarity, tile):
        rows = torch.zeros(q.shape[0], dtype=q.dtype, device=q.device)
        for rs, cs in _tiles(q.shape[0], k.shape[0], tile):
            sim = pairwise_similarity(q[rs], k[cs], similarity)
            y, exclude = pairing.tile(rs.start, rs.stop, cs.start, cs.stop, sim.dtype)
            x = sim * scale + bias
            terms = torch.nn.functional.softplus(x) - y * x
            if exclude is not None:
                terms = terms.masked_fill(exclude, 0.0)
            rows[rs] += terms.sum(1)
        ctx.setup = (pairing, similarity, tile)
        ctx.save_for_backward(q, k, scale, bias)
        return rows

    @staticmethod
    @autocast_off  # recomputed tiles in float32, as in forward
    def backward(ctx, grad):
        pairing, similarity, tile = ctx.setup
        q, k, scale, bias = ctx.saved_tensors
        need_q, need_k, need_scale, need_bias = ctx.needs_input_grad[:4]
        dq = torch.zeros_like(q) if need_q else None
        dk = torch.zeros_like(k) if need_k else None
        dscale = torch.zeros((), dtype=q.dtype, device=q.device)
        dbias = torch.zeros_like(dscale)
        for rs, cs in _tiles(q.shape[0], k.shape[0], tile):
            sim = pairwise_similarity(q[rs], k[cs], similarity)
            y, exclude = pairing.tile(rs.start, rs.stop, cs.start, cs.stop, sim.dtype)
            g = torch.sigmoid(sim * scale + bias).sub_(y).mul_(grad[rs, None])
            if exclude is not None:
                g = g.masked_fill(exclude, 0.0)
            if need_scale:
                dscale += torch.dot(g.view(-1), sim.view(-1))
            if need_bias:
                dbias += g.sum()
            _accumulate_sim_grads(g.mul_(scale), q, k, rs, cs, dq, dk, similarity)
        d_scale = dscale.to(scale.dtype) if need_scale else None
        d_bias = dbias.to(bias.dtype) if need_bias else None
        return dq, dk, d_scale, d_bias, None, None, None


def sigmoid_rows(
    query: Tensor,
    key: Tensor,
    pairing: Pairing,
    scale: float | Tensor,
    bias: float | Tensor,
    similarity: str,
    *,
    tile: int | None = None,
) -> Tensor:
    """Per-row sums of the sigmoid loss, as :func:`contrastkit.engine.dense.sigmoid_rows`,
    computed tile by tile."""
    tile = _tile_size(tile, query.device)
    _check_constant_weights(pairing)
    with no_autocast(query.device):
        q, k = _prepare_pair(query, key, similarity)
        scale_t = _as_scalar_tensor(scale, q)
        bias_t = _as_scalar_tensor(bias, q)
        return _StreamingSigmoid.apply(q, k, scale_t, bias_t, pairing, similarity, tile)
