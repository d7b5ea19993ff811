"""The ``contrastkit`` command.

- ``contrastkit train``: train a recipe (default ``simclr-digits``) on bundled data or your own
  embedding pairs, with a progress bar, a metrics table against the raw input, and a run folder
  (``metrics.json``, ``config.toml``, ``checkpoint.pt``, PNG plots).
- ``contrastkit eval``: the metrics of a run folder's checkpoint, or of saved embeddings.
- ``contrastkit bench``: the engines side by side (time and peak memory over batch sizes).
- ``contrastkit recipes [NAME]``: list the recipes, or print one to copy and edit.
- ``contrastkit losses``: the core objectives on a batch of digits.

User errors print one line (``contrastkit: error: ...``) and exit with code 2.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from contrastkit.cli.config import (
    FIELDS,
    CLIError,
    RunConfig,
    load_config_file,
    load_recipe,
    parse_loss_arg,
    parse_value,
    recipe_names,
    recipe_text,
    resolve_loss_class,
    validate,
)
from contrastkit.engine import fused as fused_engine


def _views(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A random-shift-and-noise view of each 8x8 image, flattened to 64 pixels."""
    from contrastkit.views import gaussian_noise, random_shift

    shifted = random_shift(images, 1, generator=generator)
    return gaussian_noise(shifted, 0.05, generator=generator).reshape(images.shape[0], -1)


def cmd_losses(args: argparse.Namespace) -> int:
    from contrastkit import functional as CF
    from contrastkit.data import load_digits

    images, labels = load_digits()
    g = torch.Generator().manual_seed(args.seed)
    idx = torch.randperm(len(labels), generator=g)[: args.batch_size]
    images, labels = images[idx], labels[idx]
    v1, v2 = _views(images, g), _views(images, g)
    shuffled = v2[torch.randperm(len(v2), generator=g)]
    rows = [
        (
            "InfoNCE (CLIP, symmetric)",
            lambda a, b: CF.info_nce(a, b, temperature=0.07, symmetric=True),
        ),
        ("NT-Xent (SimCLR)", lambda a, b: CF.nt_xent(a, b, temperature=0.5)),
        (
            "SupCon (labels)",
            lambda a, b: CF.supcon(torch.stack([a, b], 1), labels, temperature=0.1),
        ),
        ("SigLIP", lambda a, b: CF.siglip(a, b, scale=10.0, bias=-10.0)),
    ]
    print(f"contrastkit: core losses on {len(labels)} bundled digits (raw pixels, two views)")
    print(f"{'objective':<28}{'paired views':>14}{'shuffled pairs':>16}")
    for name, fn in rows:
        print(f"{name:<28}{float(fn(v1, v2)):>14.4f}{float(fn(v1, shuffled)):>16.4f}")
    print("Paired views give lower losses than shuffled pairs: the objectives see the pairing.")
    return 0


# -- train -------------------------------------------------------------------------------------

METRIC_NAMES = {
    "knn_accuracy": "kNN accuracy (k={k})",
    "linear_probe_accuracy": "linear probe accuracy",
    "recall@1": "recall@1",
    "recall@5": "recall@5",
    "zero_shot_accuracy": "zero-shot accuracy",
    "alignment": "alignment (lower better)",
    "uniformity": "uniformity (lower better)",
    "modality_gap": "modality gap",
}
PERCENT = {"knn_accuracy", "linear_probe_accuracy", "recall@1", "recall@5", "zero_shot_accuracy"}


def format_metrics(metrics: dict[str, dict[str, float | None]], k: int = 5) -> str:
    """The metrics table: one row per metric, one column per embedding (raw input first)."""
    columns = list(metrics)
    keys = [m for m in METRIC_NAMES if any(m in metrics[c] for c in columns)]
    width = max(12, *(len(c) + 2 for c in columns))
    lines = [f"{'metric':<28}" + "".join(f"{c:>{width}}" for c in columns)]
    for m in keys:
        cells = []
        for c in columns:
            v = metrics[c].get(m)
            if v is None:
                cells.append(f"{'n/a':>{width}}")
            elif m in PERCENT:
                cells.append(f"{100 * v:>{width - 1}.2f}%")
            else:
                cells.append(f"{v:>{width}.4f}")
        lines.append(f"{METRIC_NAMES[m].format(k=k):<28}" + "".join(cells))
    return "\n".join(lines)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _parse_overrides(args: argparse.Namespace, extra: list[str]) -> tuple[dict, dict]:
    """Command-line field overrides, and ``--loss.<arg> value`` pairs (as strings)."""
    fields = {}
    for name in FIELDS:
        if name in ("loss", "recipe"):
            continue
        text = getattr(args, "set_" + name, None)
        if text is not None:
            fields[name] = parse_value(name, text)
    loss_args = {}
    i = 0
    while i < len(extra):
        token = extra[i]
        if not token.startswith("--loss."):
            raise CLIError(f"unknown argument {token!r}; see `contrastkit train --help`")
        key, eq, value = token[len("--loss.") :].partition("=")
        if not eq:
            if i + 1 >= len(extra):
                raise CLIError(f"{token} needs a value")
            i += 1
            value = extra[i]
        loss_args[key.replace("-", "_")] = value
        i += 1
    return fields, loss_args


#: Settings that ``--resume`` may change: how long to train and where, not what is trained.
RESUME_SETTINGS = {"max_steps", "epochs", "threads", "device", "engine", "plots", "knn_k"}


def resolve_config(args: argparse.Namespace, extra: list[str]) -> tuple[RunConfig, Path | None]:
    """The configuration of this run and the run folder to resume (or ``None``)."""
    fields, loss_args = _parse_overrides(args, extra)
    resume_dir = None
    if args.resume:
        if args.recipe or args.config or args.out:
            raise CLIError("--resume continues a run folder as it is: drop --recipe/--config/--out")
        resume_dir = Path(args.resume)
        for name in ("config.toml", "checkpoint.pt"):
            if not (resume_dir / name).is_file():
                raise CLIError(
                    f"cannot resume {resume_dir}: it has no {name}; pass a run folder "
                    "written by contrastkit train"
                )
        cfg = load_config_file(str(resume_dir / "config.toml"))
        changed = sorted(set(fields) - RESUME_SETTINGS)
        if getattr(args, "loss", None) is not None or loss_args:
            changed.insert(0, "loss")
        if changed:
            raise CLIError(
                f"--resume continues a run with its own settings; --{changed[0].replace('_', '-')} "
                "would change what it trains (only "
                + ", ".join(f"--{k.replace('_', '-')}" for k in sorted(RESUME_SETTINGS))
                + " may be given): start a new run with --config "
                f"{resume_dir / 'config.toml'} instead"
            )
    elif args.config:
        if args.recipe:
            raise CLIError("pass either --recipe or --config, not both")
        cfg = load_config_file(args.config)
    else:
        cfg = load_recipe(args.recipe or "simclr-digits")
    new_loss = getattr(args, "loss", None)
    if new_loss is not None:
        cls = resolve_loss_class(new_loss)
        if resolve_loss_class(cfg.loss["name"]) is not cls:
            cfg.loss = {"name": cls.__name__}  # another loss: start from its own defaults
    for name, value in fields.items():
        setattr(cfg, name, value)
    cls = resolve_loss_class(cfg.loss["name"])
    for key, text in loss_args.items():
        cfg.loss[key] = parse_loss_arg(cls, key, text)
    validate(cfg)
    return cfg, resume_dir


def _nearest_existing(path: Path) -> Path:
    p = path.absolute()
    while not p.exists():
        p = p.parent
    return p


def plan_run_dir(out: str | None, recipe: str, resumable: bool = True) -> Path:
    """Where the run folder goes; checked to be new (or empty) and writable, not created yet."""
    if out:
        path = Path(out)
    else:
        stem = Path("runs") / f"{recipe}-{time.strftime('%Y%m%d-%H%M%S')}"
        path, n = stem, 1
        while path.exists():
            n += 1
            path = stem.with_name(f"{stem.name}-{n}")
    if path.exists() and not path.is_dir():
        raise CLIError(f"output folder {path} is a file; choose another --out")
    if path.exists() and any(path.iterdir()):
        raise CLIError(
            f"output folder {path} exists and is not empty; choose another --out"
            + (f", or continue it with --resume {path}" if resumable else "")
        )
    parent = _nearest_existing(path)
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise CLIError(f"cannot write the run folder {path}: {parent} is not writable; pass --out")
    return path


def _device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise CLIError("--device cuda was asked for but torch sees no CUDA GPU; use --device cpu")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def cmd_train(args: argparse.Namespace, extra: list[str]) -> int:
    from contrastkit.cli import _dist, _plots, _train
    from contrastkit.cli._tasks import build_task

    cfg, resume_dir = resolve_config(args, extra)
    device = _device(cfg.device)
    fused = "fused" in (cfg.engine, cfg.loss.get("engine"))
    if fused and not fused_engine.runs_on(device):
        raise CLIError(
            f"--engine fused needs a CUDA GPU, and this run is on {device.type}; "
            "use --engine streaming or auto"
        )
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    ctx = _dist.setup(device)
    try:
        if cfg.batch_size % ctx.world_size:
            raise CLIError(
                f"--batch-size {cfg.batch_size} is the global batch: make it divisible by the "
                f"{ctx.world_size} processes"
            )
        resume = None
        if resume_dir is not None:
            run_dir = resume_dir
            resume = _train.load_checkpoint(run_dir / _train.CHECKPOINT)
        elif ctx.is_main:  # the first process writes the run folder; the others never look at
            run_dir = plan_run_dir(args.out, cfg.recipe)  # it (it may already be the first's)
        else:
            run_dir = None
        torch.manual_seed(cfg.seed)
        task = build_task(cfg)  # loads and checks the data, the loss and the models
        if resume is not None:
            try:
                task.modules.load_state_dict(resume["modules"])
            except RuntimeError:
                raise CLIError(
                    f"the checkpoint in {run_dir} does not match its config.toml and the "
                    "settings given with --resume; start a new run instead of --resume"
                ) from None
        created = False
        if ctx.is_main and resume is None:
            try:
                run_dir.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise CLIError(f"cannot create the run folder {run_dir}: {e.strerror}") from None
            created = True
        if ctx.is_main:
            _train.write_config(run_dir, cfg)
        try:
            summary = _train.train(
                task, cfg, run_dir if ctx.is_main else None, ctx, args.progress, resume
            )
        except BaseException:
            if created and not (run_dir / _train.CHECKPOINT).exists():
                shutil.rmtree(run_dir, ignore_errors=True)
            raise
        if summary["interrupted"]:
            if ctx.is_main:
                print(
                    f"interrupted at step {summary['steps']}: checkpoint saved; continue with "
                    f"`contrastkit train --resume {run_dir}`",
                    file=sys.stderr,
                )
            return 130
        if not ctx.is_main:
            return 0
        task.modules.eval()
        metrics = task.evaluate()
        history = summary.pop("history")
        plots = []
        if cfg.plots:
            if _plots.available():
                plots = _plots.save_run_plots(run_dir, history, task.plot_data())
            else:
                print("plots skipped: pip install 'contrastkit[plots]'", file=sys.stderr)
        record = {
            "recipe": cfg.recipe,
            "metrics": metrics,
            **summary,
            "final_loss": history["loss"][-1] if history["loss"] else None,
            "seed": cfg.seed,
            "device": str(ctx.device),
            "world_size": ctx.world_size,
            "versions": _train.versions(),
            "plots": [p.name for p in plots],
        }
        _train.write_metrics(run_dir, record)
        print(
            f"\n{cfg.recipe}: {summary['steps']} steps in {summary['train_seconds']:.1f} s "
            f"({summary['samples_per_second']:.0f} samples/s) on {ctx.device}"
            + (f" x {ctx.world_size} processes" if ctx.world_size > 1 else "")
        )
        print(format_metrics(metrics, cfg.knn_k))
        print(f"run folder: {run_dir}")
        return 0
    finally:
        _dist.teardown(ctx)


# -- eval --------------------------------------------------------------------------------------


def cmd_eval(args: argparse.Namespace, extra: list[str]) -> int:
    if extra:
        raise CLIError(f"unknown argument {extra[0]!r}; see `contrastkit eval --help`")
    if args.run and (args.embeddings or args.labels or args.other):
        raise CLIError(
            "pass either a run folder or --embeddings X.npy [--labels/--other], not both"
        )
    if args.knn_k < 1:
        raise CLIError(f"--knn-k must be >= 1, got {args.knn_k}")
    if not 0 < args.test_fraction < 1:
        raise CLIError(f"--test-fraction must lie in (0, 1), got {args.test_fraction}")
    if args.json and not Path(args.json).absolute().parent.is_dir():
        raise CLIError(f"cannot write --json {args.json}: its folder does not exist")
    if args.run:
        metrics, k = _eval_run(Path(args.run))
    elif args.embeddings:
        metrics, k = _eval_arrays(args)
    else:
        raise CLIError("pass a run folder (contrastkit eval runs/NAME) or --embeddings X.npy")
    if args.json:
        try:
            Path(args.json).write_text(json.dumps(metrics, indent=2) + "\n")
        except OSError as e:
            raise CLIError(f"cannot write --json {args.json}: {e.strerror}") from None
    print(format_metrics(metrics, k))
    return 0


def _eval_run(run_dir: Path) -> tuple[dict, int]:
    from contrastkit.cli import _train
    from contrastkit.cli._tasks import build_task

    for name in ("config.toml", _train.CHECKPOINT):
        if not (run_dir / name).is_file():
            raise CLIError(f"{run_dir} has no {name}; pass a folder written by contrastkit train")
    cfg = load_config_file(str(run_dir / "config.toml"))
    validate(cfg)
    state = _train.load_checkpoint(run_dir / _train.CHECKPOINT)
    task = build_task(cfg)
    try:
        task.modules.load_state_dict(state["modules"])
    except RuntimeError:
        raise CLIError(f"the checkpoint in {run_dir} does not match its config.toml") from None
    task.modules.eval()
    return task.evaluate(), cfg.knn_k


def _eval_arrays(args: argparse.Namespace) -> tuple[dict, int]:
    """Metrics of an embedding file, and the k its kNN used (at most the training rows)."""
    from contrastkit import metrics
    from contrastkit.cli import _eval
    from contrastkit.cli._data import load_labels, load_matrix, load_pair

    if args.other:
        x, z = load_pair(args.embeddings, args.other, ("embeddings", "other"))
        if z.shape[1] != x.shape[1]:
            raise CLIError(
                f"{args.embeddings} and {args.other} have different sizes "
                f"({x.shape[1]} vs {z.shape[1]}): metrics of pairs need one space"
            )
    else:
        x = load_matrix(args.embeddings, "embeddings")
    out: dict[str, float | None] = {}
    k = args.knn_k
    if args.labels:
        y = load_labels(args.labels, x.shape[0], args.embeddings)
        perm = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(0))
        n_test = max(1, round(x.shape[0] * args.test_fraction))
        te, tr = perm[:n_test], perm[n_test:]
        k = min(args.knn_k, len(tr))
        out["knn_accuracy"] = _eval.knn_accuracy(x[tr], y[tr], x[te], y[te], k)
        out["linear_probe_accuracy"] = _eval.linear_probe_accuracy(x[tr], y[tr], x[te], y[te])
    if args.other:
        out |= _eval.paired(x, z)
    else:
        out["uniformity"] = float(metrics.uniformity(x[: _eval.UNIFORMITY_ROWS]))
    return {"embeddings": out}, k


# -- bench -------------------------------------------------------------------------------------


def _int_list(text: str, flag: str) -> list[int]:
    try:
        values = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise CLIError(f"{flag} takes comma-separated integers, got {text!r}") from None
    if not values or min(values) < 2:
        raise CLIError(f"{flag} takes integers >= 2, got {text!r}")
    return values


def cmd_bench(args: argparse.Namespace, extra: list[str]) -> int:
    from contrastkit.cli import _bench, _plots

    if extra:
        raise CLIError(f"unknown argument {extra[0]!r}; see `contrastkit bench --help`")
    sizes = _int_list(args.batch_sizes, "--batch-sizes")
    for flag, value in (("--dim", args.dim), ("--repeats", args.repeats)):
        if value < 1:
            raise CLIError(f"{flag} must be >= 1, got {value}")
    device = str(_device(args.device))
    engines = args.engines.split(",") if args.engines else _bench.available_engines(device)
    out = plan_run_dir(args.out, "bench", resumable=False) if args.out or args.save else None
    rows = _bench.run_bench(engines, sizes, args.dim, args.loss, device, args.repeats)
    print(f"contrastkit bench: {args.loss}, dim {args.dim}, {device}")
    print(_bench.format_table(rows))
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "bench.json").write_text(json.dumps(rows, indent=2) + "\n")
        png = _plots.save_bench_plot(out / "bench.png", rows)
        print(f"results: {out / 'bench.json'}" + (f", plot: {png}" if png else ""))
    if rows and all(r.get("error") for r in rows):
        print(
            "contrastkit: error: every row of the benchmark failed (see the table)", file=sys.stderr
        )
        return 1
    return 0


# -- recipes -----------------------------------------------------------------------------------


def cmd_recipes(args: argparse.Namespace, extra: list[str]) -> int:
    if extra:
        raise CLIError(f"unknown argument {extra[0]!r}")
    if args.name:
        print(recipe_text(args.name), end="")
        return 0
    for name in recipe_names():
        first = recipe_text(name).splitlines()[0].lstrip("# ")
        print(f"{name:<20}{first}")
    return 0


# -- parser ------------------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """argparse whose errors become one-line :class:`CLIError` s."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        raise CLIError(f"{message}; see `{self.prog} --help`")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="contrastkit", description="Contrastive representation learning for PyTorch."
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser(
        "train",
        help="train a recipe and print its metrics",
        description="Train a recipe (default simclr-digits). Every setting of the recipe can be "
        "overridden, e.g. --epochs 10 --loss infonce --loss.temperature 0.05.",
    )
    p.add_argument("--recipe", help=f"one of: {', '.join(recipe_names())}")
    p.add_argument("--config", help="a TOML file (e.g. a run folder's config.toml)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its checkpoint")
    p.add_argument("--out", help="run folder (default runs/<recipe>-<time>)")
    p.add_argument(
        "--progress",
        choices=["auto", "bar", "plain", "none"],
        default="auto",
        help="auto: a bar on a terminal, one line per epoch otherwise",
    )
    p.add_argument(
        "--loss", help="a loss of contrastkit.losses by name; --loss.<arg> VALUE sets its arguments"
    )
    defaults = RunConfig()
    for name in FIELDS:
        if name in ("loss", "recipe"):
            continue
        p.add_argument(
            _flag(name),
            dest="set_" + name,
            metavar="V",
            help=f"(recipe default; built-in {getattr(defaults, name)!r})",
        )
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="metrics of a run folder or of saved embeddings")
    p.add_argument("run", nargs="?", help="a run folder written by contrastkit train")
    p.add_argument("--embeddings", help="(N, D) embeddings (.npy, .pt or .parquet)")
    p.add_argument("--labels", help="(N,) integer classes: kNN and linear probe")
    p.add_argument("--other", help="(N, D) embeddings paired row by row: recall, alignment, gap")
    p.add_argument("--test-fraction", type=float, default=0.3)
    p.add_argument("--knn-k", type=int, default=5)
    p.add_argument("--json", help="also write the metrics to this file")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("bench", help="the engines side by side: time and peak memory")
    p.add_argument("--batch-sizes", default="256,1024,4096")
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--loss", default="infonce")
    p.add_argument(
        "--engines", help="comma-separated (default: every engine that runs on the device)"
    )
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", help="folder for bench.json and bench.png")
    p.add_argument("--save", action="store_true", help="write bench.json/png to runs/bench-<time>")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("recipes", help="list the recipes, or print one (to copy and edit)")
    p.add_argument("name", nargs="?")
    p.set_defaults(func=cmd_recipes)

    p = sub.add_parser("losses", help="compute the core losses on the bundled digits")
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_losses)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args, extra = parser.parse_known_args(argv)
        if args.command == "losses":
            if extra:
                raise CLIError(f"unknown argument {extra[0]!r}")
            if args.batch_size < 2:
                raise CLIError("--batch-size must be >= 2")
            return args.func(args)
        return args.func(args, extra)
    except CLIError as e:
        print(f"contrastkit: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `contrastkit recipes | head`: the reader left, not an error of ours
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so that Python's exit flush does not fail again
        return 1


if __name__ == "__main__":
    sys.exit(main())
