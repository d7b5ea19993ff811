"""The fused engine: Triton kernels (:mod:`contrastkit.engine.fused_kernels`) in which a logits
tile lives only in registers and shared memory.

Supported: diagonal and label pairings (``exclude_self`` included, no ``exclude=`` matrix),
cosine and dot similarity, float16 / bfloat16 / float32 inputs (float32 accumulation), every
InfoNCE option (``"out"`` / ``"in"``, symmetric, decoupled, margin, extra negatives, a learnable
temperature) and the sigmoid loss with learnable scale and bias.  :func:`supports` says whether
a configuration runs here; ``engine="auto"`` falls back to the streaming engine otherwise.

How the objective is split:

- one forward pass over the tiles yields, per row and per column, the denominator's log-sum-exp
  (online running maximum), the count of positives and ``sum_j pos_ij l_ij``
  (:class:`_FusedLSE`); variant ``"in"`` adds a second pass for the positives' log-sum-exp;
- the per-row losses ``LSE_i - psum_i / n_i`` are formed in torch, so that autograd brings the
  upstream gradients of the ``O(B)`` statistics to the backward kernel, which recomputes every
  tile and accumulates ``dq`` (and, on the transposed problem, ``dk``) without atomics.

Work: the forward pass computes each tile once (``2 B N D`` FLOPs) and yields both directions'
statistics; the backward recomputes each tile twice, once per gradient (``dq``: row blocks
accumulate ``G k`` in registers; ``dk``: the same kernel on the transposed problem), ``8 B N D``
FLOPs -- ``10 B N D`` in all, 25% above the minimal ``8 B N D`` schedule, which would accumulate
one of the two gradients across programs with float32 atomics (``(B / BLOCK_M) N D`` of them,
1.7e10 at B = 65536, D = 512) and lose determinism.  Memory: the inputs' normalised copies, the
gradients, and ``16 P N`` bytes of per-program column statistics (``P`` = 2 x the SM count).

Precision: the kernels multiply the inputs in their own dtype (bf16/fp16 tensor cores; float32
as IEEE, or TF32 when ``torch.backends.cuda.matmul.allow_tf32`` is set) and accumulate in
float32; cosine inputs are normalised in float32 and rounded back to the input dtype.  The
backward rounds ``scale * dLoss/dlogits`` to the input dtype for the tensor cores; under float16
it is first multiplied by a power of two (:func:`_gradient_factor`) so that small upstream
gradients (a mean over a large batch) do not underflow.

Determinism: the kernels use no atomics and reduce in a fixed order; two runs on one GPU give
bit-identical results.

On a CPU the kernels run only in Triton's interpreter (for tests): set ``TRITON_INTERPRET=1``
before ``triton`` is first imported -- Triton reads it when it defines its own library functions.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, replace
from types import ModuleType

import torch
from torch import Tensor

from contrastkit.objectives.infonce import InfoNCESpec
from contrastkit.pairing import Pairing
from contrastkit.similarity import no_autocast, prepare, rowwise_similarity

DTYPES = (torch.float16, torch.bfloat16, torch.float32)
SIMILARITIES = ("cosine", "dot")

#: launch parameters; the GPU values are a starting point for ``benchmarks/bench_engines_gpu.py``
GPU_CONFIG = {
    "fwd": dict(BLOCK_M=128, BLOCK_N=128, BLOCK_D=64, num_warps=8, num_stages=3),
    "bwd": dict(BLOCK_M=64, BLOCK_N=64, BLOCK_D=64, BLOCK_DOUT=256, num_warps=8, num_stages=2),
    "programs_per_sm": 2,
}
INTERPRET_CONFIG = {
    "fwd": dict(BLOCK_M=16, BLOCK_N=16, BLOCK_D=16),
    "bwd": dict(BLOCK_M=16, BLOCK_N=16, BLOCK_D=16, BLOCK_DOUT=16),
    "programs": 2,
}


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on", "yes")


def runs_on(device: torch.device) -> bool:
    """Whether the fused kernels can run on ``device``: a CUDA GPU, or any device under Triton's
    interpreter (``TRITON_INTERPRET=1``, for tests on a CPU)."""
    return device.type == "cuda" or _interpreting()


def _kernels() -> ModuleType:
    """The kernel module, imported on first use (so that ``import contrastkit`` stays light)."""
    return importlib.import_module("contrastkit.engine.fused_kernels")


def supports(
    query: Tensor,
    pairing: Pairing,
    *,
    spec: InfoNCESpec | None = None,
    similarity: str = "cosine",
) -> bool:
    """Whether the fused engine runs this configuration (device, dtype, pairing, similarity)."""
    return _unsupported(query, pairing, spec.similarity if spec else similarity) is None


def _unsupported(query: Tensor, pairing: Pairing, similarity: str) -> str | None:
    if not runs_on(query.device):
        return "a CUDA device (or TRITON_INTERPRET=1 on the CPU)"
    if query.dtype not in DTYPES:
        return f"float16, bfloat16 or float32 inputs, got {query.dtype}"
    if pairing.kind not in ("diagonal", "labels"):
        return f"a diagonal or label pairing, got {pairing.kind!r}"
    if pairing.exclude is not None:
        return "no exclude= matrix"
    if similarity not in SIMILARITIES:
        return f"cosine or dot similarity, got {similarity!r}"
    return None


def _check(query: Tensor, pairing: Pairing, similarity: str) -> None:
    why = _unsupported(query, pairing, similarity)
    if why is not None:
        raise ValueError(f"engine='fused' needs {why}; use engine='streaming' or 'auto'")


@dataclass(frozen=True)
class _Problem:
    """What the kernels need besides the two embedding matrices."""

    x_labels: Tensor
    y_labels: Tensor
    pairing: int  # 0 none, 1 diagonal, 2 labels
    exclude_self: bool
    decoupled: bool = False
    margin: float = 0.0
    mask: int = 0  # 0 denominator, 1 positives

    def transposed(self) -> _Problem:
        return replace(self, x_labels=self.y_labels, y_labels=self.x_labels)


def _problem(pairing: Pairing, device: torch.device, **options) -> _Problem:
    if pairing.kind == "labels":
        xl, yl = pairing.query_labels.to(torch.int64), pairing.key_labels.to(torch.int64)
        return _Problem(xl.contiguous(), yl.contiguous(), 2, pairing.exclude_self, **options)
    dummy = torch.zeros(1, dtype=torch.int64, device=device)
    kind = 1 if pairing.kind == "diagonal" else 0
    return _Problem(dummy, dummy, kind, pairing.exclude_self, **options)


def _precision(x: Tensor) -> str:
    if x.dtype == torch.float32 and x.is_cuda and torch.backends.cuda.matmul.allow_tf32:
        return "tf32"
    return "ieee"


def _launch_options(kind: str) -> dict:
    return dict((INTERPRET_CONFIG if _interpreting() else GPU_CONFIG)[kind])


def _num_programs(row_blocks: int, device: torch.device) -> int:
    if _interpreting():
        return min(row_blocks, INTERPRET_CONFIG["programs"])
    sms = torch.cuda.get_device_properties(device).multi_processor_count
    return max(1, min(row_blocks, sms * GPU_CONFIG["programs_per_sm"]))


def _lse_forward(x: Tensor, y: Tensor, scale: Tensor, prob: _Problem, cols: bool):
    """Row (and column) ``(lse, psum, count)`` of the masked logits ``x y^T``."""
    k = _kernels()
    m, n, d = x.shape[0], y.shape[0], x.shape[1]
    opts = _launch_options("fwd")
    programs = _num_programs(_cdiv(m, opts["BLOCK_M"]), x.device)
    f32 = dict(dtype=torch.float32, device=x.device)
    row = [torch.empty(m, **f32) for _ in range(3)]
    p_cols = programs if cols else 1
    col_m = torch.full((p_cols, n), k.FLOOR, **f32)
    col_rest = [torch.zeros(p_cols, n, **f32) for _ in range(3)]
    k._lse_fwd[(programs,)](
        x, y, prob.x_labels, prob.y_labels, scale, prob.margin,
        *row, col_m, *col_rest,
        m, n, d, x.stride(0), y.stride(0),
        PAIRING=prob.pairing, EXCLUDE_SELF=prob.exclude_self, DECOUPLED=prob.decoupled,
        MASK=prob.mask, COLS=cols, HAS_MARGIN=bool(prob.margin),
        UPCAST=_interpreting(), PRECISION=_precision(x), **opts,
    )  # fmt: skip
    if not cols:
        return row, None
    col_s, col_psum, col_cnt = col_rest
    col_lse = torch.logsumexp(col_m + col_s.log(), dim=0)
    return row, [col_lse, col_psum.sum(0), col_cnt.sum(0)]


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def _backward_rows(
    x: Tensor,
    y: Tensor,
    scale: Tensor,
    bias: Tensor | None,
    prob: _Problem,
    stats_x: tuple[Tensor, Tensor, Tensor] | None,
    stats_y: tuple[Tensor, Tensor, Tensor] | None,
    loss: int,
    scalars: bool,
) -> tuple[Tensor, Tensor, Tensor]:
    """``dX`` (float32) and the partial sums of ``dscale`` / ``dbias`` (see ``_bwd``)."""
    k = _kernels()
    m, n, d = x.shape[0], y.shape[0], x.shape[1]
    opts = _launch_options("bwd")
    grid = (_cdiv(m, opts["BLOCK_M"]), _cdiv(d, opts["BLOCK_DOUT"]))
    dx = torch.empty(m, d, dtype=torch.float32, device=x.device)
    d_scale = torch.zeros(grid[0], dtype=torch.float32, device=x.device)
    d_bias = torch.zeros_like(d_scale)
    none = torch.zeros(1, dtype=torch.float32, device=x.device)
    sx = [none if t is None else t for t in (stats_x or (None,) * 3)]
    sy = [none if t is None else t for t in (stats_y or (None,) * 3)]
    factor = _gradient_factor(x.dtype, scale, stats_x, stats_y)
    k._bwd[grid](
        x, y, prob.x_labels, prob.y_labels, scale, none if bias is None else bias, prob.margin,
        *sx, *sy, factor, dx, d_scale, d_bias,
        m, n, d, x.stride(0), y.stride(0), dx.stride(0),
        LOSS=loss, PAIRING=prob.pairing, EXCLUDE_SELF=prob.exclude_self,
        DECOUPLED=prob.decoupled, MASK=prob.mask, HAS_MARGIN=bool(prob.margin),
        HAS_X=stats_x is not None, HAS_Y=stats_y is not None, SCALARS=scalars,
        UPCAST=_interpreting(), PRECISION=_precision(x), **opts,
    )  # fmt: skip
    return dx, d_scale, d_bias


def _gradient_factor(dtype: torch.dtype, scale: Tensor, *stats) -> Tensor:
    """A power of two that brings ``scale * dLoss/dlogits`` near 2^14 before the kernel rounds
    it to float16 (whose normal range starts at 6e-5: a mean over a large batch would underflow);
    1 for the other dtypes (bfloat16 has float32's range)."""
    one = torch.ones(1, dtype=torch.float32, device=scale.device)
    if dtype != torch.float16:
        return one
    # |dLoss/dlogits_ij| <= sum over the two directions of |g| + |p| (each exp(l - LSE) <= 1)
    bound = sum(t.abs().amax() for s in stats if s is not None for t in s[1:] if t is not None)
    bound = (bound * scale.detach().abs().float()).clamp_min(1e-30)
    return torch.exp2(torch.floor(torch.log2(2.0**14 / bound))).reshape(1).clamp(max=2.0**100)


def _bw_lse(lse: Tensor) -> Tensor:
    """LSEs for the backward kernel: ``+inf`` where no pair was in the log-sum-exp."""
    return torch.where(torch.isfinite(lse), lse, float("inf"))


class _FusedLSE(torch.autograd.Function):
    """``(lse, psum, count)`` per row of ``q k^T`` and, with ``cols``, per column."""

    @staticmethod
    def forward(ctx, q, k, scale, prob, cols):
        row, col = _lse_forward(q, k, scale, prob, cols)
        ctx.prob, ctx.cols = prob, cols
        lse_c = col[0] if cols else None
        ctx.save_for_backward(q, k, scale, row[0], lse_c)
        outputs = tuple(row) + (tuple(col) if cols else ())
        ctx.mark_non_differentiable(*outputs[2::3])
        return outputs

    @staticmethod
    def backward(ctx, *grads):
        q, k, scale, lse_r, lse_c = ctx.saved_tensors
        prob, cols = ctx.prob, ctx.cols
        stats_r = (_bw_lse(lse_r), grads[0].float().contiguous(), grads[1].float().contiguous())
        stats_c = None
        if cols:
            stats_c = (_bw_lse(lse_c), grads[3].float().contiguous(), grads[4].float().contiguous())
        need_q, need_k, need_scale = ctx.needs_input_grad[:3]
        dq = dk = d_scale = None
        if need_q or need_scale:
            dq32, part, _ = _backward_rows(q, k, scale, None, prob, stats_r, stats_c, 0, need_scale)
            dq = dq32.to(q.dtype) if need_q else None
            d_scale = part.sum().reshape(1).to(scale.dtype) if need_scale else None
        if need_k:
            dk32, _, _ = _backward_rows(
                k, q, scale, None, prob.transposed(), stats_c, stats_r, 0, False
            )
            dk = dk32.to(k.dtype)
        return dq, dk, d_scale, None, None


class _FusedSigmoid(torch.autograd.Function):
    """Per-row sums of the pairwise sigmoid loss."""

    @staticmethod
    def forward(ctx, q, k, scale, bias, prob):
        kern = _kernels()
        m, n, d = q.shape[0], k.shape[0], q.shape[1]
        opts = _launch_options("fwd")
        rows = torch.empty(m, dtype=torch.float32, device=q.device)
        kern._sigmoid_fwd[(_cdiv(m, opts["BLOCK_M"]),)](
            q, k, prob.x_labels, prob.y_labels, scale, bias, rows,
            m, n, d, q.stride(0), k.stride(0),
            PAIRING=prob.pairing, EXCLUDE_SELF=prob.exclude_self,
            UPCAST=_interpreting(), PRECISION=_precision(q), **opts,
        )  # fmt: skip
        ctx.prob = prob
        ctx.save_for_backward(q, k, scale, bias)
        return rows

    @staticmethod
    def backward(ctx, grad):
        q, k, scale, bias = ctx.saved_tensors
        prob = ctx.prob
        g = (None, grad.float().contiguous(), None)
        need_q, need_k, need_scale, need_bias = ctx.needs_input_grad[:4]
        dq = dk = d_scale = d_bias = None
        if need_q or need_scale or need_bias:
            scalars = need_scale or need_bias
            dq32, ps, pb = _backward_rows(q, k, scale, bias, prob, g, None, 1, scalars)
            dq = dq32.to(q.dtype) if need_q else None
            d_scale = ps.sum().reshape(1).to(scale.dtype) if need_scale else None
            d_bias = pb.sum().reshape(1).to(bias.dtype) if need_bias else None
        if need_k:
            dk32, _, _ = _backward_rows(k, q, scale, bias, prob.transposed(), None, g, 1, False)
            dk = dk32.to(k.dtype)
        return dq, dk, d_scale, d_bias, None


def _operands(query: Tensor, key: Tensor, similarity: str) -> tuple[Tensor, Tensor]:
    """Kernel operands in the input dtype (cosine: normalised in float32 first), contiguous."""
    q = prepare(query, similarity).to(query.dtype).contiguous()
    k = q if key is query else prepare(key, similarity).to(key.dtype).contiguous()
    return q, k


def _scalar(value: float | Tensor, device: torch.device) -> Tensor:
    if isinstance(value, Tensor):
        return value.reshape(1)
    return torch.tensor([float(value)], dtype=torch.float32, device=device)


def _extra_lse(
    q: Tensor,
    negatives: Tensor | None,
    shared_negatives: Tensor | None,
    scale: Tensor,
    similarity: str,
) -> Tensor | None:
    parts = []
    if negatives is not None:
        with no_autocast(q.device):  # float32 logits under torch.autocast too
            n = prepare(negatives, similarity)
            logits = rowwise_similarity(q.float(), n, similarity) * scale.reshape(())
            parts.append(torch.logsumexp(logits, dim=1))
    if shared_negatives is not None:
        x = prepare(shared_negatives, similarity).to(shared_negatives.dtype).contiguous()
        dummy = torch.zeros(1, dtype=torch.int64, device=q.device)
        prob = _Problem(dummy, dummy, 0, False)
        parts.append(_FusedLSE.apply(q, x, scale, prob, False)[0])
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else torch.logaddexp(parts[0], parts[1])


def _row_losses(lse, psum, count, plse, variant) -> tuple[Tensor, Tensor]:
    valid = (count > 0) & (lse > float("-inf"))
    safe_count = torch.where(valid, count, torch.ones_like(count))
    if variant == "out":
        positive_term = psum / safe_count
    else:
        positive_term = plse - safe_count.log()
    zero = torch.zeros_like(lse)
    return torch.where(valid, lse - torch.where(valid, positive_term, zero), zero), valid


def infonce_rows(
    query: Tensor,
    key: Tensor,
    pairing: Pairing,
    scale: float | Tensor,
    spec: InfoNCESpec,
    negatives: Tensor | None = None,
    shared_negatives: Tensor | None = None,
    both_directions: bool = False,
) -> list[tuple[Tensor, Tensor]]:
    """Per-row InfoNCE losses and validity, as :func:`contrastkit.engine.dense.infonce_rows`."""
    _check(query, pairing, spec.similarity)
    q, k = _operands(query, key, spec.similarity)
    scale_t = _scalar(scale, q.device)
    prob = _problem(pairing, q.device, decoupled=spec.decoupled, margin=float(spec.margin))
    out = _FusedLSE.apply(q, k, scale_t, prob, both_directions)
    plse = [None, None]
    if spec.variant == "in":
        pos = _FusedLSE.apply(q, k, scale_t, replace(prob, mask=1), both_directions)
        plse = [pos[0], pos[3] if both_directions else None]
    lse_r = out[0]
    extra = _extra_lse(q, negatives, shared_negatives, scale_t, spec.similarity)
    if extra is not None:
        lse_r = torch.logaddexp(lse_r, extra)
    result = [_row_losses(lse_r, out[1], out[2], plse[0], spec.variant)]
    if both_directions:
        result.append(_row_losses(out[3], out[4], out[5], plse[1], spec.variant))
    dtype = torch.promote_types(query.dtype, torch.float32)
    return [(loss.to(dtype), valid) for loss, valid in result]


def sigmoid_rows(
    query: Tensor,
    key: Tensor,
    pairing: Pairing,
    scale: float | Tensor,
    bias: float | Tensor,
    similarity: str,
) -> Tensor:
    """Per-row sums of the sigmoid loss, as :func:`contrastkit.engine.dense.sigmoid_rows`."""
    _check(query, pairing, similarity)
    q, k = _operands(query, key, similarity)
    prob = _problem(pairing, q.device)
    return _FusedSigmoid.apply(q, k, _scalar(scale, q.device), _scalar(bias, q.device), prob)
