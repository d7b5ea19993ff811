"""Functional forms of contrastkit's objectives (as ``torch.nn.functional`` is to ``torch.nn``).

Every function validates its arguments up front, never modifies them, accumulates in float32
under bfloat16/float16 inputs and computes log-sum-exps with a running maximum, so temperatures
down to 0.01 neither overflow nor underflow.
"""

from __future__ import annotations

import contextlib
import itertools

import torch
from torch import Tensor

from contrastkit._validation import (
    check_choice,
    check_embeddings,
    check_finite_scalar,
    check_labels,
    check_matrix,
    check_positive_scalar,
    check_same_dim,
    check_tensor,
    check_views,
    finite_checks_enabled,
)
from contrastkit.engine import select_engine
from contrastkit.objectives.infonce import VARIANTS, InfoNCESpec, infonce_row_losses
from contrastkit.pairing import Pairing
from contrastkit.similarity import SIMILARITIES, to_common_dtype

__all__ = [
    "info_nce",
    "info_nce_from_logits",
    "multiview_info_nce",
    "nt_xent",
    "supcon",
    "siglip",
    "build_pairing",
]

REDUCTIONS = ("mean", "sum", "none")


def build_pairing(
    num_queries: int,
    num_keys: int,
    device: torch.device,
    *,
    labels: Tensor | None = None,
    key_labels: Tensor | None = None,
    positives: Tensor | None = None,
    exclude: Tensor | None = None,
    exclude_self: bool = False,
) -> Pairing:
    """The :class:`Pairing` that the keyword arguments of the losses describe.

    ``positives`` (a ``(B, N)`` bool mask or float weights) wins over labels; labels over the
    diagonal.  ``key_labels`` defaults to ``labels`` (query ``i`` and key ``i`` share a label).

    Example:
        >>> import torch
        >>> p = build_pairing(3, 3, torch.device("cpu"), labels=torch.tensor([0, 1, 0]),
        ...                   exclude_self=True)
        >>> weights, excluded = p.dense()
        >>> weights[0]  # query 0's positives: key 2 (same label, not itself)
        tensor([0., 0., 1.])
    """
    if positives is not None and (labels is not None or key_labels is not None):
        raise ValueError("pass either positives= or labels=/key_labels=, not both")
    if exclude is not None:
        exclude = check_matrix("exclude", exclude, (num_queries, num_keys), device)
        if exclude.dtype != torch.bool:
            raise TypeError(f"exclude must be a bool tensor, got dtype {exclude.dtype}")
    if positives is not None:
        check_matrix("positives", positives, (num_queries, num_keys), device)
        return Pairing.from_matrix(positives, exclude=exclude, exclude_self=exclude_self)
    if labels is not None or key_labels is not None:
        if labels is None:
            raise ValueError("key_labels= needs labels= for the queries")
        labels = check_labels("labels", labels, num_queries, device)
        if key_labels is None:
            if num_keys != num_queries:
                raise ValueError(
                    f"labels has {num_queries} entries but there are {num_keys} keys; "
                    "pass key_labels= for the keys"
                )
            key_labels = labels
        key_labels = check_labels("key_labels", key_labels, num_keys, device)
        return Pairing.from_labels(labels, key_labels, exclude=exclude, exclude_self=exclude_self)
    if exclude_self:
        raise ValueError(
            "queries and keys are the same set, so the diagonal pairs are self-pairs: "
            "pass labels= or positives= to say which rows are positives"
        )
    if num_keys < num_queries:
        raise ValueError(
            f"query has {num_queries} rows but key has {num_keys}: diagonal pairing needs "
            "key rows >= query rows; pass labels= or positives= otherwise"
        )
    return Pairing.diagonal(num_queries, num_keys, exclude=exclude, device=device)


def _scale_from_temperature(temperature: float | Tensor) -> float | Tensor:
    check_positive_scalar("temperature", temperature)
    if isinstance(temperature, Tensor):
        # 1 / tau in float32 at least: a bfloat16 tau of 0.01 would round its scale to 100.0
        t = temperature.reshape(())
        return 1.0 / t.to(torch.promote_types(t.dtype, torch.float32))
    return 1.0 / float(temperature)


def _checks_on_every_rank(loss: str, distributed: bool) -> contextlib.AbstractContextManager:
    """With ``distributed=True``, a validation error on one rank is raised on every rank (see
    :func:`contrastkit.engine.distributed.errors_on_every_rank`), not left to the timeout."""
    if not distributed:
        return contextlib.nullcontext()
    from contrastkit.engine import distributed as dist_engine

    return dist_engine.errors_on_every_rank(loss)


def _sample_id_offset(distributed: bool) -> int:
    """Where this rank's sample ids start, so that the rows of other ranks are other samples:
    ``rank * 2**40`` (no collective, so a local error before the loss's exchange cannot leave
    the other ranks waiting in a different one)."""
    if not distributed:
        return 0
    from contrastkit.distributed import get_rank

    return get_rank() << 40


def _reduce(rows: list[tuple[Tensor, Tensor]], reduction: str, what: str) -> Tensor:
    if reduction == "none":
        return torch.cat([loss for loss, _ in rows])
    totals = []
    for loss, valid in rows:
        count = valid.sum()
        # A host sync (one per loss on a GPU): skipped with set_finite_checks(False), where a
        # batch without any valid row gives 0 instead of this error.
        if finite_checks_enabled() and int(count) == 0:
            raise ValueError(
                f"no {what} row has both a positive and a negative: check labels/positives "
                "(rows without a positive are left out of the mean, but at least one is needed)"
            )
        mean = loss.sum() / count.clamp_min(1).to(loss.dtype)
        totals.append(mean if reduction == "mean" else loss.sum())
    return sum(totals) / len(totals)


def info_nce(
    query: Tensor,
    key: Tensor | None = None,
    *,
    labels: Tensor | None = None,
    key_labels: Tensor | None = None,
    positives: Tensor | None = None,
    exclude: Tensor | None = None,
    negatives: Tensor | None = None,
    temperature: float | Tensor = 0.07,
    similarity: str = "cosine",
    variant: str = "out",
    symmetric: bool = False,
    decoupled: bool = False,
    margin: float = 0.0,
    reduction: str = "mean",
    engine: str = "auto",
    distributed: bool = False,
) -> Tensor:
    r"""InfoNCE with one or many positives (van den Oord et al. 2018; CLIP, Radford et al. 2021;
    SupCon, Khosla et al. 2020; DCL, Yeh et al. 2022).

    For query :math:`i`, logits :math:`l_{ij} = (s(q_i, k_j) - m\,[w_{ij} > 0]) / \tau`, positive
    weights :math:`w_{ij}` and denominator set :math:`A(i)` (keys not excluded, minus the
    positives if ``decoupled``, plus the extra ``negatives``)::

        out:  L_i = -sum_j w_ij (l_ij - log sum_{a in A(i)} exp l_ia) / sum_j w_ij
        in:   L_i = -log( sum_j w_ij exp(l_ij) / sum_j w_ij ) + log sum_{a in A(i)} exp l_ia

    The loss is the mean of :math:`L_i` over rows that have a positive; ``symmetric=True``
    averages it with the same loss of the keys against the queries (CLIP).

    Args:
        query: ``(B, D)`` embeddings.
        key: ``(N, D)`` embeddings; ``None`` means the queries are also the keys, and the
            self-pairs ``(i, i)`` are excluded (then ``labels=`` or ``positives=`` is required).
        labels: ``(B,)`` integer classes: query ``i`` and key ``j`` are positives iff labels are
            equal; keys take ``key_labels`` (``(N,)``), by default the same ``labels``.
        positives: ``(B, N)`` bool mask or float (soft) weights of the positive pairs.
            Without labels/positives, query ``i`` and key ``i`` are the positive pair.
        exclude: ``(B, N)`` bool mask of pairs removed from the positives and the denominator.
        negatives: extra negatives, per query ``(B, K, D)`` or shared by all queries ``(M, D)``;
            used in the query->key direction only.
        temperature: :math:`\tau > 0`, a float or a scalar tensor (learnable).
        similarity: ``"cosine"`` (inputs normalised inside), ``"dot"`` or ``"neg_sq_euclidean"``.
        variant: ``"out"`` (mean of log-probabilities over positives) or ``"in"``.
        symmetric: average both directions (query->key and key->query).
        decoupled: remove the positives from the denominator (Decoupled Contrastive Learning).
        margin: additive margin :math:`m` subtracted from positive similarities (AM-softmax).
        reduction: ``"mean"`` (over rows with a positive), ``"sum"``, or ``"none"`` for the
            per-row losses (``(B,)``, or ``(B + N,)`` when symmetric; rows with no positive give 0).
            Symmetric: the average of the two directions' means (or sums), so ``"sum"`` is half
            the sum of the ``"none"`` rows.
        engine: ``"auto"``, ``"dense"``, ``"streaming"`` or ``"fused"``.
        distributed: contrast with the keys of every process of ``torch.distributed``: the
            inputs are this rank's rows of the global batch (``positives``/``exclude`` are
            ``(B_r, N_global)``), the result is the global batch's loss on every rank, and
            gradients are scaled for DDP's averaging (see :mod:`contrastkit.engine.distributed`).
            ``engine="streaming"`` exchanges key blocks in a ring instead of gathering them.

    Returns:
        The scalar loss in float32 (float64 if any input is float64; inputs of different dtypes
        are promoted), or per-row losses.  An enclosing ``torch.autocast`` does not lower it.

    Example:
        >>> import torch
        >>> from contrastkit.functional import info_nce
        >>> q, k = torch.randn(8, 32), torch.randn(8, 32)
        >>> loss = info_nce(q, k, temperature=0.1, symmetric=True)
        >>> loss.shape
        torch.Size([])
    """
    with _checks_on_every_rank("info_nce", distributed):
        query = check_embeddings("query", query)
        same_set = key is None
        key = query if same_set else check_embeddings("key", key)
        check_same_dim(("query", "key"), (query, key))
        check_choice("similarity", similarity, SIMILARITIES)
        check_choice("variant", variant, VARIANTS)
        check_choice("reduction", reduction, REDUCTIONS)
        check_finite_scalar("margin", margin)
        if isinstance(margin, Tensor) and margin.requires_grad:
            raise ValueError(
                "margin must be a fixed number: a margin tensor that requires grad is not "
                "differentiated (pass float(margin), or margin.detach())"
            )
        margin = float(margin)
        scale = _scale_from_temperature(temperature)
        per_query, shared = _split_negatives(negatives, query)
        query, key, per_query, shared = to_common_dtype(
            query, None if same_set else key, per_query, shared
        )
        key = query if same_set else key
        spec = InfoNCESpec(
            similarity=similarity, variant=variant, decoupled=decoupled, margin=margin
        )
    if distributed:  # cross-process negatives: contrastkit.engine.distributed
        from contrastkit.engine import distributed as dist_engine

        return dist_engine.info_nce(
            query,
            None if same_set else key,
            labels=labels,
            key_labels=key_labels,
            positives=positives,
            exclude=exclude,
            negatives=(per_query, shared),
            scale=scale,
            spec=spec,
            symmetric=symmetric,
            reduction=reduction,
            engine=engine,
        )
    pairing = build_pairing(
        query.shape[0],
        key.shape[0],
        query.device,
        labels=labels,
        key_labels=key_labels,
        positives=positives,
        exclude=exclude,
        exclude_self=same_set,
    )
    eng = select_engine(engine, query, key)
    rows = eng.infonce_rows(
        query, key, pairing, scale, spec, per_query, shared, both_directions=symmetric
    )
    return _reduce(rows, reduction, "query" if not symmetric else "query or key")


def info_nce_from_logits(
    logits: Tensor,
    *,
    labels: Tensor | None = None,
    key_labels: Tensor | None = None,
    positives: Tensor | None = None,
    exclude: Tensor | None = None,
    variant: str = "out",
    symmetric: bool = False,
    decoupled: bool = False,
    reduction: str = "mean",
) -> Tensor:
    r"""InfoNCE on precomputed ``(B, N)`` logits, for similarities the engines do not compute
    (late interaction, gated or kernel similarities, a model's own scores).

    The same row loss as :func:`info_nce` with :math:`l_{ij}` = ``logits[i, j]`` (temperature and
    margin already applied by the caller); the pairing arguments are those of :func:`info_nce`.
    Dense: it holds the whole ``B x N`` block.

    Example:
        >>> import torch
        >>> from contrastkit.similarity import late_interaction_similarity
        >>> q_tokens, k_tokens = torch.randn(4, 7, 16), torch.randn(4, 9, 16)
        >>> logits = late_interaction_similarity(q_tokens, k_tokens) / 0.05
        >>> info_nce_from_logits(logits, symmetric=True).shape
        torch.Size([])
    """
    logits = check_embeddings("logits", logits)
    check_choice("variant", variant, VARIANTS)
    check_choice("reduction", reduction, REDUCTIONS)
    b, n = logits.shape
    pairing = build_pairing(
        b,
        n,
        logits.device,
        labels=labels,
        key_labels=key_labels,
        positives=positives,
        exclude=exclude,
    )
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    weights, excl = pairing.dense(dtype=logits.dtype)
    rows = [infonce_row_losses(logits, weights, excl, None, variant, decoupled)]
    if symmetric:
        ex_t = None if excl is None else excl.T
        rows.append(infonce_row_losses(logits.T, weights.T, ex_t, None, variant, decoupled))
    return _reduce(rows, reduction, "query" if not symmetric else "query or key")


def multiview_info_nce(
    views: list[Tensor] | tuple[Tensor, ...],
    *,
    mode: str = "all",
    core: int = 0,
    temperature: float | Tensor = 0.07,
    similarity: str = "cosine",
    engine: str = "auto",
) -> Tensor:
    r"""Contrastive Multiview Coding (Tian et al. 2020): InfoNCE between views of one sample.

    For views :math:`V_1..V_M` (each ``(N, D)``, row ``n`` the same sample) and the two-view loss
    :math:`L(V_a, V_b)` = symmetric InfoNCE with anchors from one view and candidates from the
    other (cross-view negatives only)::

        mode="all"  (full graph): L = sum_{a < b} L(V_a, V_b) / (M (M - 1) / 2)
        mode="core" (core view):  L = sum_{b != c} L(V_c, V_b) / (M - 1)

    Memory-bank negatives come in through :func:`info_nce`'s ``negatives=`` on the pairs.

    Example:
        >>> import torch
        >>> views = [torch.randn(8, 16) for _ in range(3)]
        >>> multiview_info_nce(views, mode="core").shape
        torch.Size([])
    """
    check_choice("mode", mode, ("all", "core"))
    if not isinstance(views, (list, tuple)) or len(views) < 2:
        raise ValueError("views must be a list of at least 2 (N, D) tensors")
    views = [check_embeddings(f"views[{i}]", v) for i, v in enumerate(views)]
    for i, v in enumerate(views):
        if v.shape[0] != views[0].shape[0]:
            raise ValueError(
                f"views[{i}] has {v.shape[0]} rows but views[0] has {views[0].shape[0]}"
            )
    if mode == "all":
        pairs = list(itertools.combinations(range(len(views)), 2))
    else:
        if not 0 <= core < len(views):
            raise ValueError(f"core must index a view in [0, {len(views)}), got {core}")
        pairs = [(core, b) for b in range(len(views)) if b != core]
    losses = [
        info_nce(
            views[a],
            views[b],
            temperature=temperature,
            similarity=similarity,
            symmetric=True,
            engine=engine,
        )
        for a, b in pairs
    ]
    return torch.stack(losses).mean()


def _split_negatives(negatives: Tensor | None, query: Tensor) -> tuple[Tensor | None, ...]:
    if negatives is None:
        return None, None
    if not isinstance(negatives, Tensor):
        raise TypeError(f"negatives must be a torch.Tensor, got {type(negatives).__name__}")
    empty = negatives.dim() in (2, 3) and negatives.shape[-2] == 0  # e.g. a queue not yet filled
    if empty and (not negatives.is_floating_point() or negatives.shape[-1] != query.shape[-1]):
        raise ValueError(
            f"negatives must be floating point with {query.shape[-1]} features (as query), got "
            f"{negatives.dtype} of shape {tuple(negatives.shape)}"
        )
    if empty and negatives.dim() == 2:
        return None, None
    if negatives.dim() == 3:
        negatives = check_embeddings("negatives", negatives, ndim=3)
        if negatives.shape[0] != query.shape[0]:
            raise ValueError(
                f"negatives (B, K, D) must have B = {query.shape[0]} (the query rows), "
                f"got shape {tuple(negatives.shape)}"
            )
        check_same_dim(("query", "negatives"), (query, negatives))
        return (None if negatives.shape[1] == 0 else negatives), None
    if negatives.dim() == 2:
        negatives = check_embeddings("negatives", negatives)
        check_same_dim(("query", "negatives"), (query, negatives))
        return None, negatives
    raise ValueError(
        f"negatives must be (B, K, D) per query or (M, D) shared, got {tuple(negatives.shape)}"
    )


def nt_xent(
    *views: Tensor,
    temperature: float | Tensor = 0.5,
    similarity: str = "cosine",
    engine: str = "auto",
    distributed: bool = False,
) -> Tensor:
    r"""NT-Xent, SimCLR's loss (Chen et al. 2020), over two or more views.

    With two views of ``N`` samples, the ``2N`` embeddings ``z`` are all anchors; anchor ``a``'s
    positive ``p(a)`` is the other view of its sample and its denominator is every other
    embedding::

        L = 1/(2N) sum_a -log( exp(s(z_a, z_p(a))/tau) / sum_{b != a} exp(s(z_a, z_b)/tau) )

    With ``V > 2`` views the loss is the mean of the two-view loss over every pair of views
    (the "full graph" of CMC, Tian et al. 2020).

    Args:
        views: two or more ``(N, D)`` tensors; row ``n`` of every view is the same sample.
        temperature: :math:`\tau > 0`.
        similarity: as in :func:`info_nce`.
        distributed: every rank's samples are anchors and negatives (see :func:`info_nce`).

    Example:
        >>> import torch
        >>> z1, z2 = torch.randn(16, 32), torch.randn(16, 32)
        >>> nt_xent(z1, z2, temperature=0.5).shape
        torch.Size([])
    """
    with _checks_on_every_rank("info_nce", distributed):
        views = check_views("nt_xent", views)
        n = views[0].shape[0]
    sample = (_sample_id_offset(distributed) + torch.arange(n, device=views[0].device)).repeat(2)
    losses = [
        info_nce(
            torch.cat([a, b]),
            labels=sample,
            temperature=temperature,
            similarity=similarity,
            engine=engine,
            distributed=distributed,
        )
        for a, b in itertools.combinations(views, 2)
    ]
    return torch.stack(losses).mean()


def supcon(
    features: Tensor,
    labels: Tensor | None = None,
    *,
    temperature: float | Tensor = 0.1,
    variant: str = "out",
    similarity: str = "cosine",
    engine: str = "auto",
    distributed: bool = False,
) -> Tensor:
    r"""Supervised contrastive loss (Khosla et al. 2020), ``L^sup_out`` or ``L^sup_in``.

    All ``B * V`` embeddings are anchors; the positives ``P(a)`` of anchor ``a`` are the other
    embeddings with its label, ``A(a)`` every embedding but ``a``::

        out: L_a = -1/|P(a)| sum_{p in P(a)} log( exp(z_a.z_p/tau) / D_a )
        in:  L_a = -log( 1/|P(a)| sum_{p in P(a)} exp(z_a.z_p/tau) / D_a )
        D_a = sum_{b in A(a)} exp(z_a.z_b/tau)

    averaged over anchors.  ``labels=None`` makes each sample its own class (SimCLR).  Anchors with
    no positive (a class seen once, with one view) are left out of the mean; a ``ValueError`` is
    raised if no anchor has a positive.

    Args:
        features: ``(B, V, D)`` embeddings, ``V`` views per sample (``(B, D)`` means ``V = 1``).
        labels: ``(B,)`` integer classes, or ``None``.
        temperature: :math:`\tau > 0`.
        variant: ``"out"`` (the paper's recommendation) or ``"in"``.
        distributed: every rank's embeddings are anchors, positives and negatives (see
            :func:`info_nce`); ``labels`` are this rank's.

    Example:
        >>> import torch
        >>> f = torch.randn(8, 2, 16)
        >>> supcon(f, torch.tensor([0, 1, 0, 1, 2, 2, 3, 3])).shape
        torch.Size([])
    """
    with _checks_on_every_rank("info_nce", distributed):
        if isinstance(features, Tensor) and features.dim() == 2:
            features = features[:, None, :]
        features = check_embeddings("features", features, ndim=3)
        b, v, _ = features.shape
        if labels is None:
            labels = _sample_id_offset(distributed) + torch.arange(b, device=features.device)
        labels = check_labels("labels", labels, b, features.device)
    z = features.transpose(0, 1).reshape(v * b, -1)
    return info_nce(
        z,
        labels=labels.repeat(v),
        temperature=temperature,
        variant=variant,
        similarity=similarity,
        engine=engine,
        distributed=distributed,
    )


def siglip(
    query: Tensor,
    key: Tensor,
    *,
    scale: float | Tensor = 10.0,
    bias: float | Tensor = -10.0,
    labels: Tensor | None = None,
    key_labels: Tensor | None = None,
    positives: Tensor | None = None,
    exclude: Tensor | None = None,
    similarity: str = "cosine",
    engine: str = "auto",
    distributed: bool = False,
) -> Tensor:
    r"""The pairwise sigmoid loss of SigLIP (Zhai et al. 2023).

    With logit scale :math:`t`, bias :math:`b`, and :math:`z_{ij} = +1` for positive pairs (the
    diagonal by default) and :math:`-1` otherwise::

        L = -1/B sum_i sum_j log sigmoid( z_ij (t s(q_i, k_j) + b) )

    Float ``positives`` in ``[0, 1]`` are soft targets :math:`y`: the term becomes the binary
    cross-entropy :math:`-[y \log\sigma(x) + (1-y)\log\sigma(-x)]`.

    Args:
        query, key: ``(B, D)`` and ``(N, D)`` embeddings.
        scale: :math:`t` (a float or a scalar tensor; SigLIP learns it as ``log t``).
        bias: :math:`b`.
        labels, key_labels, positives, exclude: the pairing, as in :func:`info_nce`.
        distributed: the global batch's loss over every rank's pairs (see :func:`info_nce`);
            ``engine="streaming"`` exchanges key blocks in a ring, as the paper's chunked loss.

    Example:
        >>> import torch
        >>> siglip(torch.randn(8, 16), torch.randn(8, 16)).shape
        torch.Size([])
    """
    with _checks_on_every_rank("siglip", distributed):
        query = check_embeddings("query", query)
        key = check_embeddings("key", key)
        check_same_dim(("query", "key"), (query, key))
        check_choice("similarity", similarity, SIMILARITIES)
        check_positive_scalar("scale", scale)
        check_finite_scalar("bias", bias)
        if positives is not None:
            positives = check_tensor("positives", positives)
            if positives.is_floating_point() and bool((positives > 1).any()):
                raise ValueError("positives (soft targets) for the sigmoid loss must lie in [0, 1]")
        scale = scale.reshape(()) if isinstance(scale, Tensor) else float(scale)
        bias = bias.reshape(()) if isinstance(bias, Tensor) else float(bias)
        query, key = to_common_dtype(query, key)
    if distributed:  # cross-process pairs: contrastkit.engine.distributed
        from contrastkit.engine import distributed as dist_engine

        return dist_engine.siglip(
            query,
            key,
            labels=labels,
            key_labels=key_labels,
            positives=positives,
            exclude=exclude,
            scale=scale,
            bias=bias,
            similarity=similarity,
            engine=engine,
        )
    pairing = build_pairing(
        query.shape[0],
        key.shape[0],
        query.device,
        labels=labels,
        key_labels=key_labels,
        positives=positives,
        exclude=exclude,
    )
    eng = select_engine(engine, query, key)
    rows = eng.sigmoid_rows(query, key, pairing, scale, bias, similarity)
    return rows.sum() / query.shape[0]


# --- issue 5 part A re-exports ---
# MARGIN, HARD, SOFT and RANK objectives (contrastkit.objectives.{margin,hardness,soft,ranking}).
from contrastkit.objectives.hardness import (  # noqa: E402
    ISogCLROutput,
    cacr,
    focal_info_nce,
    focal_sigmoid_loss,
    hard_negative_info_nce,
    isogclr,
    macl,
    negative_weighted_info_nce,
    relative_penalties,
    topk_hard_negatives,
    topk_negatives_info_nce,
)
from contrastkit.objectives.margin import (  # noqa: E402
    circle_loss,
    circle_loss_scores,
    corrupted_margin_loss,
    energy_hinge_loss,
    nt_xent_am,
    pair_contrastive_loss,
    promcse,
    quadruplet_loss,
    triplet_loss,
)
from contrastkit.objectives.ranking import (  # noqa: E402
    cosent_loss,
    cprd,
    decoupled_softmax,
    listwise_distillation,
    listwise_rerank_loss,
    mann_whitney_loss,
    pair_score_distillation,
    pearson_loss,
    pointwise_rerank_loss,
    soft_topk,
    soft_topk_loss,
)
from contrastkit.objectives.soft import (  # noqa: E402
    bag_info_nce,
    bag_pair_info_nce,
    best_alignment_consistency,
    cosine_distillation_loss,
    cwcl,
    graph_info_nce,
    momentum_distillation_itc,
    one_to_k_info_nce,
    self_distillation_loss,
    soft_cross_entropy,
)

__all__ += [
    # MARGIN
    "nt_xent_am",
    "circle_loss",
    "circle_loss_scores",
    "energy_hinge_loss",
    "promcse",
    "triplet_loss",
    "quadruplet_loss",
    "pair_contrastive_loss",
    "corrupted_margin_loss",
    # HARD
    "focal_info_nce",
    "focal_sigmoid_loss",
    "hard_negative_info_nce",
    "negative_weighted_info_nce",
    "topk_hard_negatives",
    "topk_negatives_info_nce",
    "cacr",
    "macl",
    "relative_penalties",
    "isogclr",
    "ISogCLROutput",
    # SOFT
    "cwcl",
    "momentum_distillation_itc",
    "one_to_k_info_nce",
    "graph_info_nce",
    "bag_info_nce",
    "bag_pair_info_nce",
    "soft_cross_entropy",
    "self_distillation_loss",
    "cosine_distillation_loss",
    "best_alignment_consistency",
    # RANK
    "mann_whitney_loss",
    "listwise_distillation",
    "cprd",
    "decoupled_softmax",
    "soft_topk",
    "soft_topk_loss",
    "listwise_rerank_loss",
    "pointwise_rerank_loss",
    "cosent_loss",
    "pearson_loss",
    "pair_score_distillation",
]

# --- issue 5 part B re-exports ---
from contrastkit.objectives.classification import (  # noqa: E402
    balanced_mse_loss,
    balanced_softmax_loss,
    class_independent_bce,
    comp_sum_loss,
    generalized_cross_entropy,
    harmonic_logits,
    harmonic_loss,
    information_maximization_loss,
    mae_loss,
    multilabel_bce,
    number_token_loss,
    smooth_adversarial_comp_sum_loss,
    squentropy,
)
from contrastkit.objectives.composite import (  # noqa: E402
    min_norm_weights,
    weighted_sum,
)
from contrastkit.objectives.geometry import (  # noqa: E402
    alignment_loss,
    clip_alignment_uniformity_loss,
    cross_correlation_loss,
    cross_cosine_similarity_loss,
    cross_sigmoid_similarity_loss,
    cross_uniformity_loss,
    joint_entropy_loss,
    kernel_mixture_loss,
    scattering_loss,
    sepclr_loss,
    uniformity_loss,
)
from contrastkit.objectives.mixup import (  # noqa: E402
    core_tuning_mixup,
    focal_supcon_loss,
    metrix_loss,
    mix_tokens,
    mixup,
    mixup_info_nce,
    mixup_targets,
    supremix_loss,
    unmix_tokens,
)
from contrastkit.objectives.prototype import (  # noqa: E402
    class_prototypes,
    prototype_concentration,
    prototype_info_nce,
)
from contrastkit.objectives.token import (  # noqa: E402
    contrastive_search,
    contrastive_search_scores,
    contrastive_token_loss,
    distillm2_loss,
    simctg_contrastive_loss,
    skew_kl_divergence,
    skew_reverse_kl_divergence,
)

__all__ += [
    "alignment_loss",
    "uniformity_loss",
    "cross_uniformity_loss",
    "clip_alignment_uniformity_loss",
    "kernel_mixture_loss",
    "scattering_loss",
    "cross_correlation_loss",
    "cross_cosine_similarity_loss",
    "cross_sigmoid_similarity_loss",
    "joint_entropy_loss",
    "sepclr_loss",
    "mixup",
    "mixup_targets",
    "mixup_info_nce",
    "metrix_loss",
    "supremix_loss",
    "core_tuning_mixup",
    "focal_supcon_loss",
    "mix_tokens",
    "unmix_tokens",
    "simctg_contrastive_loss",
    "contrastive_search_scores",
    "contrastive_search",
    "contrastive_token_loss",
    "skew_kl_divergence",
    "skew_reverse_kl_divergence",
    "distillm2_loss",
    "harmonic_logits",
    "harmonic_loss",
    "squentropy",
    "number_token_loss",
    "comp_sum_loss",
    "generalized_cross_entropy",
    "mae_loss",
    "smooth_adversarial_comp_sum_loss",
    "balanced_softmax_loss",
    "balanced_mse_loss",
    "class_independent_bce",
    "multilabel_bce",
    "information_maximization_loss",
    "class_prototypes",
    "prototype_concentration",
    "prototype_info_nce",
    "weighted_sum",
    "min_norm_weights",
]
