"""The training loop of ``contrastkit train``: schedule, data parallelism, gradient caching,
progress, checkpoints (``--resume``, Ctrl-C) and the run folder."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import signal
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from contrastkit.cli import _dist
from contrastkit.cli._tasks import Batch, Task
from contrastkit.cli.config import CLIError, RunConfig, as_dict, to_toml
from contrastkit.training import grad_cache_step

CHECKPOINT = "checkpoint.pt"


def versions() -> dict[str, str]:
    import contrastkit

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "contrastkit": contrastkit.__version__,
        "platform": platform.platform(),
    }


def step_generator(seed: int, step: int) -> torch.Generator:
    """The generator of a step's random views: a function of (seed, step) only, so a resumed
    run draws exactly what an uninterrupted one would."""
    return torch.Generator().manual_seed(seed * 1_000_003 + step)


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 7919 + epoch + 1))


def batch_rows(order: torch.Tensor, index: int, batch_size: int) -> torch.Tensor:
    """Rows of batch ``index`` of an epoch; the last batch is filled up from the epoch's start
    so that every batch has ``batch_size`` rows (divisible across processes)."""
    n = order.shape[0]
    pos = (torch.arange(batch_size) + index * batch_size) % n
    return order[pos]


def learning_rate(cfg: RunConfig, step: int, total: int, steps_per_epoch: int) -> float:
    """Linear warm-up, then cosine decay to zero over ``total`` steps."""
    warm = max(1, round(cfg.warmup_epochs * steps_per_epoch))
    if step < warm:
        return cfg.lr * (step + 1) / warm
    progress = (step - warm) / max(1, total - warm)
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


# -- progress ----------------------------------------------------------------------------------


class Progress:
    """One bar per epoch (tqdm: loss, samples/s, ETA), or one plain line per epoch; ``auto``
    draws bars only on a terminal (a log file or a pipe gets the plain lines)."""

    def __init__(self, mode: str, total_steps: int, steps_per_epoch: int, epochs: int) -> None:
        if mode == "auto":
            mode = "plain"
            if sys.stderr.isatty():
                try:
                    import tqdm  # noqa: F401

                    mode = "bar"
                except ImportError:
                    pass
        self.mode = mode
        self.total, self.spe, self.epochs = total_steps, steps_per_epoch, epochs
        self.bar = None
        self.t0 = time.perf_counter()
        self.samples = 0
        self.done = 0

    def start_epoch(self, epoch: int, steps: int) -> None:
        if self.mode == "bar":
            from tqdm import tqdm

            self.bar = tqdm(
                total=steps,
                desc=f"epoch {epoch + 1}/{self.epochs}",
                unit="step",
                leave=True,
                dynamic_ncols=True,
                file=sys.stderr,
            )

    def update(self, loss: float, samples: int) -> None:
        self.samples += samples
        self.done += 1
        rate = self.samples / max(1e-9, time.perf_counter() - self.t0)
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{loss:.4f}", samples_s=f"{rate:.0f}", refresh=False)
            self.bar.update(1)
        self.last = (loss, rate)

    def end_epoch(self, epoch: int, remaining_steps: int) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        elif self.mode == "plain" and self.done:
            loss, rate = self.last
            elapsed = time.perf_counter() - self.t0
            eta = elapsed / self.done * remaining_steps
            print(
                f"epoch {epoch + 1}/{self.epochs}  loss {loss:.4f}  {rate:.0f} samples/s  "
                f"eta {int(eta) // 60}:{int(eta) % 60:02d}",
                file=sys.stderr,
                flush=True,
            )


# -- interrupt ---------------------------------------------------------------------------------


class StopFlag:
    """The first Ctrl-C asks the loop to stop at the end of the current step (so that the
    checkpoint is consistent); a second one interrupts at once."""

    def __init__(self) -> None:
        self.stop = False
        self.previous = None

    def __enter__(self) -> StopFlag:
        import threading

        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.stop:
            raise KeyboardInterrupt
        self.stop = True

    def __exit__(self, *exc) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)


# -- checkpoint --------------------------------------------------------------------------------


def save_checkpoint(path: Path, task: Task, opt: torch.optim.Optimizer, state: dict) -> None:
    """Write atomically (temp file + rename), so an interrupt never leaves half a file."""
    payload = {
        "step": state["step"],
        "history": state["history"],
        "train_seconds": state["seconds"],
        "modules": task.modules.state_dict(),
        "optimizer": opt.state_dict(),
        "config": as_dict(task.cfg),
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path) -> dict[str, Any]:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CLIError(
            f"checkpoint {path} could not be read ({type(e).__name__}); start a new run instead"
        ) from None


# -- one step ----------------------------------------------------------------------------------


def _local(batch: Batch, ctx: _dist.Context, global_size: int) -> dict:
    sl = ctx.shard(global_size)
    return {k: v[sl] for k, v in batch.items() if torch.is_tensor(v) and v.shape[0] == global_size}


def train_step(task: Task, batch: Batch, ctx: _dist.Context, chunk: int, bf16: bool) -> float:
    """Forward, backward and gradient averaging of one global batch; returns its loss.

    Each process embeds its rows and calls the task's loss, which is the global batch's (see
    :mod:`contrastkit.cli._dist`).  With ``chunk > 0`` the encoders run on ``chunk`` inputs at a
    time with gradient caching (:func:`contrastkit.training.grad_cache_step`, Gao et al. 2021),
    so encoder memory depends on ``chunk``, not on the batch size.
    """
    encoders, inputs = task.towers(batch)
    dtype = torch.bfloat16 if bf16 else None
    if 0 < chunk < max(x.shape[0] for x in inputs):
        loss = grad_cache_step(
            encoders, inputs, lambda *e: task.loss(list(e), batch), chunk, autocast_dtype=dtype
        )
    else:
        with torch.autocast(ctx.device.type, dtype=torch.bfloat16, enabled=bf16):
            embeddings = [enc(x) for enc, x in zip(encoders, inputs, strict=True)]
        loss = task.loss(embeddings, batch)
        loss.backward()
    _dist.average_gradients(task.modules, ctx)
    return float(loss.detach())


# -- the run -----------------------------------------------------------------------------------


def train(
    task: Task,
    cfg: RunConfig,
    run_dir: Path | None,
    ctx: _dist.Context,
    progress_mode: str = "auto",
    resume: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train ``task``; returns the run's summary (``interrupted`` set when stopped by Ctrl-C).
    ``run_dir`` is ``None`` on processes other than the first."""
    task.to(ctx.device)
    if ctx.world_size > 1 and ctx.device.type == "cuda":  # BatchNorm statistics over all GPUs
        task.modules = torch.nn.SyncBatchNorm.convert_sync_batchnorm(task.modules)
    _dist.broadcast_module(task.modules, ctx)
    params = [p for p in task.modules.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    state = {"step": 0, "history": {"loss": [], "geometry": []}, "seconds": 0.0}
    timed_from = 0  # the first step that state["seconds"] covers
    if resume is not None:
        task.modules.load_state_dict(resume["modules"])
        opt.load_state_dict(resume["optimizer"])
        state = {
            "step": int(resume["step"]),
            "history": resume["history"],
            "seconds": float(resume.get("train_seconds", 0.0)),
        }
        if "train_seconds" not in resume:  # a checkpoint of an older version
            timed_from = state["step"]
    batch_size = min(cfg.batch_size, task.num_train)
    batch_size -= batch_size % ctx.world_size
    if batch_size < 2:
        raise CLIError(f"the global batch ({batch_size}) must give each process at least 1 row")
    spe = math.ceil(task.num_train / batch_size)
    total = cfg.epochs * spe
    stop = min(total, cfg.max_steps) if cfg.max_steps else total
    bf16 = cfg.precision == "bf16"
    progress = Progress(progress_mode if ctx.is_main else "none", stop, spe, cfg.epochs)
    interrupted = False
    t_start = time.perf_counter()
    seconds_before = state["seconds"]
    order, order_epoch = None, -1
    with StopFlag() as flag:
        step = state["step"]
        while step < stop:
            epoch = step // spe
            if epoch != order_epoch:
                order, order_epoch = epoch_order(task.num_train, cfg.seed, epoch), epoch
                progress.start_epoch(epoch, min(spe, stop - epoch * spe) - step % spe)
            rows = batch_rows(order, step % spe, batch_size)
            batch = task.make_batch(rows, step_generator(cfg.seed, step))
            batch["local"] = _local(batch, ctx, batch_size)
            for group in opt.param_groups:
                group["lr"] = learning_rate(cfg, step, total, spe)
            task.modules.train()
            opt.zero_grad(set_to_none=True)
            loss = train_step(task, batch, ctx, cfg.grad_cache_chunk, bf16)
            if not math.isfinite(loss):
                raise CLIError(
                    f"the loss became {loss} at step {step}; lower --lr or raise the temperature"
                )
            opt.step()
            task.after_step(batch)
            step += 1
            state["step"] = step
            state["history"]["loss"].append(loss)
            progress.update(loss, batch_size)
            epoch_done = step % spe == 0 or step == stop
            if epoch_done:
                task.modules.eval()
                state["history"]["geometry"].append([step, *task.geometry()])
                progress.end_epoch(epoch, stop - step)
                if run_dir is not None:
                    state["seconds"] = seconds_before + time.perf_counter() - t_start
                    save_checkpoint(run_dir / CHECKPOINT, task, opt, state)
            if flag.stop:
                interrupted = True
                break
        if interrupted and run_dir is not None:
            progress.end_epoch(step // spe, stop - step)
            state["seconds"] = seconds_before + time.perf_counter() - t_start
            save_checkpoint(run_dir / CHECKPOINT, task, opt, state)
    # the whole run's training time, over every --resume (not only this invocation's part)
    seconds = seconds_before + time.perf_counter() - t_start
    steps_run = state["step"] - timed_from
    return {
        "steps": state["step"],
        "total_steps": total,
        "steps_per_epoch": spe,
        "batch_size": batch_size,
        "train_seconds": seconds,
        "samples_per_second": steps_run * batch_size / max(seconds, 1e-9),
        "history": state["history"],
        "interrupted": interrupted,
    }


def write_config(run_dir: Path, cfg: RunConfig) -> None:
    """``config.toml``, with the data files as absolute paths so that ``--resume``, ``eval`` and
    ``--config`` find them from any working directory."""
    files = {k: str(Path(v).absolute()) for k in ("a", "b", "labels") if (v := getattr(cfg, k))}
    (run_dir / "config.toml").write_text(
        "# The resolved configuration of this run: `contrastkit train --config config.toml`\n"
        + to_toml(dataclasses.replace(cfg, **files))
    )


def write_metrics(run_dir: Path, summary: dict[str, Any]) -> None:
    (run_dir / "metrics.json").write_text(json.dumps(summary, indent=2, sort_keys=False) + "\n")
