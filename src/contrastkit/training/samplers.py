r"""Batch samplers: which items share a batch decides which pairs a contrastive loss sees.

Each sampler is a ``torch.utils.data.Sampler`` of index lists, for
``DataLoader(dataset, batch_sampler=...)``, and is distributed-aware in one way: the epoch's
batches are built from ``(seed, epoch)`` identically on every rank and dealt out, step ``t`` of
rank ``r`` being batch ``t * num_replicas + r``; every rank gets the same number of steps (the
remainder is dropped) and no item appears twice in one epoch unless a sampler says otherwise.
``num_replicas`` and ``rank`` default to the initialised ``torch.distributed`` group (1 and 0
without one); call ``set_epoch(epoch)`` before each epoch, as with ``DistributedSampler``.
``batch_size`` is always the per-rank batch size.

- :class:`MPerClassSampler`: ``batch_size / m`` classes with ``m`` items each (SupCon).
- :class:`PseudoClassExclusiveSampler`: no two items of one k-means pseudo-class (G-SimCLR).
- :class:`BatchBindingSampler`: a shuffled batch plus the same one-per-class items (Kini et
  al. 2023).
- :class:`NeighbourBatchSampler`: each item with its nearest neighbours (Sample4Geo).
- :class:`TaskBatchSampler`: single-task steps with balanced per-task updates (CoDiEmb).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch import Tensor
from torch.utils.data import Sampler

__all__ = [
    "MPerClassSampler",
    "PseudoClassExclusiveSampler",
    "BatchBindingSampler",
    "NeighbourBatchSampler",
    "TaskBatchSampler",
]


def _as_ids(name: str, values: Tensor | Sequence[int]) -> Tensor:
    ids = values if isinstance(values, Tensor) else torch.as_tensor(list(values))
    if ids.numel() == 0:
        raise ValueError(f"{name} is empty; expected one id per dataset item")
    if ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool or ids.dim() != 1:
        raise ValueError(f"{name} must be a 1-D sequence of integers, got {ids.dtype} {ids.shape}")
    return ids.detach().to("cpu", torch.long)


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return value


def _replicas(num_replicas: int | None, rank: int | None) -> tuple[int, int]:
    initialised = torch.distributed.is_available() and torch.distributed.is_initialized()
    if num_replicas is None:
        num_replicas = torch.distributed.get_world_size() if initialised else 1
    if rank is None:
        rank = torch.distributed.get_rank() if initialised else 0
    num_replicas = _positive_int("num_replicas", num_replicas)
    if isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank < num_replicas:
        raise ValueError(f"rank must be an int in [0, {num_replicas}), got {rank!r}")
    return num_replicas, rank


class _EpochBatchSampler(Sampler[list[int]]):
    """Builds the epoch's global batch list from ``(seed, epoch)`` and deals it to the ranks."""

    def __init__(self, batch_size: int, num_replicas: int | None, rank: int | None, seed: int):
        self.batch_size = _positive_int("batch_size", batch_size)
        self.num_replicas, self.rank = _replicas(num_replicas, rank)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"seed must be an int, got {type(seed).__name__}")
        self.seed = seed
        self.epoch = 0
        self._cache: tuple[int, list[list[int]]] | None = None

    def set_epoch(self, epoch: int) -> None:
        """Use the batches of ``epoch`` (call before each epoch, on every rank)."""
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise ValueError(f"epoch must be an int >= 0, got {epoch!r}")
        self.epoch = epoch

    def _build(self, generator: torch.Generator) -> list[list[int]]:
        raise NotImplementedError

    def global_batches(self) -> list[list[int]]:
        """Every rank's batches of the current epoch, in step-major order (for inspection)."""
        if self._cache is None or self._cache[0] != self.epoch:
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            self._cache = (self.epoch, self._build(g))
        return self._cache[1]

    def __iter__(self) -> Iterator[list[int]]:
        batches = self.global_batches()
        for step in range(len(self)):
            yield list(batches[step * self.num_replicas + self.rank])

    def __len__(self) -> int:
        return len(self.global_batches()) // self.num_replicas


class MPerClassSampler(_EpochBatchSampler):
    r"""Batches of ``batch_size / m`` distinct classes with exactly ``m`` items each, so that
    every anchor of a supervised contrastive loss has ``m - 1`` positives (SupCon, Khosla et al.
    2020).

    Each epoch, every class's items are shuffled and cut into groups of ``m`` (a class's last
    ``n_c mod m`` items sit this epoch out); a batch takes one group from each of the
    ``batch_size / m`` classes with the most groups left (random tie-breaks), which uses as many
    groups as possible.  Classes with fewer than ``m`` items never appear.

    Args:
        labels: ``(N,)`` class of every dataset item.
        m: items per class in a batch.
        batch_size: per-rank batch size, a multiple of ``m``.
        num_replicas, rank: the distributed layout (default: the initialised process group).
        seed: base seed; epoch ``e`` uses ``seed + e``.

    Example:
        >>> import torch
        >>> labels = torch.arange(40) % 5
        >>> sampler = MPerClassSampler(labels, m=4, batch_size=8)
        >>> batch = next(iter(sampler))
        >>> sorted(torch.bincount(labels[batch]).tolist(), reverse=True)[:3]
        [4, 4, 0]
    """

    def __init__(
        self,
        labels: Tensor | Sequence[int],
        m: int,
        batch_size: int,
        *,
        num_replicas: int | None = None,
        rank: int | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(batch_size, num_replicas, rank, seed)
        self.labels = _as_ids("labels", labels)
        self.m = _positive_int("m", m)
        if self.batch_size % self.m:
            raise ValueError(f"batch_size={batch_size} must be a multiple of m={m}")
        self.classes_per_batch = self.batch_size // self.m
        self._classes, counts = torch.unique(self.labels, return_counts=True)
        usable = int((counts >= self.m).sum())
        if usable < self.classes_per_batch:
            raise ValueError(
                f"batch_size={batch_size} with m={m} needs {self.classes_per_batch} classes with "
                f"at least {m} items each, but labels has only {usable} such classes"
            )
        # the greedy of _build makes t batches iff sum_c min(groups_c, t) >= t * classes_per_batch
        # (and that condition holds for every t below the largest such t): every rank needs one
        groups = counts // self.m
        if int(groups.clamp(max=self.num_replicas).sum()) < (
            self.num_replicas * self.classes_per_batch
        ):
            raise ValueError(
                f"batch_size={batch_size} with m={m} x num_replicas={self.num_replicas}: labels "
                f"cannot fill one batch per rank ({self.num_replicas} batches of "
                f"{self.classes_per_batch} classes x {m} items)"
            )

    def _build(self, generator: torch.Generator) -> list[list[int]]:
        groups: list[list[list[int]]] = []
        for c in self._classes:
            members = (self.labels == c).nonzero().flatten()
            members = members[torch.randperm(len(members), generator=generator)]
            full = len(members) // self.m * self.m
            groups.append(members[:full].view(-1, self.m).tolist())
        left = torch.tensor([len(g) for g in groups], dtype=torch.float64)
        batches = []
        while int((left > 0).sum()) >= self.classes_per_batch:
            priority = left + torch.rand(len(left), generator=generator, dtype=torch.float64)
            priority[left == 0] = -1.0
            chosen = priority.topk(self.classes_per_batch).indices.tolist()
            batch: list[int] = []
            for c in chosen:
                batch.extend(groups[c].pop())
                left[c] -= 1
            batches.append(batch)
        return batches


class PseudoClassExclusiveSampler(MPerClassSampler):
    r"""Batches in which no two items share a pseudo-class (G-SimCLR, Chakraborty et al. 2020):
    with k-means pseudo-labels (:func:`contrastkit.training.miners.kmeans`) of a pretrained
    encoder, NT-Xent's in-batch negatives are then never of the same latent category.

    An :class:`MPerClassSampler` with ``m = 1``: each batch takes one item from each of
    ``batch_size`` distinct pseudo-classes, so ``batch_size`` must not exceed their number.

    Example:
        >>> import torch
        >>> pseudo = torch.arange(100) % 10
        >>> batch = next(iter(PseudoClassExclusiveSampler(pseudo, batch_size=8)))
        >>> len(set(pseudo[batch].tolist()))
        8
    """

    def __init__(
        self,
        pseudo_labels: Tensor | Sequence[int],
        batch_size: int,
        *,
        num_replicas: int | None = None,
        rank: int | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(
            pseudo_labels, 1, batch_size, num_replicas=num_replicas, rank=rank, seed=seed
        )


class BatchBindingSampler(_EpochBatchSampler):
    r"""Batch-binding (Kini et al. 2023, "Symmetric Neural-Collapse Representations with
    Supervised Contrastive Loss"): every batch is a shuffled batch plus the same *binding* set of
    one item per class.

    Kini et al. prove that mini-batch SupCon keeps the symmetric (orthogonal-frame) geometry only
    if the batches are "connected" across classes; appending one fixed example of every class to
    every batch guarantees it.  The binding items are drawn once from ``seed`` (the same for
    all epochs and ranks) and are left out of the shuffled part.

    Args:
        labels: ``(N,)`` class of every item.
        batch_size: size of the shuffled part; yielded batches hold ``batch_size + C`` items
            (``C`` classes).

    Example:
        >>> import torch
        >>> labels = torch.arange(30) % 3
        >>> sampler = BatchBindingSampler(labels, batch_size=4)
        >>> b0, b1 = list(sampler)[:2]
        >>> len(b0), b0[-3:] == b1[-3:] == sampler.binding
        (7, True)
    """

    def __init__(
        self,
        labels: Tensor | Sequence[int],
        batch_size: int,
        *,
        num_replicas: int | None = None,
        rank: int | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(batch_size, num_replicas, rank, seed)
        self.labels = _as_ids("labels", labels)
        g = torch.Generator().manual_seed(seed)
        binding = []
        for c in torch.unique(self.labels):
            members = (self.labels == c).nonzero().flatten()
            binding.append(int(members[torch.randint(len(members), (1,), generator=g)]))
        self.binding: list[int] = binding
        keep = torch.ones(len(self.labels), dtype=torch.bool)
        keep[binding] = False
        self._pool = keep.nonzero().flatten()
        if len(self._pool) < self.batch_size * self.num_replicas:
            raise ValueError(
                f"batch_size={batch_size} x num_replicas={self.num_replicas} is larger than the "
                f"{len(self._pool)} items left after the binding set"
            )

    def _build(self, generator: torch.Generator) -> list[list[int]]:
        pool = self._pool[torch.randperm(len(self._pool), generator=generator)]
        full = len(pool) // self.batch_size * self.batch_size
        return [b + self.binding for b in pool[:full].view(-1, self.batch_size).tolist()]


class NeighbourBatchSampler(_EpochBatchSampler):
    r"""Hard-negative batches built from neighbours (Sample4Geo, Deuser et al. 2023).

    Each epoch visits the items in random order; an item not yet used opens or extends the
    current batch and pulls in, while there is room, its ``num_select // 2`` nearest unused
    neighbours and ``num_select - num_select // 2`` unused ones drawn at random from the rest of
    its neighbour list, so that every item's hard negatives (by embedding similarity, from
    :func:`~contrastkit.training.miners.topk_negatives`, or by GPS distance, from
    :func:`~contrastkit.training.miners.neighbour_negatives`) share its batch.  No item is
    used twice in an epoch; the last, partial batch is dropped.

    Args:
        neighbours: ``(N, R)`` long, row ``i`` the neighbours of item ``i``, nearest first
            (``-1`` pads short rows).
        batch_size: per-rank batch size.
        num_select: neighbours pulled in per item (Sample4Geo: 64 out of a range of 128);
            default ``max(1, R // 2)``.

    Example:
        >>> import torch
        >>> x = torch.randn(64, 8)
        >>> from contrastkit.training.miners import topk_negatives
        >>> nbrs = topk_negatives(x, k=8)                  # 8 nearest other items of each
        >>> batches = list(NeighbourBatchSampler(nbrs, batch_size=16))
        >>> len(batches), len(set(sum(batches, [])))
        (4, 64)
    """

    def __init__(
        self,
        neighbours: Tensor,
        batch_size: int,
        *,
        num_select: int | None = None,
        num_replicas: int | None = None,
        rank: int | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(batch_size, num_replicas, rank, seed)
        if not isinstance(neighbours, Tensor):
            raise TypeError(f"neighbours must be a torch.Tensor, got {type(neighbours).__name__}")
        if neighbours.dtype != torch.long or neighbours.dim() != 2:
            raise ValueError(
                f"neighbours must be an (N, R) long tensor, got {neighbours.dtype} "
                f"{tuple(neighbours.shape)}"
            )
        n, r = neighbours.shape
        if n == 0 or r == 0:
            raise ValueError(f"neighbours is empty (shape {tuple(neighbours.shape)})")
        if int(neighbours.min()) < -1 or int(neighbours.max()) >= n:
            raise ValueError(f"neighbours must hold item indices in [0, {n}) or -1 padding")
        self.neighbours = neighbours.detach().cpu()
        self.num_select = (
            max(1, r // 2) if num_select is None else _positive_int("num_select", num_select)
        )
        if not 1 <= self.num_select <= r:
            raise ValueError(
                f"num_select must lie in [1, {r}] (the neighbour range), got {num_select}"
            )
        if n < self.batch_size * self.num_replicas:
            raise ValueError(
                f"batch_size={batch_size} x num_replicas={self.num_replicas} is larger than the "
                f"{n} items"
            )

    def _build(self, generator: torch.Generator) -> list[list[int]]:
        n, r = self.neighbours.shape
        near = self.num_select // 2
        num_far = self.num_select - near
        rest = self.neighbours[:, near:]
        # a random order of the rest of each list, its -1 padding last (never drawn before a
        # real neighbour)
        noise = torch.rand(rest.shape, generator=generator).masked_fill(rest < 0, 2.0)
        pick = noise.argsort(dim=1)[:, :num_far]
        candidates = torch.cat([self.neighbours[:, :near], rest.gather(1, pick)], dim=1).tolist()
        used = [False] * n
        batches, current = [], []
        for item in torch.randperm(n, generator=generator).tolist():
            if used[item]:
                continue
            used[item] = True
            current.append(item)
            for other in candidates[item]:
                if len(current) >= self.batch_size:
                    break
                if other >= 0 and not used[other]:
                    used[other] = True
                    current.append(other)
            if len(current) >= self.batch_size:
                batches.append(current)
                current = []
        return batches


class TaskBatchSampler(_EpochBatchSampler):
    r"""Single-task batches with balanced per-task updates (CoDiEmb, Zhang et al. 2025).

    Every optimisation step draws all ranks' batches from one task, so that a task-specific loss
    (and its cross-device negatives) never mixes tasks.  Each task's items are shuffled and cut
    into steps of ``batch_size * num_replicas`` items; ``balance`` sets how many steps a task
    gets per epoch:

    - ``"uniform"`` (default): every task as many steps as the largest one; smaller tasks
      cycle through fresh shuffles of their items (their leftover items are dropped per cycle,
      so no batch repeats an item);
    - ``"proportional"``: each task its natural number of steps (every item at most once).

    Steps are interleaved by stride scheduling (task ``t``'s ``j``-th step is placed at
    :math:`(j + u_t)/S_t` with a random phase :math:`u_t`), so that the updates of every task
    are spread evenly over the epoch.

    Args:
        task_ids: ``(N,)`` task of every item.
        batch_size: per-rank batch size.
        balance: ``"uniform"`` or ``"proportional"``.

    Example:
        >>> import torch
        >>> tasks = torch.tensor([0] * 40 + [1] * 16)
        >>> steps = list(TaskBatchSampler(tasks, batch_size=8))
        >>> [int(tasks[b[0]]) for b in steps].count(1)     # as many steps as task 0
        5
        >>> all(len(set(tasks[b].tolist())) == 1 for b in steps)
        True
    """

    def __init__(
        self,
        task_ids: Tensor | Sequence[int],
        batch_size: int,
        *,
        balance: str = "uniform",
        num_replicas: int | None = None,
        rank: int | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(batch_size, num_replicas, rank, seed)
        self.task_ids = _as_ids("task_ids", task_ids)
        if balance not in ("uniform", "proportional"):
            raise ValueError(f"balance must be 'uniform' or 'proportional', got {balance!r}")
        self.balance = balance
        self._tasks, counts = torch.unique(self.task_ids, return_counts=True)
        step_items = self.batch_size * self.num_replicas
        small = counts < step_items
        if bool(small.any()):
            t = int(self._tasks[small.nonzero()[0, 0]])
            raise ValueError(
                f"task {t} has {int(counts[small][0])} items, fewer than batch_size x "
                f"num_replicas = {step_items}: it cannot fill one step"
            )

    def _build(self, generator: torch.Generator) -> list[list[int]]:
        step_items = self.batch_size * self.num_replicas
        members = [(self.task_ids == t).nonzero().flatten() for t in self._tasks]
        natural = [len(m) // step_items for m in members]
        target = [max(natural)] * len(members) if self.balance == "uniform" else natural
        keyed = []
        for t, (items, n_steps) in enumerate(zip(members, target, strict=True)):
            steps: list[list[int]] = []
            while len(steps) < n_steps:
                perm = items[torch.randperm(len(items), generator=generator)]
                full = len(perm) // step_items * step_items
                steps.extend(perm[:full].view(-1, step_items).tolist())
            phase = float(torch.rand((), generator=generator))
            keyed.extend(((j + phase) / n_steps, t, s) for j, s in enumerate(steps[:n_steps]))
        keyed.sort(key=lambda e: (e[0], e[1]))
        bs = self.batch_size
        return [s[r * bs : (r + 1) * bs] for _, _, s in keyed for r in range(self.num_replicas)]
