"""The streaming engine: the logits in ``tile x tile`` blocks, never the whole ``B x N`` matrix.

Forward, each query tile meets each key tile once; the tile's logits update running per-row (and,
for symmetric losses, per-column) statistics and are dropped:

- the denominator's log-sum-exp with an online running maximum (as in FlashAttention, Dao et al.
  2022; Milakov & Gimelshein 2018): ``m' = max(m, max_j l_ij)``,
  ``s' = s exp(m - m') + sum_j exp(l_ij - m')``, ``LSE = m + log s`` -- never a fixed shift, so
  logits of any size (temperature 0.01, a logit-scale cap of 100) neither overflow nor underflow;
- ``sum_j w_ij`` and ``sum_j w_ij l_ij`` (variant ``"out"``) or the log-sum-exp of
  ``l_ij + log w_ij`` over the positives (variant ``"in"``).

Backward (a custom :class:`torch.autograd.Function`) recomputes each tile and forms
``G = dLoss/dlogits`` from the saved ``O(B)`` statistics -- for a valid row ``i`` with upstream
gradient ``g_i``::

    G_ij = g_i (exp(l_ij - LSE_i) [j in A(i)] - w_ij / sum_j w_ij)             ("out")
    G_ij = g_i (exp(l_ij - LSE_i) [j in A(i)] - w_ij exp(l_ij - PLSE_i))       ("in")

plus the same with the column statistics when both directions are asked for, then
``dq += scale G k``, ``dk += scale G^T q`` and ``dscale += sum G (s - margin [w > 0])``.  Memory is
``O(B D + N D + tile^2)``; the pairing is evaluated per tile (:meth:`Pairing.tile`).

Extra negatives are folded in through their log-sum-exp: per-query negatives ``(B, K, D)`` with
plain autograd (``O(B K)``, the size of the input), shared negatives ``(M, D)`` with the same
tiled online log-sum-exp (:class:`_StreamingLSE`).

Determinism: tiles are visited in a fixed order and every reduction is a plain tensor op in that
order (no atomics, no ``index_add``), so two runs on the same device, shapes and tile size give
bit-identical losses and gradients (on CUDA as far as cuBLAS is: set
``CUBLAS_WORKSPACE_CONFIG=:4096:8`` and ``torch.use_deterministic_algorithms(True)``).  A different
tile size changes the summation order and therefore the last bits.

The tile size is ``tile=`` on the engine functions, else the module attribute
:data:`DEFAULT_TILE` (``contrastkit.engine.streaming.DEFAULT_TILE = 512`` sets it for the losses).

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
from contrastkit.similarity import pairwise_similarity, prepare, rowwise_similarity

#: Rows (and columns) per tile; ``tile^2`` logits live at a time.  1024 balances matmul
#: efficiency against cache size on CPUs; the GPU prefers larger tiles (see the benchmarks).
DEFAULT_TILE = 1024


def _tile_size(tile: int | None) -> int:
    t = DEFAULT_TILE if tile is None else tile
    if isinstance(t, bool) or not isinstance(t, int) or t < 1:
        raise ValueError(f"tile must be a positive int, got {t!r}")
    return t


def _as_scalar_tensor(value: float | Tensor, like: Tensor) -> Tensor:
    if isinstance(value, Tensor):
        return value.reshape(())
    return torch.tensor(float(value), dtype=like.dtype, device=like.device)


def _sim_backward(
    d_sim: Tensor, q: Tensor, k: Tensor, similarity: str, need_q: bool, need_k: bool
) -> tuple[Tensor | None, Tensor | None]:
    """Gradients of ``sum(d_sim * pairwise_similarity(q, k))`` w.r.t. the prepared q and k."""
    dq = d_sim @ k if need_q else None
    dk = d_sim.T @ q if need_k else None
    if similarity == "neg_sq_euclidean":  # s = 2 q.k - |q|^2 - |k|^2
        dq = None if dq is None else 2.0 * dq - 2.0 * d_sim.sum(1, keepdim=True) * q
        dk = None if dk is None else 2.0 * dk - 2.0 * d_sim.sum(0)[:, None] * k
    return dq, dk


def _online_lse(m: Tensor, s: Tensor, x: Tensor, dim: int) -> tuple[Tensor, Tensor]:
    """One step of the running log-sum-exp ``(m, s)`` over a tile ``x`` along ``dim``."""
    m_new = torch.maximum(m, x.amax(dim))
    s_new = s * torch.exp(m - m_new) + torch.exp(x - m_new.unsqueeze(dim)).sum(dim)
    return m_new, s_new


class _Tile:
    """One ``rows x keys`` block of logits and its pairing, as forward and backward need it."""

    def __init__(
        self,
        q: Tensor,
        k: Tensor,
        pairing: Pairing,
        rows: slice,
        cols: slice,
        scale: Tensor,
        spec: InfoNCESpec,
    ):
        self.sim = pairwise_similarity(q[rows], k[cols], spec.similarity)
        fill = masked_fill_value(self.sim.dtype)
        self.w, exclude = pairing.tile(rows.start, rows.stop, cols.start, cols.stop, self.sim.dtype)
        self.pos = self.w > 0
        # d logits / d scale: the similarity, minus the margin on positive pairs
        self.base = (
            self.sim - spec.margin * self.pos.to(self.sim.dtype) if spec.margin else self.sim
        )
        self.logits = self.base * scale
        den = None if exclude is None else ~exclude
        if spec.decoupled:
            den = ~self.pos if den is None else den & ~self.pos
        self.den = den
        self.den_logits = self.logits if den is None else self.logits.masked_fill(~den, fill)
        self.pos_logits = None
        if spec.variant == "in":
            tiny = torch.finfo(self.sim.dtype).tiny
            log_w = self.w.clamp_min(tiny).log()
            self.pos_logits = torch.where(self.pos, self.logits + log_w, fill)


class _Stats:
    """Running statistics of one direction: per row (``dim=1``) or per column (``dim=0``)."""

    def __init__(self, n: int, like: Tensor, variant: str):
        fill = masked_fill_value(like.dtype)
        self.variant = variant
        self.m = torch.full((n,), fill, dtype=like.dtype, device=like.device)
        self.s = torch.zeros(n, dtype=like.dtype, device=like.device)
        self.sum_w = torch.zeros_like(self.s)
        self.has_den = torch.zeros(n, dtype=torch.bool, device=like.device)
        # "out": sum_j w_ij l_ij; "in": running (max, sum) of the positives' log-sum-exp
        self.pos_a = torch.zeros_like(self.s) if variant == "out" else self.m.clone()
        self.pos_b = torch.zeros_like(self.s)

    def update(self, t: _Tile, idx: slice, dim: int) -> None:
        self.m[idx], self.s[idx] = _online_lse(self.m[idx], self.s[idx], t.den_logits, dim)
        if t.den is None:
            self.has_den[idx] = True
        else:
            self.has_den[idx] |= t.den.any(dim)
        self.sum_w[idx] += t.w.sum(dim)
        if self.variant == "out":
            self.pos_a[idx] += (t.w * t.logits).sum(dim)
        else:
            self.pos_a[idx], self.pos_b[idx] = _online_lse(
                self.pos_a[idx], self.pos_b[idx], t.pos_logits, dim
            )

    def finish(self, extra_lse: Tensor | None) -> tuple[Tensor, ...]:
        """Per-row losses, validity, and what backward needs (``+inf`` LSEs on invalid rows, so
        that their ``exp(l - LSE)`` is exactly 0)."""
        lse = self.m + self.s.log()
        has_den = self.has_den
        if extra_lse is not None:
            lse = torch.logaddexp(lse, extra_lse)
            has_den = torch.ones_like(has_den)
        valid = (self.sum_w > 0) & has_den
        safe_sum_w = torch.where(valid, self.sum_w, torch.ones_like(self.sum_w))
        if self.variant == "out":
            plse = None
            positive_term = self.pos_a / safe_sum_w
        else:
            plse = self.pos_a + self.pos_b.log()
            positive_term = plse - safe_sum_w.log()
        loss = torch.where(valid, lse - positive_term, torch.zeros_like(lse))
        inf = torch.full_like(lse, float("inf"))
        lse_bw = torch.where(valid, lse, inf)
        plse_bw = None if plse is None else torch.where(valid, plse, inf)
        return loss, valid, lse_bw, plse_bw, safe_sum_w


def _d_logits(t: _Tile, coef: Tensor, lse: Tensor, plse: Tensor | None, sum_w: Tensor, dim: int):
    """``dLoss/dlogits`` of one direction on a tile (``dim=1`` rows, ``dim=0`` columns)."""
    coef, lse, sum_w = coef.unsqueeze(dim), lse.unsqueeze(dim), sum_w.unsqueeze(dim)
    if plse is None:
        d_pos = t.w / sum_w
    else:
        d_pos = torch.exp(t.pos_logits - plse.unsqueeze(dim))
    return coef * (torch.exp(t.den_logits - lse) - d_pos)


class _StreamingInfoNCE(torch.autograd.Function):
    """Per-row InfoNCE losses of query->key (and key->query), tile by tile."""

    @staticmethod
    def forward(ctx, q, k, scale, extra_lse, pairing, spec, both, tile):
        b, n = q.shape[0], k.shape[0]
        rows = _Stats(b, q, spec.variant)
        cols = _Stats(n, q, spec.variant) if both else None
        for r0 in range(0, b, tile):
            rs = slice(r0, min(r0 + tile, b))
            for c0 in range(0, n, tile):
                cs = slice(c0, min(c0 + tile, n))
                t = _Tile(q, k, pairing, rs, cs, scale, spec)
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
    def backward(ctx, *grads):
        pairing, spec, both, tile, n_r, n_c = ctx.setup
        q, k, scale, extra_lse, *saved = ctx.saved_tensors
        lse_r, plse_r, sum_w_r = saved[:n_r]
        coef_r = torch.where(torch.isfinite(lse_r), grads[0], 0.0)
        if both:
            lse_c, plse_c, sum_w_c = saved[n_r:]
            coef_c = torch.where(torch.isfinite(lse_c), grads[2], 0.0)
        need_q, need_k, need_scale, need_extra = ctx.needs_input_grad[:4]
        dq = torch.zeros_like(q) if need_q else None
        dk = torch.zeros_like(k) if need_k else None
        dscale = torch.zeros((), dtype=q.dtype, device=q.device)
        b, n = q.shape[0], k.shape[0]
        for r0 in range(0, b, tile):
            rs = slice(r0, min(r0 + tile, b))
            for c0 in range(0, n, tile):
                cs = slice(c0, min(c0 + tile, n))
                t = _Tile(q, k, pairing, rs, cs, scale, spec)
                pr = None if plse_r is None else plse_r[rs]
                g = _d_logits(t, coef_r[rs], lse_r[rs], pr, sum_w_r[rs], 1)
                if both:
                    pc = None if plse_c is None else plse_c[cs]
                    g = g + _d_logits(t, coef_c[cs], lse_c[cs], pc, sum_w_c[cs], 0)
                if need_scale:
                    dscale += (g * t.base).sum()
                dq_t, dk_t = _sim_backward(g * scale, q[rs], k[cs], spec.similarity, need_q, need_k)
                if need_q:
                    dq[rs] += dq_t
                if need_k:
                    dk[cs] += dk_t
        d_extra = None
        if need_extra:
            d_extra = coef_r * torch.exp(extra_lse - lse_r)
        d_scale = dscale.to(scale.dtype) if need_scale else None
        return dq, dk, d_scale, d_extra, None, None, None, None


class _StreamingLSE(torch.autograd.Function):
    """``LSE_i = log sum_m exp(scale * s(q_i, x_m))`` over a large set ``x`` (shared negatives)."""

    @staticmethod
    def forward(ctx, q, x, scale, similarity, tile):
        fill = masked_fill_value(q.dtype)
        m = torch.full((q.shape[0],), fill, dtype=q.dtype, device=q.device)
        s = torch.zeros_like(m)
        for r0 in range(0, q.shape[0], tile):
            rs = slice(r0, r0 + tile)
            for c0 in range(0, x.shape[0], tile):
                logits = pairwise_similarity(q[rs], x[c0 : c0 + tile], similarity) * scale
                m[rs], s[rs] = _online_lse(m[rs], s[rs], logits, 1)
        lse = m + s.log()
        ctx.setup = (similarity, tile)
        ctx.save_for_backward(q, x, scale, lse)
        return lse

    @staticmethod
    def backward(ctx, grad):
        similarity, tile = ctx.setup
        q, x, scale, lse = ctx.saved_tensors
        need_q, need_x, need_scale = ctx.needs_input_grad[:3]
        dq = torch.zeros_like(q) if need_q else None
        dx = torch.zeros_like(x) if need_x else None
        dscale = torch.zeros((), dtype=q.dtype, device=q.device)
        for r0 in range(0, q.shape[0], tile):
            rs = slice(r0, r0 + tile)
            for c0 in range(0, x.shape[0], tile):
                cs = slice(c0, c0 + tile)
                sim = pairwise_similarity(q[rs], x[cs], similarity)
                g = grad[rs, None] * torch.exp(sim * scale - lse[rs, None])
                if need_scale:
                    dscale += (g * sim).sum()
                dq_t, dx_t = _sim_backward(g * scale, q[rs], x[cs], similarity, need_q, need_x)
                if need_q:
                    dq[rs] += dq_t
                if need_x:
                    dx[cs] += dx_t
        return dq, dx, (dscale.to(scale.dtype) if need_scale else None), None, None


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
    tile = _tile_size(tile)
    _check_constant_weights(pairing)
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
        for r0, _, sim, y, exclude in _sigmoid_tiles(q, k, pairing, similarity, tile):
            x = sim * scale + bias
            terms = torch.nn.functional.softplus(x) - y * x
            if exclude is not None:
                terms = terms.masked_fill(exclude, 0.0)
            rows[r0 : r0 + tile] += terms.sum(1)
        ctx.setup = (pairing, similarity, tile)
        ctx.save_for_backward(q, k, scale, bias)
        return rows

    @staticmethod
    def backward(ctx, grad):
        pairing, similarity, tile = ctx.setup
        q, k, scale, bias = ctx.saved_tensors
        need_q, need_k, need_scale, need_bias = ctx.needs_input_grad[:4]
        dq = torch.zeros_like(q) if need_q else None
        dk = torch.zeros_like(k) if need_k else None
        dscale = torch.zeros((), dtype=q.dtype, device=q.device)
        dbias = torch.zeros_like(dscale)
        for r0, c0, sim, y, exclude in _sigmoid_tiles(q, k, pairing, similarity, tile):
            g = grad[r0 : r0 + tile, None] * (torch.sigmoid(sim * scale + bias) - y)
            if exclude is not None:
                g = g.masked_fill(exclude, 0.0)
            if need_scale:
                dscale += (g * sim).sum()
            if need_bias:
                dbias += g.sum()
            rs, cs = slice(r0, r0 + tile), slice(c0, c0 + tile)
            dq_t, dk_t = _sim_backward(g * scale, q[rs], k[cs], similarity, need_q, need_k)
            if need_q:
                dq[rs] += dq_t
            if need_k:
                dk[cs] += dk_t
        d_scale = dscale.to(scale.dtype) if need_scale else None
        d_bias = dbias.to(bias.dtype) if need_bias else None
        return dq, dk, d_scale, d_bias, None, None, None


def _sigmoid_tiles(q: Tensor, k: Tensor, pairing: Pairing, similarity: str, tile: int):
    b, n = q.shape[0], k.shape[0]
    for r0 in range(0, b, tile):
        r1 = min(r0 + tile, b)
        for c0 in range(0, n, tile):
            c1 = min(c0 + tile, n)
            sim = pairwise_similarity(q[r0:r1], k[c0:c1], similarity)
            y, exclude = pairing.tile(r0, r1, c0, c1, sim.dtype)
            yield r0, c0, sim, y, exclude


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
    tile = _tile_size(tile)
    _check_constant_weights(pairing)
    q, k = _prepare_pair(query, key, similarity)
    scale_t = _as_scalar_tensor(scale, q)
    bias_t = _as_scalar_tensor(bias, q)
    return _StreamingSigmoid.apply(q, k, scale_t, bias_t, pairing, similarity, tile)
