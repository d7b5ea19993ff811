"""GradCache benchmark: peak memory and time of one training step of a dual-tower text encoder.

The model: two towers (CLIP-style image/text pairs, here two token streams), each a pre-norm
transformer encoder (default: 3 layers, width 128, 4 heads, sequences of 64 tokens, no dropout, as
CLIP's text tower), mean-pooled and projected to 128; the loss is the symmetric InfoNCE with a
learnable temperature on the dense engine.  Compares, on the same model and data:

- ``small``: a plain step at the chunk size (B = 256): the memory GradCache should stay near;
- ``full``: a plain step at the full batch (B = 4096), one graph through the whole batch;
- ``gradcache``: a GradCache step at B = 4096 in chunks of 256.

Each configuration runs in its own process.  Peak memory is the process's peak resident memory
during the measured step (``VmHWM`` after resetting it through ``/proc/self/clear_refs``) minus
its resident memory before the model and the data were created, so it counts parameters,
gradients, inputs, activations and the loss, like ``torch.cuda.max_memory_allocated`` on a GPU.
Large allocations are forced to ``mmap`` (``MALLOC_MMAP_THRESHOLD_``) so that freed memory is
returned and the peak is not inflated by the allocator's cache.  On CUDA the script uses
``torch.cuda.max_memory_allocated`` instead.  Time: one more process (default allocator)
alternates full-batch and GradCache steps ``--repeats`` times, so that a change of machine load
hits both, and reports the best wall and CPU time of each and the per-pair ratios (the CPU time of
a one-thread run is the least sensitive to other processes on a shared machine).

Usage::

    python benchmarks/bench_gradcache.py --threads 1          # B=4096, chunks of 256
    python benchmarks/bench_gradcache.py --dropout 0.1 --layers 2 --width 64
    python benchmarks/bench_gradcache.py --batch 1024 --chunk 128 --repeats 1

The full B=4096 step needs about 11 GB with the defaults.  GradCache's peak is the larger of one
chunk's activations and the loss's own memory at the full batch (the dense engine holds a few
``B x B`` float32 matrices, about 0.5 GB at B=4096): it stays near the B=256 step when the encoder's
activations dominate, as in real encoders.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import torch
from torch import nn


class TextTower(nn.Module):
    """A small transformer text encoder: token embedding, ``layers`` encoder layers, mean pool,
    projection."""

    def __init__(
        self, vocab: int, width: int, layers: int, heads: int, out: int, dropout: float
    ) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        layer = nn.TransformerEncoderLayer(
            width, heads, 4 * width, dropout=dropout, batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.proj = nn.Linear(width, out)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.proj(self.encoder(self.embed(tokens)).mean(dim=1))


def _status(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1]) / 1024.0
    raise RuntimeError(field)


def worker(args: argparse.Namespace) -> dict:
    from contrastkit.losses import InfoNCE
    from contrastkit.training import grad_cache_step

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    torch.ones(64, 64) @ torch.ones(64, 64)  # start the thread pool before the baseline
    base = torch.cuda.memory_allocated() / 2**20 if cuda else _status("VmRSS")
    torch.manual_seed(0)
    towers = [
        TextTower(args.vocab, args.width, args.layers, args.heads, args.dim, args.dropout).to(
            device
        )
        for _ in range(2)
    ]
    loss_fn = InfoNCE(0.05, symmetric=True, learnable_temperature=True).to(device)
    params = [p for m in (*towers, loss_fn) for p in m.parameters()]
    batch = args.chunk if args.mode == "small" else args.batch
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, args.vocab, (batch, args.seq), generator=g).to(device)
    y = torch.randint(0, args.vocab, (batch, args.seq), generator=g).to(device)

    def step(mode: str) -> tuple[float, float]:
        """(wall seconds, CPU seconds of this process) of one step."""
        for p in params:
            p.grad = None
        start, cpu = time.perf_counter(), time.process_time()
        if mode == "gradcache":
            grad_cache_step(towers, [x, y], loss_fn, args.chunk)
        else:
            loss_fn(towers[0](x), towers[1](y)).backward()
        if cuda:
            torch.cuda.synchronize()
        return time.perf_counter() - start, time.process_time() - cpu

    result = {"mode": args.mode, "batch": batch, "params": sum(p.numel() for p in params)}
    if args.mode == "time":  # full and GradCache steps interleaved: load changes hit both
        times: dict[str, list[tuple[float, float]]] = {"full": [], "gradcache": []}
        for _ in range(args.repeats):
            for mode in times:
                times[mode].append(step(mode))
        for i, kind in enumerate(("wall", "cpu")):
            result.update({f"{kind}_{m}": min(t[i] for t in ts) for m, ts in times.items()})
            pairs = zip(times["full"], times["gradcache"], strict=True)
            result[f"{kind}_ratios"] = [g[i] / f[i] for f, g in pairs]
        return result
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    else:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    result["time_s"] = step(args.mode)[0]
    peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else _status("VmHWM")
    result["peak_mb"] = peak - base
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--chunk", type=int, default=256)
    parser.add_argument("--seq", type=int, default=64)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=1000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--dropout", type=float, default=0.0)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--mode", choices=["small", "full", "gradcache", "time"], help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.mode:
        print(json.dumps(worker(args)))
        return
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="0")
    results = {}
    for mode in ("small", "gradcache", "full", "time"):
        cmd = [sys.executable, __file__, "--mode", mode] + [
            f"--{k}={v}" for k, v in vars(args).items() if k != "mode"
        ]
        run_env = env if mode != "time" else os.environ  # time with the default allocator
        out = subprocess.run(cmd, env=run_env, check=True, capture_output=True, text=True).stdout
        results[mode] = r = json.loads(out.strip().splitlines()[-1])
        if mode != "time":
            print(f"{mode:>9}  B={r['batch']:<5}  peak {r['peak_mb']:8.1f} MB")
    small, gc, full, t = (results[m] for m in ("small", "gradcache", "full", "time"))
    for kind in ("wall", "cpu"):
        print(
            f"{kind} time (best of {args.repeats}, interleaved): full B={args.batch} "
            f"{t[f'{kind}_full']:.2f} s, GradCache {t[f'{kind}_gradcache']:.2f} s; "
            f"per-pair ratios {', '.join(f'{r:.2f}' for r in t[f'{kind}_ratios'])}"
        )
    ratio = statistics.median(t["wall_ratios"])
    print(
        f"params {small['params'] / 1e6:.2f}M; GradCache B={args.batch}/chunk {args.chunk}: "
        f"memory {gc['peak_mb'] / small['peak_mb']:.2f}x the B={args.chunk} step "
        f"({gc['peak_mb'] / full['peak_mb']:.2f}x the full B={args.batch} step), "
        f"time {ratio:.2f}x the full B={args.batch} step"
    )


if __name__ == "__main__":
    main()
