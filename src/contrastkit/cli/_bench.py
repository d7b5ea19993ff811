"""``contrastkit bench``: the engines side by side, time and peak memory over batch sizes.

On a CPU each measurement runs in a fresh subprocess (``python -m contrastkit.cli._bench
WORKER_JSON``) and peak memory is the growth of its peak resident set (``VmHWM``, reset after
a warm-up on a tiny batch); on CUDA it is
``torch.cuda.max_memory_allocated`` in this process.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any

import torch

from contrastkit.cli.config import CLIError, build_loss


def _status_mib(field: str) -> float:
    """A field of ``/proc/self/status`` (``VmRSS``, ``VmHWM``) in MiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise OSError(f"no {field} in /proc/self/status")


def _reset_peak_rss() -> float:
    """Reset the peak resident size (``VmHWM``) to the current one, which is returned.
    (``ru_maxrss`` would not do: it carries the parent process's resident size across exec.)"""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:  # the peak then also covers the warm-up, which is small
        pass
    return _status_mib("VmRSS")


def measure(spec: dict[str, Any]) -> dict[str, Any]:
    """Median milliseconds of one forward+backward of the loss on random ``(B, D)`` pairs, and
    the peak memory above what was allocated before the first call at that size."""
    device = torch.device(spec["device"])
    torch.manual_seed(0)
    b, d = spec["batch_size"], spec["dim"]
    loss_fn = build_loss({"name": spec["loss"]}, spec["engine"]).to(device)
    q = torch.randn(b, d, device=device, requires_grad=True)
    k = torch.randn(b, d, device=device, requires_grad=True)
    from contrastkit.cli._tasks import call_loss

    def once(q: torch.Tensor = q, k: torch.Tensor = k) -> None:
        loss = call_loss(loss_fn, q, k)
        loss.backward()
        q.grad = k.grad = None

    # A first call on a tiny batch: the one-off costs of the first forward+backward (library
    # code paged in, autograd and thread-pool start-up, some MiB of RSS) are not the engine's.
    for n in (2, 8):
        once(*(torch.randn(n, d, device=device, requires_grad=True) for _ in range(2)))
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = _reset_peak_rss()
    once()
    if device.type == "cuda":
        torch.cuda.synchronize()
    times = []
    for _ in range(spec["repeats"]):
        t0 = time.perf_counter()
        once()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append((time.perf_counter() - t0) * 1e3)
    if device.type == "cuda":
        peak = (torch.cuda.max_memory_allocated() - base) / 2**20
    else:
        peak = _status_mib("VmHWM") - base
    times.sort()
    return {**spec, "ms": times[len(times) // 2], "peak_mib": max(0.0, peak)}


def available_engines(device: str | None = None) -> list[str]:
    """The engines installed here; with ``device``, the concrete ones that run on it (``auto``
    only picks among them, and the fused Triton engine needs CUDA)."""
    from contrastkit.engine import ENGINES

    if device is None:
        return sorted(ENGINES)
    names = [e for e in ("dense", "streaming", "fused") if e in ENGINES]
    return [e for e in names if e != "fused" or device.startswith("cuda")]


def run_bench(
    engines: list[str],
    batch_sizes: list[int],
    dim: int,
    loss: str,
    device: str,
    repeats: int,
) -> list[dict[str, Any]]:
    known = available_engines()
    for e in engines:
        if e not in known:
            raise CLIError(f"engine {e!r} is not available here; available: {', '.join(known)}")
    from contrastkit.cli._tasks import check_loss_call

    loss_fn = build_loss({"name": loss})  # an unknown loss fails before anything runs
    try:  # and so does one that the rows cannot call (a loss of logits, or one that needs labels)
        check_loss_call(loss_fn, with_labels=False)
    except CLIError as e:
        cause = str(e.__cause__ or e).strip().splitlines()
        raise CLIError(
            f"--loss {loss}: {type(loss_fn).__name__} cannot be timed on two sets of embeddings "
            f"without labels ({cause[0] if cause else 'it failed'}); choose an embedding loss "
            "such as infonce, siglip, supcon or cwcl"
        ) from None
    rows = []
    for engine in engines:
        for b in batch_sizes:
            spec = {
                "engine": engine,
                "batch_size": b,
                "dim": dim,
                "loss": loss,
                "device": device,
                "repeats": repeats,
            }
            if device == "cuda":
                try:
                    rows.append(measure(spec))
                except torch.cuda.OutOfMemoryError:
                    rows.append({**spec, "ms": None, "peak_mib": None, "error": "out of memory"})
                    torch.cuda.empty_cache()
                except Exception as e:  # a row that fails, as its subprocess would on the CPU
                    error = f"{type(e).__name__}: {e}".strip().splitlines()[0]
                    rows.append({**spec, "ms": None, "peak_mib": None, "error": error})
                continue
            proc = subprocess.run(
                [sys.executable, "-m", "contrastkit.cli._bench", json.dumps(spec)],
                capture_output=True,
                text=True,
            )
            if proc.returncode != 0:
                last = (proc.stderr.strip().splitlines() or ["failed"])[-1]
                rows.append({**spec, "ms": None, "peak_mib": None, "error": last})
            else:
                rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    lines = [f"{'engine':<12}{'batch':>8}{'ms (fwd+bwd)':>15}{'peak MiB':>11}"]
    for r in rows:
        if r.get("ms") is None:
            lines.append(f"{r['engine']:<12}{r['batch_size']:>8}   {r.get('error', 'failed')}")
        else:
            lines.append(
                f"{r['engine']:<12}{r['batch_size']:>8}{r['ms']:>15.2f}{r['peak_mib']:>11.1f}"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    torch.set_num_threads(max(1, torch.get_num_threads()))
    print(json.dumps(measure(json.loads(sys.argv[1]))))
