"""Token-level contrastive objectives for language models, and contrastive search decoding.

- :func:`simctg_contrastive_loss` / :class:`SimCTGLoss`: SimCTG's token-representation
  contrastive objective (Su et al. 2022) added to the MLE loss;
- :func:`contrastive_search` / :func:`contrastive_search_scores`: contrastive search decoding over
  a causal LM's logits and hidden states (Su et al. 2022);
- :func:`contrastive_token_loss` / :class:`ContrastiveTokenLoss`: the contrastive token objective
  whose negatives are the preceding tokens (Jiang, de Rijke et al. 2022);
- :func:`skew_kl_divergence`, :func:`skew_reverse_kl_divergence`, :func:`distillm2_loss`:
  DistiLLM-2's contrastive distillation (Ko et al. 2025).

Shapes: logits ``(B, T, V)``, hidden states ``(B, T, D)``, labels and masks ``(B, T)``.  Every
reduction is a per-token log-sum-exp over the vocabulary or a sum over token pairs of one
sequence, computed densely (sequences are short next to contrastive batches).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from contrastkit._validation import check_finite, check_finite_scalar, check_tensor
from contrastkit.objectives.infonce import masked_fill_value
from contrastkit.similarity import compute_dtype

__all__ = [
    "simctg_contrastive_loss",
    "contrastive_search_scores",
    "contrastive_search",
    "contrastive_token_loss",
    "skew_kl_divergence",
    "skew_reverse_kl_divergence",
    "distillm2_loss",
    "SimCTGLoss",
    "ContrastiveTokenLoss",
    "DistiLLM2Loss",
]


# -- checks -----------------------------------------------------------------------------------
def _check_seq(name: str, x: object, ndim: int = 3) -> Tensor:
    x = check_tensor(name, x)
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if x.dim() != ndim or 0 in x.shape:
        shape = "(batch, length, dim)" if ndim == 3 else "(batch, k)"
        raise ValueError(f"{name} must be a non-empty {shape} tensor, got {tuple(x.shape)}")
    return check_finite(name, x)


def _check_mask(name: str, mask: object, shape: tuple[int, int], device: torch.device) -> Tensor:
    mask = check_tensor(name, mask)
    if mask.dtype != torch.bool or tuple(mask.shape) != shape:
        raise ValueError(
            f"{name} must be a bool tensor of shape {shape}, got dtype {mask.dtype} and shape "
            f"{tuple(mask.shape)}"
        )
    return mask.to(device)


def _check_labels(labels: object, shape: tuple[int, int], device: torch.device) -> Tensor:
    labels = check_tensor("labels", labels)
    if labels.is_floating_point() or tuple(labels.shape) != shape:
        raise ValueError(
            f"labels must be an integer tensor of shape {shape}, got dtype {labels.dtype} and "
            f"shape {tuple(labels.shape)}"
        )
    return labels.to(device)


# -- SimCTG -----------------------------------------------------------------------------------
def simctg_contrastive_loss(
    hidden: Tensor, *, margin: float = 0.5, attention_mask: Tensor | None = None
) -> Tensor:
    r"""SimCTG's token contrastive objective (Su, Lan, Wang, Yogatama, Kong & Collier 2022,
    "A Contrastive Framework for Neural Text Generation")::

        L_CL = 1 / (|x| (|x| - 1)) sum_i sum_{j != i} max(0, rho - s(h_i, h_i) + s(h_i, h_j))

    with :math:`s` the cosine similarity of the last-layer token representations of one
    sequence.  Over a batch, the sum runs over the valid (``attention_mask``) token pairs of each
    sequence and is divided by their total count, as in the authors' code.

    Args:
        hidden: ``(B, T, D)`` last-layer hidden states.
        margin: :math:`\rho` (0.5 in the paper).
        attention_mask: ``(B, T)`` bool, ``True`` on real tokens (default: all).

    Example:
        >>> import torch
        >>> simctg_contrastive_loss(torch.randn(2, 6, 8)).shape
        torch.Size([])
    """
    hidden = _check_seq("hidden", hidden)
    check_finite_scalar("margin", margin)
    b, t, _ = hidden.shape
    mask = (
        torch.ones(b, t, dtype=torch.bool, device=hidden.device)
        if attention_mask is None
        else _check_mask("attention_mask", attention_mask, (b, t), hidden.device)
    )
    h = F.normalize(hidden.to(compute_dtype(hidden.dtype)), dim=-1, eps=1e-12)
    s = h @ h.transpose(1, 2)  # (B, T, T)
    gold = torch.diagonal(s, dim1=1, dim2=2)
    eye = torch.eye(t, dtype=torch.bool, device=hidden.device)
    pair = mask[:, :, None] & mask[:, None, :] & ~eye
    if not bool(pair.any()):
        raise ValueError("SimCTG needs at least one sequence with two valid tokens")
    terms = torch.relu(margin - (gold[:, :, None] - s))
    return torch.where(pair, terms, torch.zeros_like(terms)).sum() / pair.sum()


class SimCTGLoss(nn.Module):
    r"""SimCTG's training objective: ``L = L_MLE + L_CL`` (see :func:`simctg_contrastive_loss`),
    with ``L_MLE`` the token cross-entropy of ``logits`` against ``labels`` (positions equal to
    ``ignore_index`` are skipped, and they are also left out of ``L_CL`` unless an
    ``attention_mask`` is given).

    Example:
        >>> import torch
        >>> logits, hidden = torch.randn(2, 5, 11), torch.randn(2, 5, 8)
        >>> labels = torch.randint(0, 11, (2, 5))
        >>> SimCTGLoss(margin=0.5)(logits, labels, hidden).shape
        torch.Size([])
    """

    def __init__(self, margin: float = 0.5, ignore_index: int = -100) -> None:
        super().__init__()
        check_finite_scalar("margin", margin)
        self.margin, self.ignore_index = float(margin), int(ignore_index)

    def forward(
        self,
        logits: Tensor,
        labels: Tensor,
        hidden: Tensor,
        attention_mask: Tensor | None = None,
    ) -> Tensor:
        logits = _check_seq("logits", logits)
        labels = _check_labels(labels, tuple(logits.shape[:2]), logits.device)
        mle = F.cross_entropy(
            logits.to(compute_dtype(logits.dtype)).flatten(0, 1),
            labels.flatten(),
            ignore_index=self.ignore_index,
        )
        mask = attention_mask if attention_mask is not None else labels != self.ignore_index
        return mle + simctg_contrastive_loss(hidden, margin=self.margin, attention_mask=mask)


# -- contrastive search -----------------------------------------------------------------------
def contrastive_search_scores(
    top_probs: Tensor, candidate_hidden: Tensor, context_hidden: Tensor, *, alpha: float = 0.6
) -> Tensor:
    r"""Scores of contrastive search (Su et al. 2022) for ``k`` candidate tokens::

        score(v) = (1 - alpha) p(v | x_<t) - alpha max_{1 <= j <= t-1} s(h_v, h_{x_j})

    Args:
        top_probs: ``(B, k)`` model probabilities of the candidates (the top-k set).
        candidate_hidden: ``(B, k, D)`` last hidden state after appending each candidate.
        context_hidden: ``(B, T, D)`` hidden states of the context tokens.
        alpha: degeneration penalty weight in ``[0, 1]``.

    Returns:
        ``(B, k)`` scores; the next token is the candidate with the largest score.

    Example:
        >>> import torch
        >>> probs, cand, ctx = torch.rand(2, 3), torch.randn(2, 3, 4), torch.randn(2, 5, 4)
        >>> contrastive_search_scores(probs, cand, ctx, alpha=0.6).shape
        torch.Size([2, 3])
    """
    top_probs = _check_seq("top_probs", top_probs, ndim=2)
    candidate_hidden = _check_seq("candidate_hidden", candidate_hidden)
    context_hidden = _check_seq("context_hidden", context_hidden)
    check_finite_scalar("alpha", alpha)
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    b, k = top_probs.shape
    if candidate_hidden.shape[:2] != (b, k) or context_hidden.shape[0] != b:
        raise ValueError(
            f"shapes disagree: top_probs {tuple(top_probs.shape)}, candidate_hidden "
            f"{tuple(candidate_hidden.shape)}, context_hidden {tuple(context_hidden.shape)}"
        )
    dtype = compute_dtype(candidate_hidden.dtype)
    cand = F.normalize(candidate_hidden.to(dtype), dim=-1, eps=1e-12)
    ctx = F.normalize(context_hidden.to(dtype), dim=-1, eps=1e-12)
    penalty = (cand @ ctx.transpose(1, 2)).amax(dim=-1)  # (B, k)
    return (1.0 - alpha) * top_probs.to(dtype) - alpha * penalty


@torch.no_grad()
def contrastive_search(
    model: Callable[[Tensor], tuple[Tensor, Tensor]],
    input_ids: Tensor,
    *,
    max_new_tokens: int,
    top_k: int = 4,
    alpha: float = 0.6,
) -> Tensor:
    r"""Contrastive search decoding (Su et al. 2022) with a causal language model.

    At each step the ``top_k`` most probable next tokens ``V^(k)`` are scored with
    :func:`contrastive_search_scores` and the best is appended::

        x_t = argmax_{v in V^(k)} (1 - alpha) p(v | x_<t) - alpha max_j s(h_v, h_{x_j})

    ``alpha = 0`` is greedy decoding.  Each step runs the model once on the ``B * k`` extended
    sequences (no key/value cache: bring your own loop with :func:`contrastive_search_scores`
    for that).

    Args:
        model: a causal LM as a function ``ids (B, T) -> (logits (B, T, V), hidden (B, T, D))``
            (e.g. ``lambda ids: (out.logits, out.hidden_states[-1])`` around a Hugging Face
            model called with ``output_hidden_states=True``).
        input_ids: ``(B, T)`` prompt token ids, ``T >= 1``.
        max_new_tokens: number of tokens to generate.
        top_k: candidate set size :math:`k \ge 1`.
        alpha: :math:`\alpha` in ``[0, 1]``.

    Returns:
        ``(B, T + max_new_tokens)`` token ids.

    Example:
        >>> import torch
        >>> emb, out = torch.nn.Embedding(10, 4), torch.nn.Linear(4, 10)
        >>> def lm(ids):
        ...     h = emb(ids).cumsum(1)  # a toy causal model
        ...     return out(h), h
        >>> contrastive_search(lm, torch.tensor([[1, 2]]), max_new_tokens=3).shape
        torch.Size([1, 5])
    """
    ids = check_tensor("input_ids", input_ids)
    if ids.dim() != 2 or ids.is_floating_point() or 0 in ids.shape:
        raise ValueError(
            f"input_ids must be a non-empty (B, T) integer tensor, got {tuple(ids.shape)}"
        )
    if not isinstance(max_new_tokens, int) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be an int >= 0, got {max_new_tokens!r}")
    if not isinstance(top_k, int) or top_k < 1:
        raise ValueError(f"top_k must be an int >= 1, got {top_k!r}")
    b = ids.shape[0]
    for _ in range(max_new_tokens):
        logits, _hidden = model(ids)
        probs = torch.softmax(logits[:, -1].to(compute_dtype(logits.dtype)), dim=-1)
        k = min(top_k, probs.shape[-1])
        top_p, top_ids = probs.topk(k, dim=-1)  # (B, k)
        extended = torch.cat([ids.repeat_interleave(k, dim=0), top_ids.reshape(-1, 1)], dim=1)
        _, hidden = model(extended)
        hidden = hidden.reshape(b, k, *hidden.shape[1:])
        scores = contrastive_search_scores(top_p, hidden[:, :, -1], hidden[:, 0, :-1], alpha=alpha)
        choice = scores.argmax(dim=-1)
        ids = torch.cat([ids, top_ids.gather(1, choice[:, None])], dim=1)
    return ids


# -- contrastive token loss -------------------------------------------------------------------
def contrastive_token_loss(
    logits: Tensor, labels: Tensor, *, window: int | None = None, ignore_index: int = -100
) -> Tensor:
    r"""Contrastive token loss (Jiang, Zhang, van Dijk & de Rijke 2022, "A Simple Contrastive
    Learning Objective for Alleviating Neural Text Degeneration")::

        L_CT = 1/T sum_t log( 1 + sum_{y- in S_t} exp(h_t^T W_{y-} - h_t^T W_{y_t}) )

    i.e. a softmax over the label token and its negative candidates only.  The negatives
    ``S_t`` are the distinct labels of the preceding ``window`` positions (all preceding
    positions when ``window=None``), minus the label ``y_t`` itself and ignored positions.  The
    mean runs over positions whose label is not ``ignore_index``.

    Args:
        logits: ``(B, T, V)`` next-token logits ``h_t^T W``.
        labels: ``(B, T)`` target ids (``ignore_index`` on padding / prompt).
        window: how many preceding positions give negatives (``M`` in the paper).

    Example:
        >>> import torch
        >>> logits, labels = torch.randn(2, 6, 10), torch.randint(0, 10, (2, 6))
        >>> contrastive_token_loss(logits, labels, window=4).shape
        torch.Size([])
    """
    logits = _check_seq("logits", logits)
    b, t, v = logits.shape
    labels = _check_labels(labels, (b, t), logits.device)
    if window is not None and (not isinstance(window, int) or window < 1):
        raise ValueError(f"window must be None or an int >= 1, got {window!r}")
    valid = labels != ignore_index
    if not bool(valid.any()):
        raise ValueError("every label is ignore_index: nothing to train on")
    if bool((labels[valid] < 0).any()) or bool((labels[valid] >= v).any()):
        raise ValueError(f"labels must lie in [0, {v}) or equal ignore_index")
    lab = labels.masked_fill(~valid, 0)
    lg = logits.to(compute_dtype(logits.dtype))
    pos = torch.arange(t, device=logits.device)
    # s counts as a negative for t when s < t (within the window), its label is valid and
    # differs from y_t, and no later s' < t repeats it (one entry per distinct token)
    same = lab[:, :, None] == lab[:, None, :]  # (B, s, s')
    later = pos[None, :, None] < pos[None, None, :]
    same_later = same & later & valid[:, None, :]
    next_occ = torch.where(same_later, pos[None, None, :], t).amin(dim=2)  # (B, s)
    before = pos[None, :] < pos[:, None]  # (t, s): s < t
    if window is not None:
        before = before & (pos[None, :] >= pos[:, None] - window)
    neg = (
        before[None]
        & valid[:, None, :]
        & valid[:, :, None]
        & (next_occ[:, None, :] >= pos[None, :, None])
        & (lab[:, None, :] != lab[:, :, None])
    )  # (B, t, s)
    label_logit = lg.gather(2, lab[:, :, None]).squeeze(2)  # (B, t)
    neg_logits = lg.gather(2, lab[:, None, :].expand(b, t, t))  # (B, t, s)
    diffs = (neg_logits - label_logit[:, :, None]).masked_fill(~neg, masked_fill_value(lg.dtype))
    zeros = torch.zeros_like(label_logit[:, :, None])
    per_token = torch.logsumexp(torch.cat([zeros, diffs], dim=2), dim=2)
    return per_token[valid].mean()


class ContrastiveTokenLoss(nn.Module):
    r"""``L = ce_weight * L_CE + ct_weight * L_CT`` (Jiang et al. 2022); see
    :func:`contrastive_token_loss`.

    Example:
        >>> import torch
        >>> logits, labels = torch.randn(2, 6, 10), torch.randint(0, 10, (2, 6))
        >>> ContrastiveTokenLoss(window=8)(logits, labels).shape
        torch.Size([])
    """

    def __init__(
        self,
        window: int | None = None,
        ce_weight: float = 1.0,
        ct_weight: float = 1.0,
        ignore_index: int = -100,
    ) -> None:
        super().__init__()
        self.window, self.ignore_index = window, int(ignore_index)
        self.ce_weight, self.ct_weight = float(ce_weight), float(ct_weight)

    def forward(self, logits: Tensor, labels: Tensor) -> Tensor:
        ct = contrastive_token_loss(
            logits, labels, window=self.window, ignore_index=self.ignore_index
        )
        ce = F.cross_entropy(
            logits.to(compute_dtype(logits.dtype)).flatten(0, 1),
            labels.flatten(),
            ignore_index=self.ignore_index,
        )
        return self.ce_weight * ce + self.ct_weight * ct


# -- DistiLLM-2 -------------------------------------------------------------------------------
def _token_mean(per_token: Tensor, mask: Tensor | None, mask_name: str = "mask") -> Tensor:
    if mask is None:
        return per_token.mean()
    mask = _check_mask(mask_name, mask, tuple(per_token.shape), per_token.device)
    if not bool(mask.any()):
        raise ValueError(f"{mask_name} selects no token")
    return per_token[mask].mean()


def _skew(
    p_logits: Tensor,
    q_logits: Tensor,
    alpha: float,
    mask: Tensor | None,
    names: tuple[str, str] = ("teacher_logits", "student_logits"),
    mask_name: str = "mask",
) -> Tensor:
    """Token-mean of ``KL(p || alpha p + (1 - alpha) q)``; ``names`` and ``mask_name``: the
    arguments behind ``p_logits``, ``q_logits`` and ``mask``, for the error messages."""
    p_logits = _check_seq(names[0], p_logits)
    q_logits = _check_seq(names[1], q_logits)
    if p_logits.shape != q_logits.shape:
        raise ValueError(
            f"{names[0]} and {names[1]} must have the same shape, got {tuple(p_logits.shape)} "
            f"and {tuple(q_logits.shape)}"
        )
    check_finite_scalar("alpha", alpha)
    if not 0.0 <= alpha < 1.0:
        raise ValueError(f"alpha (the skew) must lie in [0, 1), got {alpha}")
    dtype = compute_dtype(torch.promote_types(p_logits.dtype, q_logits.dtype))
    log_p = torch.log_softmax(p_logits.to(dtype), dim=-1)
    log_q = torch.log_softmax(q_logits.to(dtype), dim=-1)
    if alpha == 0.0:
        log_m = log_q
    else:
        log_m = torch.logaddexp(log_p + math.log(alpha), log_q + math.log1p(-alpha))
    per_token = (log_p.exp() * (log_p - log_m)).sum(-1)
    return _token_mean(per_token, mask, mask_name)


def skew_kl_divergence(
    teacher_logits: Tensor,
    student_logits: Tensor,
    *,
    alpha: float = 0.1,
    mask: Tensor | None = None,
) -> Tensor:
    r"""Skew KL divergence (DistiLLM, Ko et al. 2024), averaged over (masked) tokens::

        SKL_alpha(p, q_theta) = KL( p || alpha p + (1 - alpha) q_theta )

    with ``p`` the teacher's and ``q_theta`` the student's next-token distribution
    (``alpha = 0``: forward KL).  Pass teacher logits computed without gradient.

    Example:
        >>> import torch
        >>> t, s = torch.randn(2, 4, 10), torch.randn(2, 4, 10)
        >>> float(skew_kl_divergence(t, t)) < 1e-6
        True
    """
    return _skew(teacher_logits, student_logits, alpha, mask)


def skew_reverse_kl_divergence(
    teacher_logits: Tensor,
    student_logits: Tensor,
    *,
    alpha: float = 0.1,
    mask: Tensor | None = None,
) -> Tensor:
    r"""Skew reverse KL divergence (DistiLLM, Ko et al. 2024), averaged over (masked) tokens::

        SRKL_alpha(p, q_theta) = KL( q_theta || (1 - alpha) p + alpha q_theta )

    (``alpha = 0``: reverse KL).

    Example:
        >>> import torch
        >>> skew_reverse_kl_divergence(torch.randn(2, 4, 10), torch.randn(2, 4, 10)).shape
        torch.Size([])
    """
    return _skew(student_logits, teacher_logits, alpha, mask, ("student_logits", "teacher_logits"))


def distillm2_loss(
    teacher_logits_on_teacher: Tensor,
    student_logits_on_teacher: Tensor,
    teacher_logits_on_student: Tensor,
    student_logits_on_student: Tensor,
    *,
    teacher_mask: Tensor | None = None,
    student_mask: Tensor | None = None,
    alpha: float = 0.1,
    beta: float = 0.1,
) -> Tensor:
    r"""DistiLLM-2's contrastive distillation loss (Ko, Chen, Kim, Ding, Liang, Zharkov & Yun 2025,
    "DistiLLM-2: A Contrastive Approach Boosts the Distillation of LLMs")::

        L = SKL_alpha(p, q_theta)  on teacher-generated responses y_t
          + SRKL_beta(p, q_theta)  on student-generated responses y_s

    The skew KL on teacher responses raises the student's likelihood where the teacher's is high;
    the skew reverse KL on the student's own responses lowers the student's likelihood where the
    teacher's is low.  Each term is averaged over the response tokens of its masks.

    Args:
        teacher_logits_on_teacher, student_logits_on_teacher: ``(B, T, V)`` logits of both models
            over the teacher-generated responses.
        teacher_logits_on_student, student_logits_on_student: ``(B', T', V)`` over the
            student-generated responses.
        teacher_mask, student_mask: bool masks of the response tokens.
        alpha, beta: the skews of the two terms.

    Example:
        >>> import torch
        >>> a, b, c, d = (torch.randn(2, 4, 10) for _ in range(4))
        >>> distillm2_loss(a, b, c, d).shape
        torch.Size([])
    """
    for name, skew in (("alpha", alpha), ("beta", beta)):
        check_finite_scalar(name, skew)
        if not 0.0 <= skew < 1.0:
            raise ValueError(f"{name} (the skew) must lie in [0, 1), got {skew}")
    on_teacher = _skew(
        teacher_logits_on_teacher,
        student_logits_on_teacher,
        alpha,
        teacher_mask,
        ("teacher_logits_on_teacher", "student_logits_on_teacher"),
        "teacher_mask",
    )
    on_student = _skew(  # skew reverse KL: the student's distribution first
        student_logits_on_student,
        teacher_logits_on_student,
        beta,
        student_mask,
        ("student_logits_on_student", "teacher_logits_on_student"),
        "student_mask",
    )
    return on_teacher + on_student


class DistiLLM2Loss(nn.Module):
    r"""DistiLLM-2's loss; see :func:`distillm2_loss`.

    Example:
        >>> import torch
        >>> a, b, c, d = (torch.randn(2, 4, 10) for _ in range(4))
        >>> DistiLLM2Loss(alpha=0.1, beta=0.1)(a, b, c, d).shape
        torch.Size([])
    """

    def __init__(self, alpha: float = 0.1, beta: float = 0.1) -> None:
        super().__init__()
        self.alpha, self.beta = float(alpha), float(beta)

    def forward(
        self,
        teacher_logits_on_teacher: Tensor,
        student_logits_on_teacher: Tensor,
        teacher_logits_on_student: Tensor,
        student_logits_on_student: Tensor,
        teacher_mask: Tensor | None = None,
        student_mask: Tensor | None = None,
    ) -> Tensor:
        return distillm2_loss(
            teacher_logits_on_teacher,
            student_logits_on_teacher,
            teacher_logits_on_student,
            student_logits_on_student,
            teacher_mask=teacher_mask,
            student_mask=student_mask,
            alpha=self.alpha,
            beta=self.beta,
        )
