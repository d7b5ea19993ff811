"""The dense engine's overhead over a hand-written CLIP loss, on the CPU.

Both compute the symmetric InfoNCE (CLIP) loss with a learnable logit scale, forward + backward,
float32, ``B x D`` embeddings; the hand-written loss is the open_clip-style reference::

    logits = scale * normalize(q) @ normalize(k).T
    loss = (cross_entropy(logits, arange(B)) + cross_entropy(logits.T, arange(B))) / 2

The two are timed alternately (median of ``--repeats``) in one process, after a warm-up.  Peak
extra memory: each loss in a fresh process, the growth of its peak RSS (``VmHWM``, reset through
``/proc/self/clear_refs``; ``ru_maxrss`` would carry the parent's peak across exec) over one
forward + backward (inputs allocated before the baseline is read; large blocks forced to ``mmap``
so freed memory is returned).

    python benchmarks/bench_dense_cpu.py --batches 1024,4096,8192 --dim 256 --threads 2
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import time

import torch
import torch.nn.functional as F

from contrastkit.functional import info_nce


def plain_clip(q: torch.Tensor, k: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    logits = log_scale.exp() * F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).T
    labels = torch.arange(q.shape[0])
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2


def contrastkit_dense(q: torch.Tensor, k: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    return info_nce(q, k, temperature=1 / log_scale.exp(), symmetric=True, engine="dense")


def time_step(fn, q, k, log_scale) -> float:
    q.grad = k.grad = log_scale.grad = None
    t0 = time.perf_counter()
    fn(q, k, log_scale).backward()
    return time.perf_counter() - t0


def _peak_child(name: str, b: int, dim: int, threads: int, out) -> None:
    torch.set_num_threads(threads)
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(b, dim, generator=gen).requires_grad_()
    k = torch.randn(b, dim, generator=gen).requires_grad_()
    log_scale = torch.tensor(2.66, requires_grad=True)
    fn = {"plain": plain_clip, "dense": contrastkit_dense}[name]
    fn(q[:8], k[:8], log_scale).backward()  # imports, thread pools
    base = _status_mib("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:  # reset the peak (VmHWM) to the current RSS
        f.write("5")
    fn(q, k, log_scale).backward()
    out.put(_status_mib("VmHWM") - base)


def _status_mib(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1]) / 1024.0
    raise RuntimeError(field)


def peak_extra_mib(name: str, b: int, dim: int, threads: int) -> float:
    """Peak extra memory of one forward + backward of ``name``, in a fresh process."""
    os.environ.setdefault("MALLOC_MMAP_THRESHOLD_", "65536")
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    proc = ctx.Process(target=_peak_child, args=(name, b, dim, threads, out))
    proc.start()
    value = out.get()
    proc.join()
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batches", default="1024,4096,8192")
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", help="write the markdown table here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    lines = [
        f"D = {args.dim}, float32, symmetric InfoNCE with a learnable logit scale, forward + "
        f"backward, {args.threads} threads, median of {args.repeats} alternating runs; load "
        f"average at start {os.getloadavg()[0]:.1f}",
        "",
        "| B | plain PyTorch (s) | contrastkit dense (s) | ratio | loss difference "
        "| peak extra MiB plain | peak extra MiB dense |",
        "|---|---|---|---|---|---|---|",
    ]
    for b in (int(x) for x in args.batches.split(",")):
        gen = torch.Generator().manual_seed(0)
        q = torch.randn(b, args.dim, generator=gen).requires_grad_()
        k = torch.randn(b, args.dim, generator=gen).requires_grad_()
        log_scale = torch.tensor(2.66, requires_grad=True)
        diff = abs(float(plain_clip(q, k, log_scale)) - float(contrastkit_dense(q, k, log_scale)))
        for fn in (plain_clip, contrastkit_dense):  # warm-up
            time_step(fn, q, k, log_scale)
        times = {plain_clip: [], contrastkit_dense: []}
        for _ in range(args.repeats):
            for fn in times:
                times[fn].append(time_step(fn, q, k, log_scale))
        plain = statistics.median(times[plain_clip])
        ours = statistics.median(times[contrastkit_dense])
        mem = [peak_extra_mib(name, b, args.dim, args.threads) for name in ("plain", "dense")]
        lines.append(
            f"| {b} | {plain:.3f} | {ours:.3f} | {ours / plain:.2f}x | {diff:.1e} "
            f"| {mem[0]:.0f} | {mem[1]:.0f} |"
        )
        print(lines[-1], flush=True)
    table = "\n".join(lines)
    print(table)
    if args.out:
        with open(args.out, "w") as f:
            f.write(table + "\n")


if __name__ == "__main__":
    main()
