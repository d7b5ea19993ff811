"""Dense vs streaming engine on the CPU: forward + backward time and peak extra memory.

Symmetric InfoNCE (CLIP) with a learnable temperature, float32, ``B x D`` queries and keys.  Each
engine runs in a fresh subprocess: inputs are allocated and a small problem warms the libraries
up, then the process's peak resident memory (``ru_maxrss``) is read before and after one full
forward + backward -- the difference is the engine's peak extra memory (the gradients included).
Timing is the median of ``--repeats`` further forward + backward passes.

The memory is measured twice, each in its own process: with glibc's default allocator (the RSS a
user sees, which varies from run to run by how freed blocks are reused: +-50% for the streaming
engine's 16 MiB tiles), and with a fixed mmap threshold (``MALLOC_MMAP_THRESHOLD_=65536``: every
block above 64 KiB is mapped on allocation and unmapped on free, so the peak RSS growth is the
peak of live tensor memory, the same on every run).  The ratio of the engines is read from the
second.

    python benchmarks/bench_engines_cpu.py --batch 16384 --dim 256 --threads 2 --out table.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time


def worker(engine: str, batch: int, dim: int, threads: int, repeats: int, tile: int) -> dict:
    import resource

    import torch

    from contrastkit.engine import streaming
    from contrastkit.functional import info_nce

    torch.set_num_threads(threads)
    streaming.DEFAULT_TILE = tile
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(batch, dim, generator=gen).requires_grad_()
    k = torch.randn(batch, dim, generator=gen).requires_grad_()
    log_scale = torch.tensor(2.66, requires_grad=True)

    def step(q, k):
        loss = info_nce(q, k, temperature=1 / log_scale.exp(), symmetric=True, engine=engine)
        loss.backward()
        return float(loss)

    step(q[:64].detach().requires_grad_(), k[:64].detach().requires_grad_())
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    loss = step(q, k)
    first = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    times = []
    for _ in range(repeats):
        q.grad = k.grad = log_scale.grad = None
        t0 = time.perf_counter()
        step(q, k)
        times.append(time.perf_counter() - t0)
    return {
        "engine": engine,
        "loss": loss,
        "peak_extra_mib": peak / 1024,  # ru_maxrss is in KiB on Linux
        "first_s": first,
        "median_s": statistics.median(times) if times else first,
        "times_s": times,
    }


def run_config(engine: str, args: argparse.Namespace) -> dict:
    res = _run_worker(engine, args, repeats=args.repeats, env=None)
    exact = _run_worker(
        engine, args, repeats=0, env={**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    )
    res["rss_peak_extra_mib"] = res["peak_extra_mib"]
    res["peak_extra_mib"] = exact["peak_extra_mib"]
    return res


def _run_worker(engine: str, args: argparse.Namespace, repeats: int, env: dict | None) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        engine,
        "--batch",
        str(args.batch),
        "--dim",
        str(args.dim),
        "--threads",
        str(args.threads),
        "--repeats",
        str(repeats),
        "--tile",
        str(args.tile),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int, default=16384)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tile", type=int, default=2048, help="streaming tile size")
    parser.add_argument("--engines", default="dense,streaming")
    parser.add_argument("--out", help="write the markdown table here")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        res = worker(args.worker, args.batch, args.dim, args.threads, args.repeats, args.tile)
        print(json.dumps(res))
        return
    results = [run_config(e, args) for e in args.engines.split(",")]
    ref = results[0]
    lines = [
        f"B = {args.batch}, D = {args.dim}, float32, symmetric InfoNCE with a learnable "
        f"temperature, forward + backward, {args.threads} threads, streaming tile {args.tile}; "
        f"median of {args.repeats} runs after a first (untimed for the median) run; "
        f"load average at start {os.getloadavg()[0]:.1f}; {platform.processor() or 'cpu'}",
        "",
        "| engine | loss | median time (s) | runs (s) | time vs "
        f"{ref['engine']} | peak extra memory (MiB) | memory vs {ref['engine']} "
        "| RSS growth, default allocator (MiB) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        runs = ", ".join(f"{t:.2f}" for t in r["times_s"])
        lines.append(
            f"| {r['engine']} | {r['loss']:.5f} | {r['median_s']:.2f} | {runs} | "
            f"{r['median_s'] / ref['median_s']:.2f}x | {r['peak_extra_mib']:.0f} | "
            f"1/{ref['peak_extra_mib'] / max(r['peak_extra_mib'], 1e-9):.1f} | "
            f"{r['rss_peak_extra_mib']:.0f} |"
        )
    table = "\n".join(lines)
    print(table)
    if args.out:
        with open(args.out, "w") as f:
            f.write(table + "\n")


if __name__ == "__main__":
    main()
