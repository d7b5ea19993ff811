"""Triton kernels of the fused engine (imported lazily by :mod:`contrastkit.engine.fused`).

A tile of logits ``l_ij = scale (s_ij - margin [pos_ij])``, ``s = X Y^T``, lives only in
registers: the kernels read ``X`` and ``Y`` in ``BLOCK_D`` slices and accumulate the tile in
float32, whatever the input dtype.  Pairing flags:

- ``PAIRING``: 0 none (every pair a negative), 1 diagonal (``i == j``), 2 labels (``XL_i == YL_j``);
- ``EXCLUDE_SELF``: the pairs ``i == j`` leave the positives and the denominator;
- ``MASK``: which pairs a log-sum-exp runs over -- 0 the denominator (not excluded, minus the
  positives when ``DECOUPLED``), 1 the positives.

``_lse_fwd``: per row of ``X``, the masked log-sum-exp with an online running maximum, the count
of positives and ``sum_j pos_ij l_ij``; with ``COLS``, the same per column in one pass.  Each of
the ``P`` programs owns a slice ``[pid, :]`` of the column buffers and merges the tiles of its row
blocks into it; the wrapper reduces the ``P`` partials.  No atomics: runs are bit-identical.

``_sigmoid_fwd``: per row, ``sum_j softplus(x_ij) - pos_ij x_ij`` over pairs not excluded,
``x = scale s + bias``.

``_bwd``: recomputes the tiles of a row block, forms ``G = dLoss/dlogits`` from per-row (``X``)
and per-column (``Y``) statistics and accumulates ``dX = scale G Y`` for one ``BLOCK_DOUT`` slice
of the features, plus per-program partial sums of ``dscale`` (and ``dbias``).  ``dY`` is the same
kernel on the transposed problem (``X <-> Y``): two recomputations, no atomics.
"""

from __future__ import annotations

import triton
import triton.language as tl

#: running-maximum floor: below any logit, far above -inf (so that ``exp(floor - m) = 0``)
FLOOR = -1.0e30


@triton.jit
def _sim_tile(
    X, Y, rows, cols, M, N, D, stride_x, stride_y,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    UPCAST: tl.constexpr, PRECISION: tl.constexpr,
):  # fmt: skip
    """``X[rows] @ Y[cols]^T`` in float32, ``BLOCK_D`` features at a time."""
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for d0 in range(0, D, BLOCK_D):
        dd = d0 + tl.arange(0, BLOCK_D)
        x = tl.load(
            X + rows[:, None].to(tl.int64) * stride_x + dd[None, :],
            mask=(rows[:, None] < M) & (dd[None, :] < D),
            other=0.0,
        )
        y = tl.load(
            Y + cols[None, :].to(tl.int64) * stride_y + dd[:, None],
            mask=(cols[None, :] < N) & (dd[:, None] < D),
            other=0.0,
        )
        if UPCAST:  # the interpreter has no bfloat16 matmul
            x = x.to(tl.float32)
            y = y.to(tl.float32)
        acc = tl.dot(x, y, acc, input_precision=PRECISION)
    return acc


@triton.jit
def _pairs(
    XL, YL, rows, cols, M, N,
    PAIRING: tl.constexpr, EXCLUDE_SELF: tl.constexpr,
):  # fmt: skip
    """``(pos, kept)``: positive pairs and pairs not excluded (both inside the grid)."""
    kept = (rows[:, None] < M) & (cols[None, :] < N)
    if EXCLUDE_SELF:
        kept = kept & (rows[:, None] != cols[None, :])
    if PAIRING == 1:
        pos = rows[:, None] == cols[None, :]
    elif PAIRING == 2:
        xl = tl.load(XL + rows, mask=rows < M, other=0)
        yl = tl.load(YL + cols, mask=cols < N, other=0)
        pos = xl[:, None] == yl[None, :]
    else:
        pos = rows[:, None] < 0
    return pos & kept, kept


@triton.jit
def _softplus(x):
    """``log(1 + exp(x))`` without overflow, with an accurate ``log1p`` (Goldberg's trick)."""
    z = tl.exp(-tl.abs(x))
    u = 1.0 + z
    exact = u == 1.0
    log1p = tl.where(exact, z, tl.log(u) * z / tl.where(exact, 1.0, u - 1.0))
    return tl.maximum(x, 0.0) + log1p


@triton.jit
def _lse_fwd(
    X, Y, XL, YL, Scale, margin,
    RowLse, RowPsum, RowCnt, ColM, ColS, ColPsum, ColCnt,
    M, N, D, stride_x, stride_y,
    PAIRING: tl.constexpr, EXCLUDE_SELF: tl.constexpr, DECOUPLED: tl.constexpr,
    MASK: tl.constexpr, COLS: tl.constexpr, HAS_MARGIN: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    UPCAST: tl.constexpr, PRECISION: tl.constexpr,
):  # fmt: skip
    pid = tl.program_id(0)
    num_programs = tl.num_programs(0)
    scale = tl.load(Scale).to(tl.float32)
    for rb in range(pid, tl.cdiv(M, BLOCK_M), num_programs):
        rows = rb * BLOCK_M + tl.arange(0, BLOCK_M)
        m_r = tl.full((BLOCK_M,), FLOOR, dtype=tl.float32)
        s_r = tl.zeros((BLOCK_M,), dtype=tl.float32)
        psum_r = tl.zeros((BLOCK_M,), dtype=tl.float32)
        cnt_r = tl.zeros((BLOCK_M,), dtype=tl.float32)
        for c0 in range(0, N, BLOCK_N):
            cols = c0 + tl.arange(0, BLOCK_N)
            sim = _sim_tile(
                X, Y, rows, cols, M, N, D, stride_x, stride_y,
                BLOCK_M, BLOCK_N, BLOCK_D, UPCAST, PRECISION,
            )  # fmt: skip
            pos, kept = _pairs(XL, YL, rows, cols, M, N, PAIRING, EXCLUDE_SELF)
            posf = pos.to(tl.float32)
            if HAS_MARGIN:
                logits = scale * (sim - margin * posf)
            else:
                logits = scale * sim
            if MASK == 1:
                in_lse = pos
            elif DECOUPLED:
                in_lse = kept & (pos == 0)
            else:
                in_lse = kept
            masked = tl.where(in_lse, logits, float("-inf"))
            wl = tl.where(pos, logits, 0.0)
            m_new = tl.maximum(m_r, tl.max(masked, 1))
            s_r = s_r * tl.exp(m_r - m_new) + tl.sum(tl.exp(masked - m_new[:, None]), 1)
            m_r = m_new
            psum_r += tl.sum(wl, 1)
            cnt_r += tl.sum(posf, 1)
            if COLS:
                col_m = tl.maximum(tl.max(masked, 0), FLOOR)
                col_s = tl.sum(tl.exp(masked - col_m[None, :]), 0)
                off = pid.to(tl.int64) * N + cols
                in_n = cols < N
                old_m = tl.load(ColM + off, mask=in_n, other=FLOOR)
                old_s = tl.load(ColS + off, mask=in_n, other=0.0)
                new_m = tl.maximum(old_m, col_m)
                new_s = old_s * tl.exp(old_m - new_m) + col_s * tl.exp(col_m - new_m)
                tl.store(ColM + off, new_m, mask=in_n)
                tl.store(ColS + off, new_s, mask=in_n)
                old_p = tl.load(ColPsum + off, mask=in_n, other=0.0)
                tl.store(ColPsum + off, old_p + tl.sum(wl, 0), mask=in_n)
                old_c = tl.load(ColCnt + off, mask=in_n, other=0.0)
                tl.store(ColCnt + off, old_c + tl.sum(posf, 0), mask=in_n)
        in_m = rows < M
        lse = tl.where(s_r > 0, m_r + tl.log(tl.where(s_r > 0, s_r, 1.0)), float("-inf"))
        tl.store(RowLse + rows, lse, mask=in_m)
        tl.store(RowPsum + rows, psum_r, mask=in_m)
        tl.store(RowCnt + rows, cnt_r, mask=in_m)


@triton.jit
def _sigmoid_fwd(
    X, Y, XL, YL, Scale, Bias, RowSum,
    M, N, D, stride_x, stride_y,
    PAIRING: tl.constexpr, EXCLUDE_SELF: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    UPCAST: tl.constexpr, PRECISION: tl.constexpr,
):  # fmt: skip
    pid = tl.program_id(0)
    scale = tl.load(Scale).to(tl.float32)
    bias = tl.load(Bias).to(tl.float32)
    rows = pid * BLOCK_M + tl.arange(0, BLOCK_M)
    acc = tl.zeros((BLOCK_M,), dtype=tl.float32)
    for c0 in range(0, N, BLOCK_N):
        cols = c0 + tl.arange(0, BLOCK_N)
        sim = _sim_tile(
            X, Y, rows, cols, M, N, D, stride_x, stride_y,
            BLOCK_M, BLOCK_N, BLOCK_D, UPCAST, PRECISION,
        )  # fmt: skip
        pos, kept = _pairs(XL, YL, rows, cols, M, N, PAIRING, EXCLUDE_SELF)
        x = scale * sim + bias
        terms = _softplus(x) - tl.where(pos, x, 0.0)
        acc += tl.sum(tl.where(kept, terms, 0.0), 1)
    tl.store(RowSum + rows, acc, mask=rows < M)


@triton.jit
def _bwd(
    X, Y, XL, YL, Scale, Bias, margin,
    LseX, GLseX, GPsumX, LseY, GLseY, GPsumY, GFactor,
    DX, DScale, DBias,
    M, N, D, stride_x, stride_y, stride_dx,
    LOSS: tl.constexpr, PAIRING: tl.constexpr, EXCLUDE_SELF: tl.constexpr,
    DECOUPLED: tl.constexpr, MASK: tl.constexpr, HAS_MARGIN: tl.constexpr,
    HAS_X: tl.constexpr, HAS_Y: tl.constexpr, SCALARS: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    BLOCK_DOUT: tl.constexpr, UPCAST: tl.constexpr, PRECISION: tl.constexpr,
):  # fmt: skip
    """``dX[rows, dout] = scale sum_j G_ij Y[j, dout]`` with, for the log-sum-exp loss (LOSS 0),
    ``G_ij = g_i exp(l_ij - LSE_i) [ij in mask] + p_i [pos_ij]`` from the row statistics ``X`` and
    the same from the column statistics ``Y``, and for the sigmoid loss (LOSS 1)
    ``G_ij = (g_i + g_j) (sigmoid(x_ij) - pos_ij) [kept_ij]``.  LSEs of rows without terms must be
    ``+inf`` (their ``exp`` is then 0).  ``scale G`` is multiplied by the power of two ``GFactor``
    before it is rounded to the input dtype for the tensor-core product (and ``dX`` divided by it
    after), so that float16 keeps its precision however small the upstream gradients are."""
    pid_m = tl.program_id(0)
    pid_d = tl.program_id(1)
    scale = tl.load(Scale).to(tl.float32)
    g_factor = tl.load(GFactor)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    dout = pid_d * BLOCK_DOUT + tl.arange(0, BLOCK_DOUT)
    in_m = rows < M
    if HAS_X:
        lse_x = tl.load(LseX + rows, mask=in_m, other=float("inf"))
        g_x = tl.load(GLseX + rows, mask=in_m, other=0.0)
        p_x = tl.load(GPsumX + rows, mask=in_m, other=0.0)
    if LOSS == 1:
        bias = tl.load(Bias).to(tl.float32)
    acc = tl.zeros((BLOCK_M, BLOCK_DOUT), dtype=tl.float32)
    d_scale = tl.zeros((BLOCK_M,), dtype=tl.float32)
    d_bias = tl.zeros((BLOCK_M,), dtype=tl.float32)
    for c0 in range(0, N, BLOCK_N):
        cols = c0 + tl.arange(0, BLOCK_N)
        in_n = cols < N
        sim = _sim_tile(
            X, Y, rows, cols, M, N, D, stride_x, stride_y,
            BLOCK_M, BLOCK_N, BLOCK_D, UPCAST, PRECISION,
        )  # fmt: skip
        pos, kept = _pairs(XL, YL, rows, cols, M, N, PAIRING, EXCLUDE_SELF)
        posf = pos.to(tl.float32)
        if LOSS == 0:
            if HAS_MARGIN:
                base = sim - margin * posf
            else:
                base = sim
            logits = scale * base
            if MASK == 1:
                in_lse = pos
            elif DECOUPLED:
                in_lse = kept & (pos == 0)
            else:
                in_lse = kept
            masked = tl.where(in_lse, logits, float("-inf"))
            g = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
            if HAS_X:
                g += g_x[:, None] * tl.exp(masked - lse_x[:, None]) + p_x[:, None] * posf
            if HAS_Y:
                lse_y = tl.load(LseY + cols, mask=in_n, other=float("inf"))
                g_y = tl.load(GLseY + cols, mask=in_n, other=0.0)
                p_y = tl.load(GPsumY + cols, mask=in_n, other=0.0)
                g += g_y[None, :] * tl.exp(masked - lse_y[None, :]) + p_y[None, :] * posf
            if SCALARS:
                d_scale += tl.sum(g * base, 1)
        else:
            coef = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
            if HAS_X:
                coef += tl.load(GLseX + rows, mask=in_m, other=0.0)[:, None]
            if HAS_Y:
                coef += tl.load(GLseY + cols, mask=in_n, other=0.0)[None, :]
            p = tl.sigmoid(scale * sim + bias)
            g = tl.where(kept, coef * (p - posf), 0.0)
            if SCALARS:
                d_scale += tl.sum(g * sim, 1)
                d_bias += tl.sum(g, 1)
        y_out = tl.load(
            Y + cols[:, None].to(tl.int64) * stride_y + dout[None, :],
            mask=in_n[:, None] & (dout[None, :] < D),
            other=0.0,
        )
        g_in = (g * (scale * g_factor)).to(y_out.dtype)
        if UPCAST:
            g_in = g_in.to(tl.float32)
            y_out = y_out.to(tl.float32)
        acc = tl.dot(g_in, y_out, acc, input_precision=PRECISION)
    tl.store(
        DX + rows[:, None].to(tl.int64) * stride_dx + dout[None, :],
        acc / g_factor,
        mask=in_m[:, None] & (dout[None, :] < D),
    )
    if SCALARS:
        if pid_d == 0:
            tl.store(DScale + pid_m, tl.sum(d_scale, 0))
            tl.store(DBias + pid_m, tl.sum(d_bias, 0))
