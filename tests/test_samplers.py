"""Batch samplers: their invariants over full epochs, on one rank and on two simulated ranks."""

from __future__ import annotations

import doctest
from collections import Counter

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import contrastkit.training.samplers as S
from contrastkit.training.miners import kmeans, topk_negatives
from contrastkit.training.samplers import (
    BatchBindingSampler,
    MPerClassSampler,
    NeighbourBatchSampler,
    PseudoClassExclusiveSampler,
    TaskBatchSampler,
)

WORLDS = [1, 2]


def epoch(make, world, ep=0):
    """Every rank's batches of one epoch: ``[rank][step] -> list of indices``."""
    out = []
    for rank in range(world):
        sampler = make(num_replicas=world, rank=rank)
        sampler.set_epoch(ep)
        out.append(list(sampler))
        assert len(out[-1]) == len(sampler)
    return out


def common_checks(per_rank, world, sampler, unique=True):
    steps = {len(b) for b in per_rank}
    assert len(steps) == 1 and steps.pop() > 0  # every rank takes the same number of steps
    flat = [i for batches in per_rank for b in batches for i in b]
    if unique:
        assert len(flat) == len(set(flat))  # no item twice in an epoch, across ranks
    # rank r's step t is global batch t * world + r
    glob = sampler.global_batches()
    for r, batches in enumerate(per_rank):
        for t, b in enumerate(batches):
            assert b == glob[t * world + r]


# ---------------------------------------------------------------- M per class
@pytest.mark.parametrize("world", WORLDS)
@pytest.mark.parametrize("m,batch_size", [(2, 8), (4, 8), (3, 12)])
def test_m_per_class_invariants(world, m, batch_size):
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 7, (150,), generator=g)
    labels[:2] = 99  # a class too small for m >= 3 stays out

    def make(**kw):
        return MPerClassSampler(labels, m, batch_size, seed=3, **kw)

    per_rank = epoch(make, world)
    common_checks(per_rank, world, make(num_replicas=world, rank=0))
    for batches in per_rank:
        for b in batches:
            counts = Counter(labels[b].tolist())
            assert len(b) == batch_size
            assert len(counts) == batch_size // m and set(counts.values()) == {m}
    # on one rank the epoch uses groups until fewer than batch_size / m classes have one left
    if world == 1:
        used = Counter()
        for b in per_rank[0]:
            for c in set(labels[b].tolist()):
                used[c] += 1
        groups = {c: n // m for c, n in Counter(labels.tolist()).items()}
        left = [c for c in groups if groups[c] - used[c] > 0]
        assert len(left) < batch_size // m


@pytest.mark.parametrize("world", WORLDS)
def test_epochs_differ_and_repeat(world):
    labels = torch.arange(120) % 6

    def make(**kw):
        return MPerClassSampler(labels, 4, 8, seed=11, **kw)

    e0, e1 = epoch(make, world, 0), epoch(make, world, 1)
    assert e0 != e1
    assert epoch(make, world, 0) == e0


# ---------------------------------------------------------------- pseudo-class exclusive
@pytest.mark.parametrize("world", WORLDS)
def test_pseudo_class_exclusive_with_kmeans_labels(world):
    g = torch.Generator().manual_seed(0)
    x = (
        torch.randn(200, 4, generator=g)
        + 6 * torch.randn(12, 4, generator=g)[torch.randint(0, 12, (200,), generator=g)]
    )
    pseudo, _ = kmeans(x, 12, generator=torch.Generator().manual_seed(0))

    def make(**kw):
        return PseudoClassExclusiveSampler(pseudo, 8, seed=1, **kw)

    per_rank = epoch(make, world)
    common_checks(per_rank, world, make(num_replicas=world, rank=0))
    for batches in per_rank:
        for b in batches:
            assert len(b) == 8 and len(set(pseudo[b].tolist())) == 8  # no two of one cluster


# ---------------------------------------------------------------- batch-binding
@pytest.mark.parametrize("world", WORLDS)
def test_batch_binding_invariants(world):
    labels = torch.randint(0, 5, (97,), generator=torch.Generator().manual_seed(2))

    def make(**kw):
        return BatchBindingSampler(labels, 10, seed=4, **kw)

    per_rank = epoch(make, world)
    binding = make(num_replicas=world, rank=0).binding
    assert sorted(labels[binding].tolist()) == [0, 1, 2, 3, 4]  # one of every class
    rest = []
    for batches in per_rank:
        for b in batches:
            assert len(b) == 10 + 5 and len(set(b)) == 15
            assert b[10:] == binding  # the same binding set in every batch
            assert set(labels[b].tolist()) == {0, 1, 2, 3, 4}  # every class in every batch
            rest += b[:10]
    assert len(rest) == len(set(rest)) and not set(rest) & set(binding)
    assert epoch(make, world, 5)[0][0][10:] == binding  # fixed across epochs
    if world == 1:
        assert len(rest) == (97 - 5) // 10 * 10


# ---------------------------------------------------------------- neighbour batches
@pytest.mark.parametrize("world", WORLDS)
@pytest.mark.parametrize("num_select", [None, 4])
def test_neighbour_batches_invariants(world, num_select):
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(16, 8, generator=g) * 5
    x = centres.repeat_interleave(8, dim=0) + 0.3 * torch.randn(128, 8, generator=g)
    nbrs = topk_negatives(x, k=10)  # each item's 10 most similar other items

    def make(**kw):
        return NeighbourBatchSampler(nbrs, 16, num_select=num_select, seed=2, **kw)

    per_rank = epoch(make, world)
    common_checks(per_rank, world, make(num_replicas=world, rank=0))
    near = (10 // 2 if num_select is None else num_select) // 2
    seen: set[int] = set()
    glob = make(num_replicas=world, rank=0).global_batches()
    for b in glob:
        assert len(b) == 16
        # the batch's seed pulled in its nearest neighbours unless an earlier batch had them
        for j in nbrs[b[0], :near].tolist():
            assert j in b or j in seen
        seen |= set(b)
    # neighbours share batches far more often than in random batches (15 / 127 = 0.12)
    together = sum(int(j in set(b)) for b in glob for i in b for j in nbrs[i, :3].tolist()) / (
        3 * 16 * len(glob)
    )
    assert together > 3 * 15 / 127


# ---------------------------------------------------------------- single-task batches
@pytest.mark.parametrize("world", WORLDS)
@pytest.mark.parametrize("balance", ["uniform", "proportional"])
def test_task_batches_invariants(world, balance):
    tasks = torch.tensor([0] * 100 + [1] * 37 + [2] * 61)

    def make(**kw):
        return TaskBatchSampler(tasks, 6, balance=balance, seed=5, **kw)

    per_rank = epoch(make, world)
    common_checks(per_rank, world, make(num_replicas=world, rank=0), unique=balance != "uniform")
    step_tasks = []
    for t in range(len(per_rank[0])):
        ts = {int(tasks[i]) for r in range(world) for i in per_rank[r][t]}
        assert len(ts) == 1  # one task per step, on every rank
        step_tasks.append(ts.pop())
        for r in range(world):
            b = per_rank[r][t]
            assert len(b) == 6 and len(set(b)) == 6
    counts = Counter(step_tasks)
    natural = {t: n // (6 * world) for t, n in ((0, 100), (1, 37), (2, 61))}
    if balance == "uniform":
        assert set(counts.values()) == {max(natural.values())}
    else:
        assert dict(counts) == natural
    # updates are spread: no task runs more than ceil(S / S_t) + 1 ... steps apart twice in a row
    total = len(step_tasks)
    for t, c in counts.items():
        where = [i for i, x in enumerate(step_tasks) if x == t]
        gaps = [b - a for a, b in zip(where, where[1:], strict=False)]
        assert max(gaps, default=0) <= total / c + 2


# ---------------------------------------------------------------- distributed defaults, loader
def test_defaults_follow_the_process_group(tmp_path):
    labels = torch.arange(64) % 4
    s = MPerClassSampler(labels, 4, 8)
    assert (s.num_replicas, s.rank) == (1, 0)
    torch.distributed.init_process_group(
        "gloo", init_method=f"file://{tmp_path}/store", rank=0, world_size=1
    )
    try:
        s = TaskBatchSampler(labels, 4)
        assert (s.num_replicas, s.rank) == (1, 0)
    finally:
        torch.distributed.destroy_process_group()


def test_works_as_a_dataloader_batch_sampler():
    labels = torch.arange(48) % 4
    ds = TensorDataset(torch.randn(48, 3), labels)
    loader = DataLoader(ds, batch_sampler=MPerClassSampler(labels, 2, 8))
    batches = list(loader)
    assert len(batches) == len(loader) > 0
    assert all(torch.bincount(y, minlength=4).max() == 2 for _, y in batches)


def test_bad_input_errors_name_the_argument():
    labels = torch.arange(20) % 4
    with pytest.raises(ValueError, match="batch_size=9 must be a multiple of m=2"):
        MPerClassSampler(labels, 2, 9)
    with pytest.raises(ValueError, match="needs 5 classes with at least 2 items"):
        MPerClassSampler(labels, 2, 10)
    with pytest.raises(ValueError, match="only 4 such classes"):
        PseudoClassExclusiveSampler(labels, 5)
    with pytest.raises(ValueError, match="rank must be an int in"):
        MPerClassSampler(labels, 2, 4, num_replicas=2, rank=2)
    with pytest.raises(ValueError, match="labels is empty"):
        BatchBindingSampler([], 4)
    with pytest.raises(ValueError, match="labels must be a 1-D sequence of integers"):
        MPerClassSampler(torch.zeros(5), 1, 1)
    with pytest.raises(ValueError, match="task 1 has 3 items, fewer than"):
        TaskBatchSampler([0] * 10 + [1] * 3, 4)
    with pytest.raises(ValueError, match="balance must be"):
        TaskBatchSampler([0] * 10, 4, balance="greedy")
    with pytest.raises(ValueError, match="neighbours must hold item indices"):
        NeighbourBatchSampler(torch.tensor([[5], [0]]), 1)
    with pytest.raises(ValueError, match="num_select must lie in"):
        NeighbourBatchSampler(torch.tensor([[1], [0]]), 1, num_select=3)
    with pytest.raises(ValueError, match="epoch must be"):
        MPerClassSampler(labels, 2, 4).set_epoch(-1)


def test_docstring_examples_run():
    assert doctest.testmod(S, raise_on_error=False).failed == 0


# ---------------------------------------------------------------- audit regressions
@pytest.mark.parametrize("seed", range(10))
def test_neighbour_batches_draw_real_neighbours_before_padding(seed):
    # two groups of three; each row lists its two group mates, then -1 padding.  With
    # num_select=2 an item pulls its nearest mate and one drawn from the rest of its list, whose
    # only real entry is the other mate: every batch is one whole group.
    nbrs = torch.full((6, 6), -1)
    for i in range(6):
        g = i // 3 * 3
        nbrs[i, :2] = torch.tensor([g + (i + 1) % 3, g + (i + 2) % 3])
    batches = list(NeighbourBatchSampler(nbrs, batch_size=3, num_select=2, seed=seed))
    assert sorted(sorted(b) for b in batches) == [[0, 1, 2], [3, 4, 5]]


def test_neighbour_batches_default_num_select_with_one_neighbour():
    nbrs = torch.tensor([[1], [0], [3], [2]])
    batches = list(NeighbourBatchSampler(nbrs, batch_size=2))
    assert sorted(sorted(b) for b in batches) == [[0, 1], [2, 3]]


def test_m_per_class_refuses_an_epoch_without_a_batch_per_rank():
    # 2 classes x 4 items, m=4, batch_size=8: exactly one batch, so a second rank would get
    # none and both ranks would iterate over nothing
    labels = torch.tensor([0] * 4 + [1] * 4)
    assert len(MPerClassSampler(labels, m=4, batch_size=8)) == 1
    with pytest.raises(ValueError, match="num_replicas"):
        MPerClassSampler(labels, m=4, batch_size=8, num_replicas=2, rank=0)
    with pytest.raises(ValueError, match="num_replicas"):
        PseudoClassExclusiveSampler(torch.arange(6) % 3, batch_size=3, num_replicas=3, rank=1)
    ok = MPerClassSampler(labels, m=2, batch_size=4, num_replicas=2, rank=1)
    assert len(ok) == len(list(ok)) == 1  # 4 groups of 2, 2 per batch, dealt to 2 ranks
