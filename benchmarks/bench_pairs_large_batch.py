"""The `pairs` recipe at a batch of tens of thousands on the streaming engine (issue 7).

Writes two aligned synthetic embedding files (``a``: N x 384 Gaussian; ``b``: a random 256-d
projection of ``a`` plus noise, so row i of each is a pair), runs

    contrastkit train --recipe pairs --a a.npy --b b.npy --batch-size 32768 --epochs 2
                      --engine streaming --threads 2 --progress plain

in a subprocess and reports its wall time, the peak resident memory of that process
(``ru_maxrss`` of the children) and the metrics of the run.  A dense ``B x B`` float32 logit
matrix at this batch is 4 GiB (and the symmetric loss's backward holds several).

    python benchmarks/bench_pairs_large_batch.py [--rows 110000] [--batch 32768] [--epochs 2]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=110_000)
    parser.add_argument("--batch", type=int, default=32768)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        g = np.random.default_rng(0)
        a = g.normal(size=(args.rows, 384)).astype(np.float32)
        proj = np.linalg.qr(g.normal(size=(384, 384)))[0][:, :256]
        b = (a @ proj + 0.5 * g.normal(size=(args.rows, 256))).astype(np.float32)
        np.save(root / "a.npy", a)
        np.save(root / "b.npy", b)
        data_mib = (a.nbytes + b.nbytes) / 2**20
        del a, b
        cmd = [
            sys.executable, "-m", "contrastkit", "train", "--recipe", "pairs",
            "--a", str(root / "a.npy"), "--b", str(root / "b.npy"),
            "--batch-size", str(args.batch), "--epochs", str(args.epochs),
            "--engine", "streaming", "--threads", str(args.threads),
            "--progress", "plain", "--plots", "false", "--out", str(root / "run"),
        ]  # fmt: skip
        load = os.getloadavg()[0]
        start = time.perf_counter()
        subprocess.run(cmd, check=True)
        wall = time.perf_counter() - start
        peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        metrics = json.loads((root / "run" / "metrics.json").read_text())
    print(
        json.dumps(
            {
                "rows": args.rows,
                "batch": args.batch,
                "epochs": args.epochs,
                "steps": metrics["steps"],
                "wall_s": round(wall, 1),
                "train_seconds": metrics.get("train_seconds"),
                "peak_rss_mib": round(peak_mib),
                "data_mib": round(data_mib),
                "dense_logits_mib_per_matrix": args.batch**2 * 4 / 2**20,
                "load_average_at_start": round(load, 1),
                "metrics": metrics["metrics"],
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
