"""Streaming retrieval metrics at scale: time and peak memory.

Builds ``--keys`` random keys and ``--queries`` queries (query ``i`` = key ``i`` + noise, so the
metrics are not trivial), then times :func:`contrastkit.metrics.retrieval_metrics` (R@1/5/10,
MRR, mean/median rank, mAP, mAP@R, nDCG, AUC: one streaming pass over key chunks).

The measurement runs in a fresh subprocess so that ``ru_maxrss`` is the peak resident memory of
that run alone; the data's own size and the RSS before the metrics are reported beside it, and
the dense ``Q x K`` float32 score matrix the streaming avoids is given for scale.

Usage::

    python benchmarks/bench_retrieval.py                       # 1M keys x 100k queries, D=64
    python benchmarks/bench_retrieval.py --keys 100000 --queries 10000
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time


def child(args: argparse.Namespace) -> None:
    import torch

    from contrastkit.metrics import retrieval_metrics

    torch.manual_seed(args.seed)
    keys = torch.randn(args.keys, args.dim)
    queries = keys[: args.queries] + args.noise * torch.randn(args.queries, args.dim)
    rss_data_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0, c0 = time.perf_counter(), time.process_time()
    metrics = retrieval_metrics(
        queries,
        keys,
        ks=(1, 5, 10),
        query_chunk_size=args.query_chunk,
        key_chunk_size=args.key_chunk,
    )
    seconds = time.perf_counter() - t0
    cpu_seconds = time.process_time() - c0
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(
        json.dumps(
            {
                "keys": args.keys,
                "queries": args.queries,
                "dim": args.dim,
                "threads": torch.get_num_threads(),
                "torch": torch.__version__,
                "seconds": seconds,
                "cpu_seconds": cpu_seconds,
                "scores_per_second": args.keys * args.queries / seconds,
                "peak_rss_mib": peak_kib / 1024,
                "rss_before_metrics_mib": rss_data_kib / 1024,
                "data_mib": (args.keys + args.queries) * args.dim * 4 / 2**20,
                "dense_score_matrix_gib": args.keys * args.queries * 4 / 2**30,
                "metrics": metrics,
            }
        )
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--keys", type=int, default=1_000_000)
    p.add_argument("--queries", type=int, default=100_000)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--noise", type=float, default=1.0)
    p.add_argument("--query-chunk", type=int, default=4096)
    p.add_argument("--key-chunk", type=int, default=4096)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args)
        return
    cmd = [sys.executable, __file__, "--child", *sys.argv[1:]]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    res = json.loads(out.strip().splitlines()[-1])
    print(
        f"machine: {platform.processor() or platform.machine()}, torch {res['torch']}, "
        f"{res['threads']} threads"
    )
    print(f"{res['keys']:,} keys x {res['queries']:,} queries, D={res['dim']} (float32)")
    print(
        f"time: {res['seconds']:.1f} s wall, {res['cpu_seconds']:.1f} s CPU "
        f"({res['scores_per_second'] / 1e9:.3f} G scores/s wall)"
    )
    print(
        f"peak RSS: {res['peak_rss_mib']:.0f} MiB (data {res['data_mib']:.0f} MiB, RSS before "
        f"metrics {res['rss_before_metrics_mib']:.0f} MiB; a dense score matrix would be "
        f"{res['dense_score_matrix_gib']:.0f} GiB)"
    )
    print("metrics:", json.dumps({k: round(v, 4) for k, v in res["metrics"].items()}))


if __name__ == "__main__":
    main()
