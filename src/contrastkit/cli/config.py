"""Run configuration of ``contrastkit train``: one flat dataclass, recipes as TOML files.

A recipe (``contrastkit/cli/recipes/<name>.toml``) sets some fields of :class:`RunConfig`; its
``[loss]`` table names a loss of :mod:`contrastkit.losses` and its constructor arguments.  Every
field can be overridden on the command line (``--batch-size 128``, ``--loss infonce
--loss.temperature 0.05``); the resolved configuration is written to the run folder as
``config.toml``, which ``--config`` reads back.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import math
import sys
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

TASKS = ("views", "moco", "captions", "lit", "pairs")


class CLIError(Exception):
    """A user error: printed as one line, exit code 2, nothing left behind."""


@dataclass
class RunConfig:
    """Every setting of a training run (see ``docs/guides/`` for what each recipe uses)."""

    recipe: str = "simclr-digits"
    task: str = "views"  # views | moco | captions | lit | pairs
    # -- data -------------------------------------------------------------------------------
    a: str = ""  # pairs: first embedding file (.npy, .pt or .parquet)
    b: str = ""  # pairs: second embedding file, row i pairs with row i of `a`
    labels: str = ""  # pairs: optional class labels, one per row (enables kNN / linear probe)
    test_fraction: float = 0.1  # pairs: held-out rows
    use_labels: bool = False  # views: same-class samples are positives (SupCon)
    # -- model ------------------------------------------------------------------------------
    width: int = 32  # SmallCNN channels
    norm: str = "group"  # SmallCNN normalisation: group (exact under torchrun/grad cache) | batch
    hidden_dim: int = 128  # projection-head hidden size (0: linear head)
    embed_dim: int = 64  # size of the embeddings the loss sees
    word_dim: int = 64  # captions: word-embedding size of the caption tower
    # -- optimisation -----------------------------------------------------------------------
    epochs: int = 60
    batch_size: int = 256  # global batch (split across processes under torchrun)
    lr: float = 3e-3
    weight_decay: float = 1e-4
    warmup_epochs: float = 2.0
    max_steps: int = 0  # stop after this many steps (0: run all epochs); the schedule follows
    grad_cache_chunk: int = 0  # >0: gradient caching, the encoders run on this many inputs at once
    # -- augmentation (digits) --------------------------------------------------------------
    rotate: float = 15.0  # degrees, uniform in [-rotate, rotate]
    scale: float = 0.15  # zoom factor in [1 - scale, 1 + scale]
    shear: float = 0.15
    translate: float = 0.2  # fraction of the image half-width
    noise: float = 0.1  # std of added Gaussian noise
    # -- moco -------------------------------------------------------------------------------
    queue_size: int = 1024
    momentum: float = 0.99
    # -- lit --------------------------------------------------------------------------------
    lit_losses: list[str] = field(default_factory=lambda: ["infonce", "siglip", "cwcl"])
    # -- evaluation -------------------------------------------------------------------------
    knn_k: int = 5
    plots: bool = True
    # -- runtime ----------------------------------------------------------------------------
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    precision: str = "fp32"  # fp32 | bf16 (autocast)
    engine: str = "auto"  # passed to the loss when it takes `engine`
    threads: int = 0  # torch CPU threads (0: leave torch's default)
    # -- the loss: a class of contrastkit.losses and its constructor arguments ----------------
    loss: dict[str, Any] = field(default_factory=lambda: {"name": "NTXent"})


FIELDS = {f.name: f for f in dataclasses.fields(RunConfig)}


def recipe_names() -> list[str]:
    folder = resources.files("contrastkit.cli").joinpath("recipes")
    return sorted(p.name[: -len(".toml")] for p in folder.iterdir() if p.name.endswith(".toml"))


def recipe_text(name: str) -> str:
    if name not in recipe_names():
        raise CLIError(
            f"unknown recipe {name!r}; choose one of {', '.join(recipe_names())} "
            "(or pass --config FILE.toml)"
        )
    return resources.files("contrastkit.cli").joinpath("recipes", f"{name}.toml").read_text()


def _from_mapping(data: dict[str, Any], where: str) -> RunConfig:
    unknown = sorted(set(data) - set(FIELDS))
    if unknown:
        raise CLIError(f"{where}: unknown setting {unknown[0]!r}; see `contrastkit train --help`")
    cfg = RunConfig()
    for key, value in data.items():
        setattr(cfg, key, _coerce(key, value, where))
    return cfg


def load_recipe(name: str) -> RunConfig:
    return _from_mapping(tomllib.loads(recipe_text(name)), f"recipe {name}")


def load_config_file(path: str) -> RunConfig:
    p = Path(path)
    if not p.is_file():
        raise CLIError(f"config file {path} does not exist; pass a TOML file or use --recipe")
    try:
        data = tomllib.loads(p.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise CLIError(
            f"config file {path} is not valid TOML ({e}); fix it or use --recipe"
        ) from None
    return _from_mapping(data, str(path))


def _coerce(key: str, value: Any, where: str) -> Any:
    """Check a recipe/config value against the field's type (TOML already typed it)."""
    default = getattr(RunConfig(), key)
    if key == "loss":
        if not isinstance(value, dict) or not isinstance(value.get("name"), str):
            raise CLIError(f"{where}: [loss] must be a table with a `name` (a string)")
        try:  # an unknown loss or argument names the file and the table it is in
            cls = resolve_loss_class(value["name"])
            params = loss_parameters(cls)
            for arg in value:
                if arg != "name" and arg not in params:
                    raise _no_argument(cls, arg, params)
        except CLIError as e:
            raise CLIError(f"{where}: [loss] {e}") from None
        return dict(value)
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, list):
        ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
    else:
        ok = isinstance(value, str)
    if not ok:
        raise CLIError(f"{where}: {key} must be {_KIND[type(default)]}, got {value!r}")
    return value


_KIND = {
    bool: "true or false",
    int: "an integer",
    float: "a number",
    str: "a string",
    list: "a list of strings",
}


def parse_value(key: str, text: str) -> Any:
    """A command-line string for field ``key``, converted to the field's type."""
    default = getattr(RunConfig(), key)
    flag = "--" + key.replace("_", "-")
    try:
        if isinstance(default, bool):
            return parse_bool(text)
        if isinstance(default, float):
            return float(text)
        if isinstance(default, int):
            return int(text)
    except ValueError:
        raise CLIError(f"{flag} expects {_KIND[type(default)]}, got {text!r}") from None
    if isinstance(default, list):
        return [s.strip() for s in text.split(",") if s.strip()]
    return text


def parse_bool(text: str) -> bool:
    low = text.lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected true or false, got {text!r}")


def validate(cfg: RunConfig) -> None:
    """Range checks that would otherwise fail deep inside a run."""
    if cfg.task not in TASKS:
        raise CLIError(f"task must be one of {', '.join(TASKS)}, got {cfg.task!r}")
    positive = ["epochs", "batch_size", "width", "embed_dim", "knn_k", "word_dim"]
    for key in positive:
        if getattr(cfg, key) < 1:
            raise CLIError(f"--{key.replace('_', '-')} must be >= 1, got {getattr(cfg, key)}")
    if cfg.batch_size < 2:
        raise CLIError(f"--batch-size must be >= 2, got {cfg.batch_size}")
    for key in ("max_steps", "grad_cache_chunk", "hidden_dim", "threads", "queue_size"):
        if getattr(cfg, key) < 0:
            raise CLIError(f"--{key.replace('_', '-')} must be >= 0, got {getattr(cfg, key)}")
    for key, f in FIELDS.items():
        value = getattr(cfg, key)
        if f.type == "float" and not math.isfinite(value):
            raise CLIError(f"--{key.replace('_', '-')} must be a finite number, got {value}")
    if not cfg.lr > 0:
        raise CLIError(f"--lr must be > 0, got {cfg.lr}")
    for key in ("weight_decay", "warmup_epochs"):
        if getattr(cfg, key) < 0:
            raise CLIError(f"--{key.replace('_', '-')} must be >= 0, got {getattr(cfg, key)}")
    if not 0 < cfg.test_fraction < 1:
        raise CLIError(f"--test-fraction must lie in (0, 1), got {cfg.test_fraction}")
    if not 0 <= cfg.momentum < 1:
        raise CLIError(f"--momentum must lie in [0, 1), got {cfg.momentum}")
    if cfg.norm not in ("group", "batch"):
        raise CLIError(f"--norm must be group or batch, got {cfg.norm!r}")
    if cfg.device not in ("auto", "cpu", "cuda"):
        raise CLIError(f"--device must be auto, cpu or cuda, got {cfg.device!r}")
    if cfg.precision not in ("fp32", "bf16"):
        raise CLIError(f"--precision must be fp32 or bf16, got {cfg.precision!r}")
    from contrastkit.engine import ENGINES

    if cfg.engine != "auto" and cfg.engine not in ENGINES:
        raise CLIError(
            f"--engine {cfg.engine} is not available in this installation; "
            f"use auto or one of {', '.join(sorted(set(ENGINES) - {'auto'}))}"
        )
    if cfg.task == "pairs" and not (cfg.a and cfg.b):
        raise CLIError("the pairs recipe needs two aligned embedding files: --a X.npy --b Y.npy")


# -- losses by name ------------------------------------------------------------------------


def _canonical(name: str) -> str:
    return name.lower().replace("-", "").replace("_", "")


def loss_classes() -> dict[str, type]:
    """The ``nn.Module`` losses of :mod:`contrastkit.losses`, by canonical name."""
    import torch

    from contrastkit import losses

    names = getattr(losses, "__all__", dir(losses))
    out = {}
    for n in names:
        obj = getattr(losses, n, None)
        if isinstance(obj, type) and issubclass(obj, torch.nn.Module):
            out[_canonical(n)] = obj
    return out


def resolve_loss_class(name: str) -> type:
    """A loss class by name, case, ``-`` and ``_`` ignored; the ``Loss`` suffix may be left out
    (``triplet`` is ``TripletLoss``)."""
    classes = loss_classes()
    key = _canonical(name)
    cls = classes.get(key) or classes.get(key + "loss")
    if cls is None:
        known = ", ".join(sorted(c.__name__ for c in classes.values()))
        raise CLIError(f"unknown loss {name!r}; choose one of {known}")
    return cls


def loss_parameters(cls: type) -> dict[str, inspect.Parameter]:
    params = inspect.signature(cls.__init__).parameters
    return {
        k: p
        for k, p in params.items()
        if k != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    }


def _no_argument(cls: type, key: str, params: dict) -> CLIError:
    hint = (
        " (the loss itself is chosen with --loss NAME, or `name` in a TOML [loss] table)"
        if key == "name"
        else f" ({key} is a run setting: in a TOML file, put it above the [loss] table)"
        if key in FIELDS
        else ""
    )
    return CLIError(
        f"{cls.__name__} has no argument {key!r}; it takes: {', '.join(params) or 'none'}{hint}"
    )


def parse_loss_arg(cls: type, key: str, text: str) -> Any:
    """Convert ``--loss.<key> <text>`` using the constructor's default and annotation."""
    params = loss_parameters(cls)
    if key not in params:
        raise _no_argument(cls, key, params)
    p = params[key]
    ann = p.annotation if isinstance(p.annotation, str) else getattr(p.annotation, "__name__", "")
    default = p.default
    try:
        if isinstance(default, bool) or "bool" in ann:
            return parse_bool(text)
        if isinstance(default, float) or "float" in ann:
            return float(text)
        if isinstance(default, int) or ann == "int":
            return int(text)
    except ValueError:
        raise CLIError(
            f"--loss.{key} expects a {ann or type(default).__name__}, got {text!r}"
        ) from None
    if text.lower() == "none" and "None" in ann:
        return None
    return text


def build_loss(spec: dict[str, Any], engine: str = "auto", distributed: bool = False):
    """Instantiate ``spec = {"name": ..., **kwargs}``; ``engine`` and ``distributed=True`` are
    passed when the loss accepts them (and ``spec`` does not set them)."""
    cls = resolve_loss_class(spec["name"])
    kwargs = {k: v for k, v in spec.items() if k != "name"}
    params = loss_parameters(cls)
    for key in kwargs:
        if key not in params:
            raise _no_argument(cls, key, params)
    if "engine" in params and "engine" not in kwargs:
        kwargs["engine"] = engine
    if distributed and "distributed" in params and "distributed" not in kwargs:
        kwargs["distributed"] = True
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        # name the --loss.<arg> flag (or [loss] key) behind the error when it is one of them
        flag = next((k for k in kwargs if str(e).startswith(k)), None)
        hint = f" (--loss.{flag} / [loss] {flag})" if flag and flag in spec else ""
        raise CLIError(f"cannot build {cls.__name__}({kwargs}): {e}{hint}") from None


# -- writing the resolved configuration ------------------------------------------------------


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return json.dumps(str(v))


def to_toml(cfg: RunConfig) -> str:
    """The configuration as TOML (every field, so that the file documents the whole run)."""
    lines = []
    for name in FIELDS:
        if name == "loss":
            continue
        lines.append(f"{name} = {_toml_value(getattr(cfg, name))}")
    lines.append("")
    lines.append("[loss]")
    for k, v in cfg.loss.items():
        if v is not None:
            lines.append(f"{k} = {_toml_value(v)}")
    return "\n".join(lines) + "\n"


def as_dict(cfg: RunConfig) -> dict[str, Any]:
    return dataclasses.asdict(cfg)
