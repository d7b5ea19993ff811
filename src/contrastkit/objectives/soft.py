"""Soft and structured targets (the SOFT group).

=================================================  ===========================================
objective                                          paper
=================================================  ===========================================
:func:`cwcl` / :class:`CWCL`                       Srinivasa et al. 2023 (CWCL)
:func:`momentum_distillation_itc`                  ALBEF (Li et al. 2021)
:func:`one_to_k_info_nce`                          1-to-K contrastive learning (Nie et al. 2024)
:func:`graph_info_nce`                             SLIP; supervised graph contrastive; RCML
:func:`bag_info_nce`                               SECLA (Qu et al. 2023)
:func:`soft_cross_entropy`                         ALPRO (Li et al. 2022) entity pseudo-labels
:func:`self_distillation_loss`                     COSMOS (Kim et al. 2025); DINO
:func:`cosine_distillation_loss`                   DCLIP
:func:`best_alignment_consistency`                 Peyser et al. 2023 (speech-text, no alignment)
=================================================  ===========================================

Most of these are :func:`~contrastkit.functional.info_nce` with a soft or structured
``positives`` matrix (rows of weights :math:`w_{ij} \\ge 0`, loss
:math:`-\\sum_j w_{ij} \\log p_{ij} / \\sum_j w_{ij}`), so they run on every engine and tile.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from contrastkit._validation import (
    check_choice,
    check_embeddings,
    check_finite,
    check_finite_scalar,
    check_positive_scalar,
    check_same_dim,
    check_tensor,
)
from contrastkit.functional import _scale_from_temperature, info_nce
from contrastkit.objectives.infonce import VARIANTS
from contrastkit.similarity import (
    SIMILARITIES,
    LogitScale,
    compute_dtype,
    pairwise_similarity,
    prepare,
    to_common_dtype,
)

__all__ = [
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
    "CWCL",
    "MomentumDistillationITC",
    "OneToKInfoNCE",
    "GraphInfoNCE",
    "BagInfoNCE",
    "SoftCrossEntropy",
    "SelfDistillationLoss",
    "CosineDistillationLoss",
    "BestAlignmentConsistency",
]


# ------------------------------------------------------------------------------------------
# CWCL
# ------------------------------------------------------------------------------------------
def cwcl(
    query: Tensor,
    key: Tensor,
    *,
    frozen: Tensor | None = None,
    temperature: float | Tensor = 0.07,
    symmetric: bool = True,
    similarity: str = "cosine",
    engine: str = "auto",
) -> Tensor:
    r"""Continuously weighted contrastive loss (CWCL, Srinivasa et al. 2023).

    The positive weight of every pair is the intra-modal similarity of the frozen (pre-trained)
    modality, :math:`w_{ij} = (\cos(f_i, f_j) + 1)/2 \in [0, 1]` (:math:`w_{ii} = 1`)::

        L_{U->V} = -1/N sum_i 1/(sum_j w_ij) sum_j w_ij log p_ij,
        p_ij = e^{<p_i,q_j>/tau} / sum_k e^{<p_i,q_k>/tau}

    i.e. :func:`info_nce` with ``positives=w`` (tiles). ``symmetric`` averages both directions.

    Args:
        query: ``(N, D)`` embeddings of the modality being trained.
        key: ``(N, D)`` embeddings of the other modality (typically the frozen one).
        frozen: ``(N, D')`` embeddings of the frozen modality from which the weights are
            computed (not differentiated); defaults to ``key``.

    Example:
        >>> import torch
        >>> text, image = torch.randn(8, 16), torch.randn(8, 16)
        >>> cwcl(text, image, temperature=0.07).shape
        torch.Size([])
    """
    key = check_embeddings("key", key)
    frozen = key if frozen is None else check_embeddings("frozen", frozen)
    if frozen.shape[0] != key.shape[0]:
        raise ValueError(
            f"frozen must have {key.shape[0]} rows (one per key), got {frozen.shape[0]}"
        )
    with torch.no_grad():
        f = prepare(frozen, "cosine")
        weights = ((f @ f.T + 1.0) / 2.0).clamp(0.0, 1.0)
    query = check_embeddings("query", query)
    if query.shape[0] != key.shape[0]:
        raise ValueError("cwcl needs one query per key (paired data)")
    return info_nce(
        query,
        key,
        positives=weights,
        temperature=temperature,
        symmetric=symmetric,
        similarity=similarity,
        engine=engine,
    )


# ------------------------------------------------------------------------------------------
# ALBEF momentum distillation
# ------------------------------------------------------------------------------------------
def momentum_distillation_itc(
    image: Tensor,
    text: Tensor,
    image_m: Tensor,
    text_m: Tensor,
    *,
    image_queue: Tensor | None = None,
    text_queue: Tensor | None = None,
    alpha: float = 0.4,
    temperature: float | Tensor = 0.07,
    engine: str = "auto",
) -> Tensor:
    r"""ALBEF's image-text contrastive loss with momentum distillation (Li et al. 2021).

    Keys are the momentum encoder's features followed by the queue,
    :math:`\hat T = [T^m; T^{queue}]`. The momentum model's softmax is mixed into the one-hot
    target::

        q^{i2t}_i = softmax( s(I^m_i, \hat T) / tau )
        y^{i2t}_i = alpha q^{i2t}_i + (1 - alpha) onehot(i)
        L_itc = 1/2 E[ H(y^{i2t}, p^{i2t}(I, \hat T)) + H(y^{t2i}, p^{t2i}(T, \hat I)) ]

    Each direction is :func:`info_nce` with ``positives = y`` (rows sum to 1; tiles). Momentum
    features and queues are targets: they are not differentiated. ``alpha = 0`` is plain ITC
    with queues.

    Args:
        image, text: ``(B, D)`` features of the model being trained.
        image_m, text_m: ``(B, D)`` features of the momentum model.
        image_queue, text_queue: ``(Q, D)`` queued momentum features.
        alpha: distillation weight (0.4 in ALBEF).

    Example:
        >>> import torch
        >>> i, t = torch.randn(4, 8), torch.randn(4, 8)
        >>> im, tm = i + 0.1 * torch.randn(4, 8), t + 0.1 * torch.randn(4, 8)
        >>> momentum_distillation_itc(i, t, im, tm, text_queue=torch.randn(16, 8),
        ...                           image_queue=torch.randn(16, 8)).shape
        torch.Size([])
    """
    check_finite_scalar("alpha", alpha)
    if not 0 <= float(alpha) <= 1:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    names = ("image", "text", "image_m", "text_m")
    image, text, image_m, text_m = (
        check_embeddings(n, x) for n, x in zip(names, (image, text, image_m, text_m), strict=True)
    )
    queues = {
        n: check_embeddings(n, q)
        for n, q in (("image_queue", image_queue), ("text_queue", text_queue))
        if q is not None
    }
    check_same_dim(names + tuple(queues), (image, text, image_m, text_m, *queues.values()))
    image_queue, text_queue = queues.get("image_queue"), queues.get("text_queue")
    b = image.shape[0]
    for n, x in zip(names[1:], (text, image_m, text_m), strict=True):
        if x.shape[0] != b:
            raise ValueError(f"{n} must have {b} rows like image, got {x.shape[0]}")
    fixed = temperature.detach() if isinstance(temperature, Tensor) else temperature
    scale = float(_scale_from_temperature(fixed))

    def direction(anchor: Tensor, anchor_m: Tensor, keys_m: Tensor, queue: Tensor | None) -> Tensor:
        keys = keys_m if queue is None else torch.cat([keys_m, queue])
        keys = keys.detach()
        with torch.no_grad():
            sim_m = prepare(anchor_m, "cosine") @ prepare(keys, "cosine").T
            onehot = torch.eye(b, keys.shape[0], dtype=sim_m.dtype, device=sim_m.device)
            targets = alpha * torch.softmax(sim_m * scale, dim=1) + (1 - alpha) * onehot
        return info_nce(anchor, keys, positives=targets, temperature=temperature, engine=engine)

    i2t = direction(image, image_m, text_m, text_queue)
    t2i = direction(text, text_m, image_m, image_queue)
    return (i2t + t2i) / 2


# ------------------------------------------------------------------------------------------
# 1-to-K, graph, bag positives
# ------------------------------------------------------------------------------------------
def one_to_k_info_nce(
    query: Tensor,
    keys: Tensor,
    *,
    temperature: float | Tensor = 0.07,
    symmetric: bool = True,
    similarity: str = "cosine",
    engine: str = "auto",
) -> Tensor:
    r"""1-to-K contrastive loss (Nie et al. 2024): each query (image) against its ``K``
    positives (captions in ``K`` languages) treated equally, every other sample's keys being
    negatives::

        L_{i2t} = 1/B sum_i 1/K sum_k -log( e^{s(v_i,t_ik)/tau} / sum_{j,k'} e^{s(v_i,t_jk')/tau} )
        L_{t2i} = 1/(BK) sum_{i,k} -log( e^{s(t_ik, v_i)/tau} / sum_j e^{s(t_ik, v_j)/tau} )
        L = (L_{i2t} + L_{t2i}) / 2          (symmetric; L_{i2t} otherwise)

    It is :func:`info_nce` with ``labels`` = sample ids (tiles). (The reference code, CCRK's
    ``get_unialign_contrastive_loss``, sums the i2t term over the ``K`` positives and divides the
    symmetric loss by ``K``: that is ``L_{i2t}/2 + L_{t2i}/(2K)``, which weights the t2i
    direction ``1/K`` times less than the equation above; not a constant factor.)

    Args:
        query: ``(B, D)``.
        keys: ``(B, K, D)``: row ``i`` holds query ``i``'s ``K`` positives.

    Example:
        >>> import torch
        >>> one_to_k_info_nce(torch.randn(4, 8), torch.randn(4, 3, 8)).shape
        torch.Size([])
    """
    query = check_embeddings("query", query)
    keys = check_embeddings("keys", keys, ndim=3)
    check_same_dim(("query", "keys"), (query, keys))
    b, k, d = keys.shape
    if b != query.shape[0]:
        raise ValueError(
            f"keys must be (B, K, D) with B = {query.shape[0]}, got {tuple(keys.shape)}"
        )
    ids = torch.arange(b, device=query.device)
    return info_nce(
        query,
        keys.reshape(b * k, d),
        labels=ids,
        key_labels=ids.repeat_interleave(k),
        temperature=temperature,
        symmetric=symmetric,
        similarity=similarity,
        engine=engine,
    )


def _check_adjacency(adjacency: object, shape: tuple[int, int], device: torch.device) -> Tensor:
    adjacency = check_tensor("adjacency", adjacency)
    if tuple(adjacency.shape) != shape:
        raise ValueError(f"adjacency must have shape {shape}, got {tuple(adjacency.shape)}")
    if adjacency.device != device:
        raise ValueError(f"adjacency is on {adjacency.device} but the embeddings are on {device}")
    if adjacency.dtype != torch.bool:
        if not adjacency.is_floating_point():
            raise TypeError(f"adjacency must be bool or float, got dtype {adjacency.dtype}")
        if bool((adjacency < 0).any()) or not bool(torch.isfinite(adjacency).all()):
            raise ValueError("adjacency weights must be finite and >= 0")
    return adjacency


def graph_info_nce(
    query: Tensor,
    key: Tensor | None = None,
    *,
    adjacency: Tensor,
    include_pairs: bool = True,
    intra_weight: float = 0.0,
    temperature: float | Tensor = 0.07,
    symmetric: bool = False,
    variant: str = "out",
    similarity: str = "cosine",
    engine: str = "auto",
) -> Tensor:
    r"""Contrastive loss whose positives come from a graph or relation (SLIP: co-purchase
    neighbours as extra positives, Lu et al. 2025; supervised graph contrastive pretraining,
    Ghosh et al. 2023: graph-derived soft positives; RCML: relation-conditioned positives with
    inter- and intra-modal terms).

    With :math:`A` the ``(B, B)`` adjacency (bool, or float weights) of the batch's samples::

        L = InfoNCE(q, k; positives = A + I)                       (inter-modal)
            + lambda/2 [ InfoNCE(q, q; A) + InfoNCE(k, k; A) ]     (intra-modal, self excluded)

    ``include_pairs`` adds the paired key :math:`I` to the positives (weight 1); ``key=None``
    gives the single-modality loss ``InfoNCE(q, q; A)`` (self excluded). Rows with no positive
    are left out. Every term is :func:`info_nce` (tiles).

    Args:
        adjacency: ``(B, B)``; row ``i``: the samples related to sample ``i``.
        intra_weight: :math:`\lambda`, weight of the intra-modal terms (RCML); 0 disables them.
        symmetric, variant: passed to :func:`info_nce` for the inter-modal term.

    Example:
        >>> import torch
        >>> adj = torch.zeros(6, 6, dtype=torch.bool); adj[0, 1] = adj[1, 0] = True
        >>> graph_info_nce(torch.randn(6, 8), torch.randn(6, 8), adjacency=adj).shape
        torch.Size([])
    """
    query = check_embeddings("query", query)
    b = query.shape[0]
    adjacency = _check_adjacency(adjacency, (b, b), query.device)
    check_choice("variant", variant, VARIANTS)
    check_finite_scalar("intra_weight", intra_weight)
    eye = torch.eye(b, dtype=torch.bool, device=query.device)
    kwargs = dict(temperature=temperature, similarity=similarity, engine=engine)
    if key is None:
        return info_nce(query, positives=adjacency, variant=variant, **kwargs)
    key = check_embeddings("key", key)
    if key.shape[0] != b:
        raise ValueError(f"key must have {b} rows (paired with the queries), got {key.shape[0]}")
    if adjacency.dtype == torch.bool:
        positives = adjacency | eye if include_pairs else adjacency
    else:
        positives = (
            torch.where(eye, adjacency.clamp_min(1.0), adjacency) if include_pairs else adjacency
        )
    loss = info_nce(query, key, positives=positives, symmetric=symmetric, variant=variant, **kwargs)
    if intra_weight:
        intra = info_nce(query, positives=adjacency, **kwargs) + info_nce(
            key, positives=adjacency, **kwargs
        )
        loss = loss + intra_weight * intra / 2
    return loss


def bag_info_nce(
    query: Tensor,
    key: Tensor,
    *,
    query_bags: Tensor,
    key_bags: Tensor,
    mode: str = "max",
    temperature: float | Tensor = 0.07,
    symmetric: bool = True,
    similarity: str = "cosine",
    engine: str = "auto",
) -> Tensor:
    r"""Contrastive alignment with bag-level (weak) positives: SECLA's face-name alignment
    (Qu et al. 2023), where the faces of an image and the names of its caption form a bag.

    Query :math:`i` (a face) is only known to match *some* key of its bag :math:`b(i)` (a name
    of its caption); keys of other bags are negatives.

    - ``mode="max"`` (SECLA): the positive is the best-matching key of the bag,
      :math:`j^* = \arg\max_{j \in b(i)} s_{ij}` (the choice is not differentiated), and the
      bag's other keys are left out of the denominator::

          L_i = -log( e^{l_ij*} / (e^{l_ij*} + sum_{j not in b(i)} e^{l_ij}) )

    - ``mode="sum"`` (MIL-NCE): every key of the bag is a positive,
      :math:`L_i = -\log \sum_{j\in b(i)} e^{l_{ij}} / \sum_j e^{l_{ij}}` (up to the constant
      :math:`\log|b(i)|`).

    ``symmetric`` adds the same loss with keys as anchors (names to faces), SECLA's
    symmetry-enhanced loss. Every term is :func:`info_nce` (tiles).

    Note: SECLA's released code (``batch_softmax`` in ``models/unsup_frag.py``) works at the
    level of image-caption pairs instead: the score of caption ``b`` against image ``b'`` is the
    mean over the caption's names of the max over the image's faces of the (unscaled) dot
    product, a cross-entropy over the batch's pairs targets ``b' = b``, and the two directions are
    summed. ``mode="max"`` is the per-face analogue, not that objective.

    Args:
        query_bags: ``(B,)`` bag id of every query; key_bags: ``(N,)`` bag id of every key.

    Example:
        >>> import torch
        >>> faces, names = torch.randn(5, 8), torch.randn(4, 8)
        >>> fb, nb = torch.tensor([0, 0, 1, 2, 2]), torch.tensor([0, 1, 2, 2])
        >>> bag_info_nce(faces, names, query_bags=fb, key_bags=nb).shape
        torch.Size([])
    """
    query = check_embeddings("query", query)
    key = check_embeddings("key", key)
    check_same_dim(("query", "key"), (query, key))
    check_choice("mode", mode, ("max", "sum"))
    check_choice("similarity", similarity, SIMILARITIES)
    for name, bags, n in (("query_bags", query_bags, len(query)), ("key_bags", key_bags, len(key))):
        bags = check_tensor(name, bags)
        if bags.is_floating_point() or tuple(bags.shape) != (n,) or bags.device != query.device:
            raise ValueError(f"{name} must be an integer tensor of shape ({n},) on {query.device}")
    same = query_bags[:, None] == key_bags[None, :]
    directions = [(query, key, same)] + ([(key, query, same.T)] if symmetric else [])
    losses = []
    for a, c, bag in directions:
        if mode == "sum":
            losses.append(
                info_nce(
                    a,
                    c,
                    positives=bag,
                    variant="in",
                    temperature=temperature,
                    similarity=similarity,
                    engine=engine,
                )
            )
            continue
        with torch.no_grad():
            s = pairwise_similarity(prepare(a, similarity), prepare(c, similarity), similarity)
            best = s.masked_fill(~bag, float("-inf")).argmax(dim=1)
            chosen = torch.zeros_like(bag)
            chosen[torch.arange(a.shape[0], device=a.device), best] = True
            chosen &= bag  # rows whose bag is empty have no positive
        losses.append(
            info_nce(
                a,
                c,
                positives=chosen,
                exclude=bag & ~chosen,
                temperature=temperature,
                similarity=similarity,
                engine=engine,
            )
        )
    return torch.stack(losses).mean()


def bag_pair_info_nce(
    query: Tensor,
    key: Tensor,
    *,
    query_bags: Tensor,
    key_bags: Tensor,
    temperature: float | Tensor = 1.0,
    similarity: str = "dot",
    symmetric: bool = True,
) -> Tensor:
    r"""Pair-level bag contrast, as SECLA's released code scores image-caption pairs (Qu et al.
    2023, ``batch_softmax``): the score of bag :math:`b` of queries (the names of caption
    :math:`b`) against bag :math:`b'` of keys (the faces of image :math:`b'`) is the mean over
    the bag's queries of their best match in the other bag,

    .. math::
        S_{bb'} = \frac{1}{|Q_b|} \sum_{n \in Q_b} \max_{f \in K_{b'}} s(n, f),

    and a cross-entropy over the batch's bags targets :math:`b' = b`; with ``symmetric`` the
    column direction is **added** (SECLA sums the two directions)::

        L = 1/B sum_b -log softmax_b'(S_b. / tau)_b  +  1/B sum_b' -log softmax_b(S_.b' / tau)_b'

    SECLA uses the raw dot product and no temperature (the defaults).  Bag ids run over
    ``0 .. B-1`` and every bag has at least one query and one key.  The max routes the gradient
    to the best-matching key of each query (ties share it).

    Example:
        >>> import torch
        >>> names, faces = torch.randn(5, 8), torch.randn(6, 8)
        >>> nb, fb = torch.tensor([0, 0, 1, 2, 2]), torch.tensor([0, 1, 1, 2, 2, 2])
        >>> bag_pair_info_nce(names, faces, query_bags=nb, key_bags=fb).shape
        torch.Size([])
    """
    query = check_embeddings("query", query)
    key = check_embeddings("key", key)
    check_same_dim(("query", "key"), (query, key))
    check_choice("similarity", similarity, SIMILARITIES)
    scale = _scale_from_temperature(temperature)
    bags = []
    for name, ids, n in (("query_bags", query_bags, len(query)), ("key_bags", key_bags, len(key))):
        ids = check_tensor(name, ids)
        if ids.is_floating_point() or tuple(ids.shape) != (n,):
            raise ValueError(f"{name} must be an integer tensor of shape ({n},)")
        bags.append(ids.to(device=query.device, dtype=torch.int64))
    num_bags = int(bags[0].max()) + 1
    for name, ids in zip(("query_bags", "key_bags"), bags, strict=True):
        counts = torch.bincount(ids.clamp_min(0), minlength=num_bags)
        if bool((ids < 0).any()) or counts.numel() != num_bags or bool((counts == 0).any()):
            raise ValueError(
                f"{name} must hold every bag id 0..{num_bags - 1} (the bags of query_bags) at "
                "least once, and nothing else"
            )
    q_bags, k_bags = bags
    query, key = to_common_dtype(query, key)
    s = pairwise_similarity(prepare(query, similarity), prepare(key, similarity), similarity)
    # best key of every bag for every query: (Q, B)
    best = s.new_full((s.shape[0], num_bags), float("-inf")).scatter_reduce(
        1, k_bags.expand(s.shape[0], -1), s, reduce="amax", include_self=False
    )
    # mean over each bag's queries: (B, B)
    sums = torch.zeros(num_bags, num_bags, dtype=s.dtype, device=s.device).index_add(
        0, q_bags, best
    )
    scores = sums / torch.bincount(q_bags, minlength=num_bags).to(s.dtype)[:, None]
    logits = scores * scale
    target = torch.arange(num_bags, device=s.device)
    loss = torch.nn.functional.cross_entropy(logits, target)
    if symmetric:
        loss = loss + torch.nn.functional.cross_entropy(logits.T, target)
    return loss


# ------------------------------------------------------------------------------------------
# Soft targets, self-distillation, feature distillation
# ------------------------------------------------------------------------------------------
def soft_cross_entropy(logits: Tensor, targets: Tensor, *, reduction: str = "mean") -> Tensor:
    r"""Cross-entropy with soft targets, :math:`\frac1B\sum_i -\sum_j t_{ij} \log
    \mathrm{softmax}(z_i)_j` (ALPRO's prompting entity modeling with pseudo-labels from
    normalised prompt similarities, Li et al. 2022; mixed labels in Mixup-style training).
    ``targets`` (non-negative rows) are not differentiated. ``reduction``: ``"mean"`` (over rows),
    ``"sum"`` or ``"none"`` (per-row losses).

    Example:
        >>> import torch
        >>> soft_cross_entropy(torch.zeros(2, 4), torch.full((2, 4), 0.25))
        tensor(1.3863)
    """
    logits = check_finite("logits", check_tensor("logits", logits))
    targets = check_finite("targets", check_tensor("targets", targets))
    if logits.dim() != 2 or not logits.is_floating_point():
        raise ValueError(f"logits must be a float (B, K) tensor, got {tuple(logits.shape)}")
    if targets.shape != logits.shape or not targets.is_floating_point():
        raise ValueError(f"targets must be float with shape {tuple(logits.shape)}")
    if bool((targets < 0).any()):
        raise ValueError("targets must be >= 0")
    check_choice("reduction", reduction, ("mean", "sum", "none"))
    logp = torch.log_softmax(logits.to(compute_dtype(logits.dtype)), dim=1)
    rows = -(targets.detach().to(logp.dtype) * logp).sum(1)
    if reduction == "none":
        return rows
    return rows.mean() if reduction == "mean" else rows.sum()


def self_distillation_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    *,
    student_temperature: float = 0.1,
    teacher_temperature: float = 0.04,
    center: Tensor | None = None,
) -> Tensor:
    r"""Teacher-softmax self-distillation (COSMOS's cross-modality self-distillation, Kim et al.
    2025, in the DINO form of Caron et al. 2021)::

        L = 1/B sum_i H( softmax((t_i - c)/tau_t), softmax(s_i/tau_s) )

    The teacher (typically a momentum copy, fed global views) gives sharpened, centred targets
    that are not differentiated; the student (fed local or cross-modal views) is trained.

    Args:
        student_logits, teacher_logits: ``(B, K)`` projection-head outputs.
        center: ``(K,)`` running centre of the teacher outputs (DINO), optional.

    Example:
        >>> import torch
        >>> self_distillation_loss(torch.randn(4, 10), torch.randn(4, 10)).shape
        torch.Size([])
    """
    check_positive_scalar("student_temperature", student_temperature)
    check_positive_scalar("teacher_temperature", teacher_temperature)
    student_logits = check_finite("student_logits", check_tensor("student_logits", student_logits))
    teacher_logits = check_finite("teacher_logits", check_tensor("teacher_logits", teacher_logits))
    if teacher_logits.shape != student_logits.shape:
        raise ValueError(
            f"teacher_logits must have the student's shape {tuple(student_logits.shape)}, "
            f"got {tuple(teacher_logits.shape)}"
        )
    with torch.no_grad():
        t = teacher_logits.to(compute_dtype(teacher_logits.dtype))
        if center is not None:
            center = check_finite("center", check_tensor("center", center))
            if tuple(center.shape) not in ((t.shape[-1],), (1, t.shape[-1])):
                raise ValueError(f"center must have shape ({t.shape[-1]},)")
            t = t - center
        targets = torch.softmax(t / teacher_temperature, dim=-1)
    student = student_logits.to(compute_dtype(student_logits.dtype))  # divide in fp32
    return soft_cross_entropy(student / student_temperature, targets)


def cosine_distillation_loss(student: Tensor, teacher: Tensor) -> Tensor:
    r"""Cosine-similarity feature distillation, :math:`\frac1B\sum_i 1 - \cos(s_i, t_i)`, the
    term DCLIP adds to the contrastive loss to pull the student's embeddings to the teacher's
    (teacher not differentiated).

    Example:
        >>> import torch
        >>> x = torch.randn(4, 8)
        >>> float(cosine_distillation_loss(x, 2 * x)) < 1e-6
        True
    """
    student = check_embeddings("student", student)
    teacher = check_embeddings("teacher", teacher)
    if student.shape != teacher.shape:
        raise ValueError(
            f"student and teacher must have one shape, got {tuple(student.shape)} "
            f"and {tuple(teacher.shape)}"
        )
    s, t = prepare(student, "cosine"), prepare(teacher.detach(), "cosine")
    return (1.0 - (s * t).sum(-1)).mean()


# ------------------------------------------------------------------------------------------
# Length-agnostic best-alignment consistency
# ------------------------------------------------------------------------------------------
def _check_lengths(name: str, lengths: Tensor | None, b: int, t: int, device) -> Tensor:
    if lengths is None:
        return torch.full((b,), t, dtype=torch.long, device=device)
    lengths = check_tensor(name, lengths)
    if lengths.is_floating_point() or tuple(lengths.shape) != (b,):
        raise ValueError(f"{name} must be an integer tensor of shape ({b},)")
    if bool((lengths < 1).any()) or bool((lengths > t).any()):
        raise ValueError(f"{name} must lie in [1, {t}]")
    return lengths.to(device)


def best_alignment_consistency(
    speech: Tensor,
    text: Tensor,
    *,
    speech_lengths: Tensor | None = None,
    text_lengths: Tensor | None = None,
    distance: str = "mse",
) -> Tensor:
    r"""A consistency loss that forgives the length mismatch of speech and text encodings by
    taking the best monotonic alignment (Peyser et al. 2023, "Improving joint speech-text
    representations without alignment").

    Every text position :math:`t` is matched to a speech frame :math:`a(t)`, with
    :math:`a` non-decreasing; the loss of a pair of sequences is the cost of the best such
    alignment, per text position::

        L(x, y) = min_{a monotone} 1/T_y sum_t d(y_t, x_{a(t)})

    computed exactly by dynamic programming, :math:`C_t(s) = d(y_t, x_s) + \min_{s' \le s}
    C_{t-1}(s')`; the gradient flows through the chosen alignment. Averaged over the batch.

    Args:
        speech: ``(B, T_x, D)`` speech-encoder outputs; text: ``(B, T_y, D)`` text-encoder
            outputs (any lengths).
        speech_lengths, text_lengths: ``(B,)`` valid lengths (padding after them).
        distance: ``"mse"`` (mean squared difference over features) or ``"cosine"``
            (``1 - cos``).

    Example:
        >>> import torch
        >>> best_alignment_consistency(torch.randn(2, 12, 8), torch.randn(2, 5, 8)).shape
        torch.Size([])
    """
    speech = check_embeddings("speech", speech, ndim=3)
    text = check_embeddings("text", text, ndim=3)
    check_same_dim(("speech", "text"), (speech, text))
    check_choice("distance", distance, ("mse", "cosine"))
    b, tx, _ = speech.shape
    if text.shape[0] != b:
        raise ValueError(f"text must have batch size {b}, got {text.shape[0]}")
    ty = text.shape[1]
    lx = _check_lengths("speech_lengths", speech_lengths, b, tx, speech.device)
    ly = _check_lengths("text_lengths", text_lengths, b, ty, speech.device)
    if distance == "mse":
        x, y = prepare(speech, "dot"), prepare(text, "dot")
        sq = (y * y).sum(-1)[:, :, None] + (x * x).sum(-1)[:, None, :]
        cost = (sq - 2.0 * y @ x.transpose(1, 2)).clamp_min(0.0) / speech.shape[-1]
    else:
        x, y = prepare(speech, "cosine"), prepare(text, "cosine")
        cost = 1.0 - y @ x.transpose(1, 2)
    # cost: (B, T_y, T_x); frames past the speech length cannot be chosen
    big = torch.finfo(cost.dtype).max / 4
    frames = torch.arange(tx, device=cost.device)
    cost = cost.masked_fill((frames[None, None, :] >= lx[:, None, None]), big)
    acc = cost[:, 0]
    finals = [acc]
    for t in range(1, ty):
        acc = cost[:, t] + torch.cummin(acc, dim=1).values
        finals.append(acc)
    stacked = torch.stack(finals, dim=1)  # (B, T_y, T_x)
    last = stacked[torch.arange(b, device=cost.device), ly - 1]
    best = last.min(dim=1).values
    return (best / ly.to(best.dtype)).mean()


# ------------------------------------------------------------------------------------------
# Modules
# ------------------------------------------------------------------------------------------
class CWCL(nn.Module):
    r"""Continuously weighted contrastive loss; see :func:`cwcl`.

    ``learnable_temperature=True`` learns :math:`\log(1/\tau)` (a
    :class:`~contrastkit.similarity.LogitScale`, clamped at ``max_scale`` as CLIP does), as when
    the trained tower is aligned to a frozen one in LiT / CWCL training.

    Example:
        >>> import torch
        >>> CWCL(temperature=0.07)(torch.randn(8, 16), torch.randn(8, 16)).shape
        torch.Size([])
        >>> loss_fn = CWCL(learnable_temperature=True)
        >>> loss_fn(torch.randn(8, 16), torch.randn(8, 16)).backward()
        >>> loss_fn.logit_scale.logit_scale.grad is not None
        True
    """

    def __init__(
        self,
        temperature: float = 0.07,
        symmetric: bool = True,
        *,
        learnable_temperature: bool = False,
        max_scale: float = 100.0,
    ) -> None:
        super().__init__()
        self.logit_scale = LogitScale(temperature, learnable_temperature, max_scale)
        self.symmetric = bool(symmetric)

    @property
    def temperature(self) -> float | Tensor:
        """The current temperature (a differentiable tensor when learnable)."""
        return 1.0 / self.logit_scale()

    def forward(self, query: Tensor, key: Tensor, frozen: Tensor | None = None) -> Tensor:
        return cwcl(
            query, key, frozen=frozen, temperature=self.temperature, symmetric=self.symmetric
        )


class MomentumDistillationITC(nn.Module):
    r"""ALBEF's ITC with momentum distillation and a learnable temperature (clamped to
    ``[0.001, 0.5]`` as in ALBEF); see :func:`momentum_distillation_itc`.

    Example:
        >>> import torch
        >>> loss_fn = MomentumDistillationITC(alpha=0.4)
        >>> i, t = torch.randn(4, 8), torch.randn(4, 8)
        >>> loss_fn(i, t, i.detach(), t.detach()).shape
        torch.Size([])
    """

    def __init__(self, alpha: float = 0.4, temperature: float = 0.07) -> None:
        super().__init__()
        check_positive_scalar("temperature", temperature)
        self.alpha = float(alpha)
        self.temp = nn.Parameter(torch.tensor(float(temperature)))

    def forward(
        self,
        image: Tensor,
        text: Tensor,
        image_m: Tensor,
        text_m: Tensor,
        image_queue: Tensor | None = None,
        text_queue: Tensor | None = None,
    ) -> Tensor:
        return momentum_distillation_itc(
            image,
            text,
            image_m,
            text_m,
            image_queue=image_queue,
            text_queue=text_queue,
            alpha=self.alpha,
            temperature=self.temp.clamp(0.001, 0.5),
        )


class OneToKInfoNCE(nn.Module):
    r"""1-to-K contrastive loss; see :func:`one_to_k_info_nce`.

    Example:
        >>> import torch
        >>> OneToKInfoNCE()(torch.randn(4, 8), torch.randn(4, 3, 8)).shape
        torch.Size([])
    """

    def __init__(self, temperature: float = 0.07, symmetric: bool = True) -> None:
        super().__init__()
        check_positive_scalar("temperature", temperature)
        self.temperature, self.symmetric = float(temperature), bool(symmetric)

    def forward(self, query: Tensor, keys: Tensor) -> Tensor:
        return one_to_k_info_nce(
            query, keys, temperature=self.temperature, symmetric=self.symmetric
        )


class GraphInfoNCE(nn.Module):
    r"""Graph / relation positives; see :func:`graph_info_nce`.

    Example:
        >>> import torch
        >>> adj = torch.eye(6, dtype=torch.bool).roll(1, 0)
        >>> GraphInfoNCE(intra_weight=0.5)(torch.randn(6, 8), torch.randn(6, 8), adj).shape
        torch.Size([])
    """

    def __init__(
        self,
        temperature: float = 0.07,
        include_pairs: bool = True,
        intra_weight: float = 0.0,
        symmetric: bool = False,
    ) -> None:
        super().__init__()
        check_positive_scalar("temperature", temperature)
        self.temperature, self.include_pairs = float(temperature), bool(include_pairs)
        self.intra_weight, self.symmetric = float(intra_weight), bool(symmetric)

    def forward(self, query: Tensor, key: Tensor | None, adjacency: Tensor) -> Tensor:
        return graph_info_nce(
            query,
            key,
            adjacency=adjacency,
            include_pairs=self.include_pairs,
            intra_weight=self.intra_weight,
            temperature=self.temperature,
            symmetric=self.symmetric,
        )


class BagInfoNCE(nn.Module):
    r"""Bag-level positives (SECLA); see :func:`bag_info_nce`.

    Example:
        >>> import torch
        >>> fb, nb = torch.tensor([0, 0, 1]), torch.tensor([0, 1])
        >>> BagInfoNCE()(torch.randn(3, 8), torch.randn(2, 8), fb, nb).shape
        torch.Size([])
    """

    def __init__(
        self, temperature: float = 0.07, mode: str = "max", symmetric: bool = True
    ) -> None:
        super().__init__()
        check_positive_scalar("temperature", temperature)
        self.temperature, self.symmetric = float(temperature), bool(symmetric)
        self.mode = check_choice("mode", mode, ("max", "sum"))

    def forward(self, query: Tensor, key: Tensor, query_bags: Tensor, key_bags: Tensor) -> Tensor:
        return bag_info_nce(
            query,
            key,
            query_bags=query_bags,
            key_bags=key_bags,
            mode=self.mode,
            temperature=self.temperature,
            symmetric=self.symmetric,
        )


class SoftCrossEntropy(nn.Module):
    r"""Cross-entropy with soft targets; see :func:`soft_cross_entropy`.

    Example:
        >>> import torch
        >>> SoftCrossEntropy()(torch.zeros(2, 4), torch.full((2, 4), 0.25))
        tensor(1.3863)
    """

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        return soft_cross_entropy(logits, targets)


class SelfDistillationLoss(nn.Module):
    r"""Teacher-softmax self-distillation with a running centre (COSMOS / DINO); see
    :func:`self_distillation_loss`. The centre is a buffer updated in training mode as
    ``c <- m c + (1 - m) mean(teacher)``.

    Example:
        >>> import torch
        >>> loss_fn = SelfDistillationLoss(num_outputs=10)
        >>> loss_fn(torch.randn(4, 10), torch.randn(4, 10)).shape
        torch.Size([])
    """

    def __init__(
        self,
        num_outputs: int,
        student_temperature: float = 0.1,
        teacher_temperature: float = 0.04,
        center_momentum: float = 0.9,
    ) -> None:
        super().__init__()
        check_positive_scalar("student_temperature", student_temperature)
        check_positive_scalar("teacher_temperature", teacher_temperature)
        if not 0 <= center_momentum <= 1:
            raise ValueError(f"center_momentum must lie in [0, 1], got {center_momentum}")
        self.student_temperature = float(student_temperature)
        self.teacher_temperature = float(teacher_temperature)
        self.center_momentum = float(center_momentum)
        self.register_buffer("center", torch.zeros(num_outputs))

    def forward(self, student_logits: Tensor, teacher_logits: Tensor) -> Tensor:
        loss = self_distillation_loss(
            student_logits,
            teacher_logits,
            student_temperature=self.student_temperature,
            teacher_temperature=self.teacher_temperature,
            center=self.center,
        )
        if self.training:
            with torch.no_grad():
                mean = teacher_logits.detach().to(self.center.dtype).mean(0)
                self.center.mul_(self.center_momentum).add_((1 - self.center_momentum) * mean)
        return loss


class CosineDistillationLoss(nn.Module):
    r"""Cosine feature distillation (DCLIP); see :func:`cosine_distillation_loss`.

    Example:
        >>> import torch
        >>> CosineDistillationLoss()(torch.randn(4, 8), torch.randn(4, 8)).shape
        torch.Size([])
    """

    def forward(self, student: Tensor, teacher: Tensor) -> Tensor:
        return cosine_distillation_loss(student, teacher)


class BestAlignmentConsistency(nn.Module):
    r"""Length-agnostic best-alignment consistency loss; see
    :func:`best_alignment_consistency`.

    Example:
        >>> import torch
        >>> BestAlignmentConsistency()(torch.randn(2, 9, 4), torch.randn(2, 3, 4)).shape
        torch.Size([])
    """

    def __init__(self, distance: str = "mse") -> None:
        super().__init__()
        self.distance = check_choice("distance", distance, ("mse", "cosine"))

    def forward(
        self,
        speech: Tensor,
        text: Tensor,
        speech_lengths: Tensor | None = None,
        text_lengths: Tensor | None = None,
    ) -> Tensor:
        return best_alignment_consistency(
            speech,
            text,
            speech_lengths=speech_lengths,
            text_lengths=text_lengths,
            distance=self.distance,
        )
