"""Full default runs of the ``contrastkit train`` recipes: wall time and metrics.

    python benchmarks/bench_cli_train.py [RECIPE ...] [--threads 2] [--out runs/bench-cli]

Runs each recipe with its default budget as a separate ``python -m contrastkit train`` process
(so the wall time includes start-up, evaluation and plots, as a user sees it) and prints one
row per recipe: wall seconds, training seconds, kNN accuracy (raw input and trained), zero-shot
accuracy where there is one, and whether the recipe's floor holds.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

FLOORS = {"simclr-digits": 0.985, "supcon-digits": 0.993}  # kNN accuracy floors (issue 7)
DIGITS = ["simclr-digits", "supcon-digits", "moco-digits", "clip-digits", "siglip-digits"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("recipes", nargs="*", default=DIGITS)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="runs/bench-cli")
    args = parser.parse_args()
    root = Path(args.out) / time.strftime("%Y%m%d-%H%M%S")
    print(f"{'recipe':<20}{'wall s':>8}{'train s':>9}{'kNN raw':>9}{'kNN':>8}{'0-shot':>8}  floor")
    for recipe in args.recipes:
        out = root / recipe
        cmd = [
            sys.executable,
            "-m",
            "contrastkit",
            "train",
            "--recipe",
            recipe,
            "--threads",
            str(args.threads),
            "--progress",
            "none",
            "--out",
            str(out),
        ]
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        wall = time.perf_counter() - t0
        record = json.loads((out / "metrics.json").read_text())
        m = record["metrics"]
        trained = m.get("trained") or next(v for k, v in m.items() if k != "raw input")
        knn, raw = trained["knn_accuracy"], m["raw input"]["knn_accuracy"]
        zs = trained.get("zero_shot_accuracy")
        floor = FLOORS.get(recipe)
        verdict = "" if floor is None else ("ok" if knn >= floor and wall < 120 else "MISSED")
        zs_text = "-" if zs is None else f"{100 * zs:.2f}"
        print(
            f"{recipe:<20}{wall:>8.1f}{record['train_seconds']:>9.1f}{100 * raw:>9.2f}"
            f"{100 * knn:>8.2f}{zs_text:>8}  {verdict}",
            flush=True,
        )


if __name__ == "__main__":
    main()
