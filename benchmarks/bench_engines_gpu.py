"""Dense vs streaming vs fused engine (and Inf-CL) on a GPU: forward + backward time and memory.

Cases (bf16 embeddings, D = 512 by default, learnable temperature / scale / bias):

- ``clip``: symmetric InfoNCE, B in ``--batches`` (8192 ... 262144), engines dense, streaming,
  fused and ``inf_cl.cal_inf_loss`` (PyPI ``inf-cl``; both directions, averaged) when installed;
- ``supcon``: SupCon with labels (``--classes`` classes), B anchors = B/2 samples x 2 views;
- ``siglip``: the sigmoid loss (a published fused SigLIP kernel reports 48.8 ms at B = 65536).

Each configuration: a warm-up pass (compiles the kernels), then the median of ``--repeats`` timed
passes (CUDA events; fewer when one pass exceeds ``--budget`` seconds), and the peak memory
allocated above what was allocated before the pass (inputs and parameters), gradients included.
Out-of-memory is reported as such.  The roofline column is the issue's definition: the
``8 B^2 D`` FLOPs of the minimal schedule (one forward tile pass, one backward recompute yielding
both gradients) at ``--peak-tflops`` (780, the measured H100 bf16 dense rate).

    python benchmarks/bench_engines_gpu.py --out gpu.md                  # the table
    python benchmarks/bench_engines_gpu.py --check                       # float64 check at 4096
    python benchmarks/bench_engines_gpu.py --sweep --batches 65536       # fused launch configs
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import math
import statistics
import sys

import torch

from contrastkit import functional as CF
from contrastkit.engine import fused as fused_engine
from contrastkit.engine import streaming

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def make_inputs(case: str, b: int, d: int, dtype: torch.dtype, classes: int, seed: int = 0):
    gen = torch.Generator(device="cuda").manual_seed(seed)
    rows = b // 2 if case == "supcon" else b
    shape = (rows, 2, d) if case == "supcon" else (rows, d)
    x = torch.randn(shape, generator=gen, device="cuda").to(dtype).requires_grad_()
    y = torch.randn(rows, d, generator=gen, device="cuda").to(dtype).requires_grad_()
    labels = torch.randint(0, classes, (rows,), generator=gen, device="cuda")
    log_scale = torch.tensor(math.log(1 / 0.07), device="cuda", requires_grad=True)
    bias = torch.tensor(-10.0, device="cuda", requires_grad=True)
    return dict(x=x, y=y, labels=labels, log_scale=log_scale, bias=bias)


def loss_fn(case: str, engine: str, inp: dict) -> torch.Tensor:
    scale = inp["log_scale"].exp()
    if case == "clip":
        if engine == "inf_cl":
            from inf_cl import cal_inf_loss

            q = torch.nn.functional.normalize(inp["x"], dim=-1)
            k = torch.nn.functional.normalize(inp["y"], dim=-1)
            return (cal_inf_loss(q, k, scale=scale) + cal_inf_loss(k, q, scale=scale)) / 2
        return CF.info_nce(inp["x"], inp["y"], temperature=1 / scale, symmetric=True, engine=engine)
    if case == "supcon":
        return CF.supcon(inp["x"], inp["labels"], temperature=1 / scale, engine=engine)
    if case == "siglip":
        return CF.siglip(inp["x"], inp["y"], scale=scale, bias=inp["bias"], engine=engine)
    raise ValueError(case)


def _zero_grads(inp: dict) -> None:
    for t in inp.values():
        if t.requires_grad:
            t.grad = None


def measure(case: str, engine: str, inp: dict, repeats: int, budget: float) -> dict:
    def step():
        _zero_grads(inp)
        loss_fn(case, engine, inp).backward()

    torch.cuda.synchronize()
    try:
        step()  # warm-up: kernel compilation, allocator
        torch.cuda.synchronize()
        _zero_grads(inp)
        torch.cuda.empty_cache()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        times = []
        for i in range(repeats):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            step()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
            if i == 0 and times[0] * repeats > budget:
                break
        peak = torch.cuda.max_memory_allocated() - base
        return {"ms": 1e3 * statistics.median(times), "gib": peak / 2**30, "runs": len(times)}
    except torch.OutOfMemoryError:
        return {"oom": True}
    finally:
        _zero_grads(inp)
        torch.cuda.empty_cache()


def engines_for(case: str, requested: list[str]) -> list[str]:
    out = []
    for e in requested:
        if e == "inf_cl":
            try:
                import inf_cl  # noqa: F401
            except ImportError:
                print("inf_cl is not installed: pip install inf-cl (skipped)", file=sys.stderr)
                continue
            if case != "clip":
                continue
        out.append(e)
    return out


def table(args: argparse.Namespace) -> str:
    dtype = DTYPES[args.dtype]
    requested = args.engines.split(",")
    cases = [("clip", int(b)) for b in args.batches.split(",")]
    cases += [(c, args.other_batch) for c in args.cases.split(",") if c and c != "clip"]
    rows = []
    for case, b in cases:
        for engine in engines_for(case, requested):
            inp = make_inputs(case, b, args.dim, dtype, args.classes)
            res = measure(case, engine, inp, args.repeats, args.budget)
            del inp
            if res.get("oom"):
                cells = ["out of memory", "", "", ""]
            else:
                flops = 8 * b * b * args.dim
                frac = flops / (res["ms"] / 1e3) / (args.peak_tflops * 1e12)
                cells = [f"{res['ms']:.1f}", f"{res['gib']:.2f}", f"{100 * frac:.0f}%", res["runs"]]
            row = f"| {case} | {b} | {engine} | " + " | ".join(str(c) for c in cells) + " |"
            print(row, flush=True)
            rows.append(row)
    props = torch.cuda.get_device_properties(0)
    header = [
        f"Device: {props.name} ({props.total_memory / 2**30:.0f} GiB); torch {torch.__version__}"
        f"; date {datetime.date.today()}; command: `python {' '.join(sys.argv)}`",
        f"{args.dtype}, D = {args.dim}, forward + backward, learnable temperature; "
        f"streaming tile {streaming.DEFAULT_CUDA_TILE}; fused config {fused_engine.GPU_CONFIG}",
        "",
        "| case | B | engine | median ms | peak extra GiB | of 780 TFLOP/s on 8B²D | runs |",
        "|---|---|---|---|---|---|---|",
    ]
    return "\n".join(header + rows)


def check(args: argparse.Namespace) -> str:
    """Every engine against a float64 dense reference at B = 4096 (temperature 0.01: logits up
    to 100), and the fused engine run twice (bit-identical?)."""
    b, lines = (
        4096,
        ["| case | dtype | engine | loss rel err | grad rel err (max) | repeat equal |"],
    )
    lines.append("|---|---|---|---|---|---|")
    for case, dtype_name in itertools.product(("clip", "supcon", "siglip"), ("fp32", "bf16")):
        inp = make_inputs(case, b, args.dim, DTYPES[dtype_name], 100)
        with torch.no_grad():
            inp["log_scale"].fill_(math.log(100.0))
        ref_inp = {
            k: (v.detach().double().requires_grad_() if v.is_floating_point() else v)
            for k, v in inp.items()
        }
        ref_loss = loss_fn(case, "dense", ref_inp)
        ref_loss.backward()
        ref_grads = [ref_inp[k].grad for k in ("x", "y", "log_scale")]
        for engine in ("dense", "streaming", "fused"):
            results = []
            for _ in range(2 if engine == "fused" else 1):
                _zero_grads(inp)
                loss = loss_fn(case, engine, inp)
                loss.backward()
                results.append([loss.detach()] + [inp[k].grad for k in ("x", "y", "log_scale")])
            loss_err = float((results[0][0] - ref_loss).abs() / ref_loss.abs())
            grad_err = max(
                float((g.double() - r).abs().max() / r.abs().max())
                for g, r in zip(results[0][1:], ref_grads, strict=True)
            )
            same = all(torch.equal(a, c) for a, c in zip(*results, strict=True))
            same_cell = ("yes" if same else "NO") if len(results) == 2 else ""
            line = f"| {case} | {dtype_name} | {engine} | {loss_err:.1e} | {grad_err:.1e} | "
            lines.append(line + f"{same_cell} |")
            print(lines[-1], flush=True)
    return "\n".join(lines)


def sweep(args: argparse.Namespace) -> str:
    """Time the fused CLIP case over launch configurations (forward, then backward)."""
    b = int(args.batches.split(",")[0])
    inp = make_inputs("clip", b, args.dim, DTYPES[args.dtype], args.classes)
    default = {k: dict(v) if isinstance(v, dict) else v for k, v in fused_engine.GPU_CONFIG.items()}
    fwd = [
        dict(BLOCK_M=m, BLOCK_N=n, BLOCK_D=bd, num_warps=w, num_stages=s)
        for m, n, bd, w, s in itertools.product((64, 128), (64, 128), (64, 128), (4, 8), (2, 3))
    ]
    bwd = [
        dict(BLOCK_M=m, BLOCK_N=n, BLOCK_D=bd, BLOCK_DOUT=do, num_warps=w, num_stages=s)
        for m, n, bd, do, w, s in itertools.product(
            (64, 128), (64, 128), (64,), (128, 256, 512), (4, 8), (1, 2)
        )
    ]
    lines = []
    for kind, configs in (("fwd", fwd), ("bwd", bwd)):
        best = None
        for cfg in configs:
            fused_engine.GPU_CONFIG[kind] = cfg
            try:
                res = measure("clip", "fused", inp, 3, 5.0)
            except Exception as exc:  # a configuration that does not compile or fit
                lines.append(f"{kind} {cfg}: failed ({type(exc).__name__})")
                continue
            lines.append(f"{kind} {cfg}: {res.get('ms', float('nan')):.1f} ms")
            print(lines[-1], flush=True)
            if "ms" in res and (best is None or res["ms"] < best[0]):
                best = (res["ms"], cfg)
        fused_engine.GPU_CONFIG[kind] = best[1] if best else default[kind]
        lines.append(f"best {kind}: {best}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batches", default="8192,32768,65536,131072,262144")
    parser.add_argument("--cases", default="clip,supcon,siglip")
    parser.add_argument("--other-batch", type=int, default=65536, help="B for supcon/siglip")
    parser.add_argument("--engines", default="dense,streaming,fused,inf_cl")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="bf16")
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--budget", type=float, default=20.0, help="seconds per configuration")
    parser.add_argument("--peak-tflops", type=float, default=780.0)
    parser.add_argument("--check", action="store_true")
    parser.add_argument("--sweep", action="store_true")
    parser.add_argument("--out", help="write the markdown here")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("this benchmark needs a CUDA device")
    text = check(args) if args.check else sweep(args) if args.sweep else table(args)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
