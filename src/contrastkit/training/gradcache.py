"""Gradient caching (GradCache; Gao, Zhang, Han & Callan 2021): a contrastive batch far larger than
memory, with exactly the gradients of the full batch.

The loss of a contrastive batch couples every embedding to every other, so the batch cannot be
split into independent micro-batches (plain gradient accumulation shrinks the negative pool).  But
the loss only needs the *embeddings* together, not the encoder's activations.  One step:

1. encode the batch in chunks **without** a graph (memory of one chunk's activations), keeping the
   embeddings and the RNG state before each chunk;
2. compute the loss on the full embedding matrix and its gradient ``G = dL/dE`` (memory
   ``O(B x D)`` plus the loss's own);
3. re-encode each chunk **with** a graph, replaying its RNG state so that dropout masks are the
   same as in step 1, and back-propagate ``G[chunk]`` into the encoder's parameters.

The parameter gradients equal those of one backward through the whole batch (encoded chunk by
chunk in the same order) up to floating-point summation order, for any loss; the cost is one
extra forward pass.  Works with several encoders (dual tower), autocast, DistributedDataParallel
encoders (only each encoder's last chunk synchronises gradients) and ``distributed=True`` losses.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["grad_cache_step", "GradCache"]

Batch = Tensor | Mapping[str, Tensor]


def _split(x: Batch, chunk_size: int, name: str) -> list[Batch]:
    if isinstance(x, Tensor):
        if x.dim() == 0:
            raise ValueError(f"{name} must have a batch dimension, got a 0-d tensor")
        return list(x.split(chunk_size))
    if isinstance(x, Mapping):
        if not x:
            raise ValueError(f"{name} is an empty mapping")
        for k, v in x.items():
            if not isinstance(v, Tensor) or v.dim() == 0:
                raise TypeError(f"{name}[{k!r}] must be a Tensor with a batch dimension")
        sizes = {k: v.shape[0] for k, v in x.items()}
        if len(set(sizes.values())) != 1:
            raise ValueError(f"{name}: every tensor must have the same batch size, got {sizes}")
        parts = {k: v.split(chunk_size) for k, v in x.items()}
        n = len(next(iter(parts.values())))
        return [{k: p[i] for k, p in parts.items()} for i in range(n)]
    raise TypeError(f"{name} must be a Tensor or a mapping of Tensors, got {type(x).__name__}")


def _tensors(x: Batch) -> list[Tensor]:
    return [x] if isinstance(x, Tensor) else list(x.values())


def _call(encoder: nn.Module, x: Batch) -> Tensor:
    out = encoder(x) if isinstance(x, Tensor) else encoder(**x)
    if not isinstance(out, Tensor):
        raise TypeError(
            f"the encoder must return a Tensor of embeddings, got {type(out).__name__}; wrap it "
            "so that it returns the pooled embedding"
        )
    return out


def _cuda_index(device: torch.device) -> int:
    return torch.cuda.current_device() if device.index is None else device.index


class _RngState:
    """The CPU and CUDA generator states at one point, to replay a chunk's randomness: those of
    every GPU the chunk or the encoder's parameters are on (a GPU model fed CPU tensors draws its
    dropout masks on its own GPU) and of the current GPU."""

    def __init__(self, chunk: Batch, encoder_devices: set[int]) -> None:
        self.cpu = torch.get_rng_state()
        devices = encoder_devices | {_cuda_index(t.device) for t in _tensors(chunk) if t.is_cuda}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            devices.add(torch.cuda.current_device())
        self.devices = sorted(devices)
        self.cuda = [torch.cuda.get_rng_state(d) for d in self.devices]

    @contextlib.contextmanager
    def replay(self) -> Iterator[None]:
        with torch.random.fork_rng(devices=self.devices):
            torch.set_rng_state(self.cpu)
            for d, state in zip(self.devices, self.cuda, strict=True):
                torch.cuda.set_rng_state(state, d)
            yield


def _autocast(chunk: Batch, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    if dtype is None:
        return contextlib.nullcontext()
    device_type = _tensors(chunk)[0].device.type
    return torch.autocast(device_type=device_type, dtype=dtype)


def grad_cache_step(
    encoders: nn.Module | Sequence[nn.Module],
    inputs: Sequence[Batch],
    loss_fn: Callable[..., Tensor],
    chunk_size: int,
    *,
    loss_kwargs: Mapping[str, Any] | None = None,
    autocast_dtype: torch.dtype | None = None,
    restore_buffers: bool = True,
) -> Tensor:
    r"""One GradCache step: accumulate into ``.grad`` the parameter gradients of
    ``loss_fn(*embeddings, **loss_kwargs)`` over the full batch, encoding ``chunk_size`` rows at a
    time (Gao et al. 2021, "Scaling Deep Contrastive Learning Batch Size under Memory Limited
    Setup").

    With embeddings :math:`E = f_\theta(X)` split in chunks :math:`E_c = f_\theta(X_c)`::

        dL/dtheta = sum_c (dE_c/dtheta)^T  G_c,     G = dL/dE  (computed once, cached)

    Args:
        encoders: one module applied to every input (a shared tower, e.g. SimCLR), or one
            module per input (dual tower, e.g. CLIP).  DDP-wrapped modules synchronise only on
            their last chunk.
        inputs: one batch per encoder call: a tensor, or a mapping of tensors passed as keyword
            arguments (e.g. tokenizer output); split along dim 0.
        loss_fn: called as ``loss_fn(*embeddings, **loss_kwargs)``, embeddings in the order of
            ``inputs``; any contrastkit loss (``distributed=True`` included) or your own.  Its own
            parameters (a learnable temperature) get their gradients as usual.
        chunk_size: rows per encoder call.
        autocast_dtype: run the encoders under ``torch.autocast`` with this dtype (e.g.
            ``torch.bfloat16``); the loss runs outside autocast and accumulates in float32.
        restore_buffers: put the encoders' buffers (BatchNorm running statistics) back after the
            no-graph pass, so that they are updated once per chunk, by the replay.  Encoders
            without trainable parameters (a frozen tower, as in LiT) are not replayed: their
            no-graph pass is their only pass.

    Returns:
        The loss, detached.

    Note:
        Layers that mix rows of a batch (BatchNorm in training mode) see chunks, not the whole
        batch, in both passes; the gradients then equal those of a chunked full-batch backward.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from contrastkit.losses import InfoNCE
        >>> towers = [nn.Linear(16, 8), nn.Linear(12, 8)]
        >>> x, y = torch.randn(64, 16), torch.randn(64, 12)
        >>> loss = grad_cache_step(towers, [x, y], InfoNCE(symmetric=True), chunk_size=16)
        >>> towers[0].weight.grad.shape
        torch.Size([8, 16])
    """
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int):
        raise TypeError(f"chunk_size must be an int, got {type(chunk_size).__name__}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    if isinstance(inputs, (Tensor, Mapping)) or not isinstance(inputs, Sequence) or not inputs:
        raise TypeError("inputs must be a non-empty list of batches (one per encoder call)")
    if isinstance(encoders, nn.Module):
        encoders = [encoders] * len(inputs)
    encoders = list(encoders)
    if len(encoders) != len(inputs):
        raise ValueError(
            f"got {len(encoders)} encoders for {len(inputs)} inputs; pass one encoder per input "
            "or a single shared encoder"
        )
    for i, enc in enumerate(encoders):
        if not isinstance(enc, nn.Module):
            raise TypeError(f"encoders[{i}] must be an nn.Module, got {type(enc).__name__}")
    chunks = [_split(x, chunk_size, f"inputs[{i}]") for i, x in enumerate(inputs)]

    # 1. no-graph pass, remembering the RNG state before each chunk.
    unique = list({id(e): e for e in encoders}.values())
    saved = [[b.detach().clone() for b in e.buffers()] for e in unique] if restore_buffers else []
    states: list[list[_RngState]] = []
    embeddings: list[Tensor] = []
    with torch.no_grad():
        for enc, parts in zip(encoders, chunks, strict=True):
            states.append([])
            outs = []
            # the GPUs the encoder draws on (looked up once, not per chunk)
            tensors = (*enc.parameters(), *enc.buffers())
            enc_devices = {_cuda_index(t.device) for t in tensors if t.is_cuda}
            for part in parts:
                states[-1].append(_RngState(part, enc_devices))
                with _autocast(part, autocast_dtype):
                    outs.append(_call(enc, part))
            embeddings.append(torch.cat(outs))

    # 2. the loss on the whole batch of embeddings, and its gradient w.r.t. them.
    reps = [e.detach().requires_grad_() for e in embeddings]
    loss = loss_fn(*reps, **(loss_kwargs or {}))
    if not isinstance(loss, Tensor) or loss.dim() != 0:
        raise ValueError("loss_fn must return a scalar tensor")
    loss.backward()

    # Inputs to replay: those that reach the loss through an encoder with trainable parameters
    # (or inputs that require grad); a frozen tower (LiT) is run once, without a graph.
    replay = [
        reps[i].grad is not None
        and (
            any(p.requires_grad for p in enc.parameters())
            or any(t.requires_grad for t in _tensors(inputs[i]))
        )
        for i, enc in enumerate(encoders)
    ]
    if restore_buffers:  # replayed encoders update their buffers in the replay, once per chunk
        replayed = {id(e) for e, r in zip(encoders, replay, strict=True) if r}
        with torch.no_grad():
            for e, bufs in zip(unique, saved, strict=True):
                if id(e) in replayed:
                    for b, s in zip(e.buffers(), bufs, strict=True):
                        b.copy_(s)

    # 3. replay each chunk with a graph and back-propagate its cached gradient; a DDP encoder
    # synchronises on the last chunk it replays.
    last_use = {id(e): (i, len(chunks[i]) - 1) for i, e in enumerate(encoders) if replay[i]}
    for i, (enc, parts) in enumerate(zip(encoders, chunks, strict=True)):
        if not replay[i]:
            continue
        grad = reps[i].grad
        assert grad is not None
        offsets = [0]
        for part in parts:
            offsets.append(offsets[-1] + _tensors(part)[0].shape[0])
        for j, part in enumerate(parts):
            sync = last_use[id(enc)] == (i, j) or not hasattr(enc, "no_sync")
            with contextlib.ExitStack() as stack:
                if not sync:
                    stack.enter_context(enc.no_sync())  # type: ignore[operator]
                stack.enter_context(states[i][j].replay())
                with _autocast(part, autocast_dtype):
                    out = _call(enc, part)
                out.backward(grad[offsets[j] : offsets[j + 1]].to(out.dtype))
    return loss.detach()


class GradCache:
    """Gradient caching as an object holding the encoders, the loss and the chunk size; see
    :func:`grad_cache_step` (Gao et al. 2021).

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from contrastkit.losses import InfoNCE
        >>> q_tower, k_tower = nn.Linear(16, 8), nn.Linear(16, 8)
        >>> opt = torch.optim.SGD([*q_tower.parameters(), *k_tower.parameters()], lr=0.1)
        >>> step = GradCache([q_tower, k_tower], InfoNCE(temperature=0.1), chunk_size=32)
        >>> loss = step(torch.randn(256, 16), torch.randn(256, 16))  # 256 rows, 32 at a time
        >>> opt.step(); opt.zero_grad()
    """

    def __init__(
        self,
        encoders: nn.Module | Sequence[nn.Module],
        loss_fn: Callable[..., Tensor],
        chunk_size: int,
        *,
        autocast_dtype: torch.dtype | None = None,
        restore_buffers: bool = True,
    ) -> None:
        self.encoders = encoders
        self.loss_fn = loss_fn
        self.chunk_size = chunk_size
        self.autocast_dtype = autocast_dtype
        self.restore_buffers = restore_buffers

    def __call__(self, *inputs: Batch, **loss_kwargs: Any) -> Tensor:
        """Accumulate the full-batch gradients of one step; returns the detached loss."""
        return grad_cache_step(
            self.encoders,
            list(inputs),
            self.loss_fn,
            self.chunk_size,
            loss_kwargs=loss_kwargs,
            autocast_dtype=self.autocast_dtype,
            restore_buffers=self.restore_buffers,
        )
