"""Full default runs of the ``contrastkit train`` recipes: wall time and metrics.

    python benchmarks/bench_cli_train.py [RECIPE ...] [--threads N] [--out runs/bench-cli]

Runs each recipe with its default budget as a separate ``python -m contrastkit train`` process
(so the wall time includes start-up, evaluation and plots, as a user sees it) and prints one
row per trained column (one per loss for lit-minilm-digits): wall seconds, training seconds,
kNN accuracy (raw input and trained), linear probe, recall@1, zero-shot accuracy where there is
one, and whether the recipe's floor holds.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

# issue 7: (kNN accuracy floor, wall-time limit in seconds or None)
FLOORS = {"simclr-digits": (0.985, 120.0), "supcon-digits": (0.993, None)}
DIGITS = ["simclr-digits", "supcon-digits", "moco-digits", "clip-digits", "siglip-digits"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("recipes", nargs="*", default=DIGITS)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    parser.add_argument("--out", default="runs/bench-cli")
    args = parser.parse_args()
    root = Path(args.out) / time.strftime("%Y%m%d-%H%M%S")
    print(
        f"{'recipe':<28}{'wall s':>8}{'train s':>9}{'kNN raw':>9}{'kNN':>8}{'probe':>8}"
        f"{'R@1':>8}{'0-shot':>8}  floor"
    )
    for recipe in args.recipes:
        out = root / recipe
        cmd = [
            sys.executable,
            "-m",
            "contrastkit",
            "train",
            "--recipe",
            recipe,
            *(["--threads", str(args.threads)] if args.threads else []),
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
        raw = m["raw input"]["knn_accuracy"]
        for column, trained in m.items():
            if column == "raw input":
                continue
            knn = trained["knn_accuracy"]
            floor, limit = FLOORS.get(recipe, (None, None))
            verdict = ""
            if floor is not None:
                ok = knn >= floor and (limit is None or wall < limit)
                verdict = "ok" if ok else "MISSED"
            name = recipe if column == "trained" else f"{recipe} ({column})"
            print(
                f"{name:<28}{wall:>8.1f}{record['train_seconds']:>9.1f}{_pct(raw):>9}"
                f"{_pct(knn):>8}{_pct(trained.get('linear_probe_accuracy')):>8}"
                f"{_pct(trained.get('recall@1')):>8}{_pct(trained.get('zero_shot_accuracy')):>8}"
                f"  {verdict}",
                flush=True,
            )


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.2f}"


if __name__ == "__main__":
    main()
