"""GradCache (Gao et al. 2021): parameter gradients equal one backward through the whole batch.

The reference encodes the batch chunk by chunk *with* a graph, in the same order, from the same
RNG state (so dropout draws the same masks), and back-propagates the loss once.  The
multi-process case (DDP towers, ``distributed=True`` loss) is in test_distributed.py.
"""

from __future__ import annotations

import contextlib

import pytest
import torch
from torch import nn

from contrastkit.functional import info_nce
from contrastkit.losses import InfoNCE, NTXent
from contrastkit.training import GradCache, grad_cache_step

torch.set_num_threads(1)
F64 = torch.float64


def _tower(d_in: int, dropout: float = 0.3, norm: bool = False) -> nn.Module:
    layers = [nn.Linear(d_in, 16), nn.Dropout(dropout), nn.GELU()]
    if norm:
        layers.insert(1, nn.BatchNorm1d(16))
    return nn.Sequential(*layers, nn.Linear(16, 8)).double()


def _reference(encoders, inputs, loss_fn, chunk, seed, **loss_kwargs):
    torch.manual_seed(seed)
    embs = [
        torch.cat([enc(c) for c in x.split(chunk)]) for enc, x in zip(encoders, inputs, strict=True)
    ]
    loss = loss_fn(*embs, **loss_kwargs)
    loss.backward()
    return loss.detach()


def _grads(modules):
    return {
        f"{i}.{n}": p.grad.clone() for i, m in enumerate(modules) for n, p in m.named_parameters()
    }


def _zero(modules):
    for m in modules:
        m.zero_grad(set_to_none=True)


@pytest.mark.parametrize("chunk", [3, 5, 16])
def test_dual_tower_with_dropout_matches_full_batch(chunk):
    torch.manual_seed(0)
    towers = [_tower(6), _tower(7)]
    loss_fn = InfoNCE(0.2, symmetric=True, learnable_temperature=True).double()
    x, y = torch.randn(16, 6, dtype=F64), torch.randn(16, 7, dtype=F64)
    modules = [*towers, loss_fn]
    ref_loss = _reference(towers, [x, y], loss_fn, chunk, seed=11)
    want = _grads(modules)
    after_ref = torch.get_rng_state()
    _zero(modules)
    torch.manual_seed(11)
    loss = GradCache(towers, loss_fn, chunk_size=chunk)(x, y)
    got = _grads(modules)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-12, atol=0)
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-10, atol=1e-13, msg=name)
    # the global RNG continues as after a plain forward of the chunks
    assert torch.equal(torch.get_rng_state(), after_ref)
    # dropout matters: other masks give other gradients (so the replay is what makes them equal)
    _zero(modules)
    _reference(towers, [x, y], loss_fn, chunk, seed=12)
    assert not torch.allclose(_grads(modules)["0.0.weight"], want["0.0.weight"])


def test_shared_encoder_three_views_and_mapping_inputs():
    torch.manual_seed(0)

    class Encoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = _tower(5)

        def forward(self, x, mask):
            return self.net(x * mask)

    enc = Encoder()
    views = [
        {"x": torch.randn(12, 5, dtype=F64), "mask": torch.rand(12, 5, dtype=F64)} for _ in range(3)
    ]
    loss_fn = NTXent(0.5)
    torch.manual_seed(3)
    embs = [
        torch.cat([enc(**{k: v[i : i + 4] for k, v in b.items()}) for i in range(0, 12, 4)])
        for b in views
    ]
    loss_fn(*embs).backward()
    want = _grads([enc])
    _zero([enc])
    torch.manual_seed(3)
    grad_cache_step(enc, views, loss_fn, chunk_size=4)
    for name, g in _grads([enc]).items():
        torch.testing.assert_close(g, want[name], rtol=1e-10, atol=1e-13)


def test_without_dropout_equals_one_forward_of_the_whole_batch():
    torch.manual_seed(0)
    towers = [_tower(6, dropout=0.0), _tower(6, dropout=0.0)]
    x, y = torch.randn(20, 6, dtype=F64), torch.randn(20, 6, dtype=F64)
    labels = torch.randint(0, 4, (20,))
    loss_fn = lambda a, b, labels: info_nce(a, b, labels=labels, variant="in")  # noqa: E731
    loss_fn(towers[0](x), towers[1](y), labels).backward()
    want = _grads(towers)
    _zero(towers)
    grad_cache_step(towers, [x, y], loss_fn, chunk_size=6, loss_kwargs={"labels": labels})
    for name, g in _grads(towers).items():
        torch.testing.assert_close(g, want[name], rtol=1e-10, atol=1e-13)


def test_batchnorm_buffers_updated_once_per_chunk():
    torch.manual_seed(0)
    towers = [_tower(6, dropout=0.0, norm=True), _tower(6, dropout=0.0, norm=True)]
    ref_towers = [_tower(6, dropout=0.0, norm=True), _tower(6, dropout=0.0, norm=True)]
    for a, b in zip(ref_towers, towers, strict=True):
        a.load_state_dict(b.state_dict())
    x, y = torch.randn(12, 6, dtype=F64), torch.randn(12, 6, dtype=F64)
    _reference(ref_towers, [x, y], InfoNCE(), 4, seed=0)
    grad_cache_step(towers, [x, y], InfoNCE(), chunk_size=4)
    for a, b in zip(ref_towers, towers, strict=True):
        for (name, want), got in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
            torch.testing.assert_close(got, want, rtol=1e-12, atol=0, msg=name)
        for (name, p), q in zip(a.named_parameters(), b.parameters(), strict=True):
            torch.testing.assert_close(q.grad, p.grad, rtol=1e-10, atol=1e-13, msg=name)


def test_autocast_bfloat16():
    torch.manual_seed(0)
    towers = [_tower(6).float(), _tower(6).float()]
    x, y = torch.randn(32, 6), torch.randn(32, 6)
    loss_fn = InfoNCE(0.1, symmetric=True)
    torch.manual_seed(1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        embs = [torch.cat([t(c) for c in v.split(8)]) for t, v in zip(towers, [x, y], strict=True)]
    ref = loss_fn(*embs)
    ref.backward()
    want = _grads(towers)
    _zero(towers)
    torch.manual_seed(1)
    loss = grad_cache_step(towers, [x, y], loss_fn, chunk_size=8, autocast_dtype=torch.bfloat16)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, ref.detach(), rtol=1e-5, atol=0)
    for name, g in _grads(towers).items():
        assert g.dtype == torch.float32
        # bf16 rounding of the backward differs with the summation order: a few bf16 ulps
        torch.testing.assert_close(g, want[name], rtol=2e-2, atol=1e-2, msg=name)


def test_argument_errors():
    enc = _tower(4)
    x = torch.randn(8, 4, dtype=F64)
    with pytest.raises(ValueError, match="chunk_size must be >= 1"):
        grad_cache_step(enc, [x, x], InfoNCE(), chunk_size=0)
    with pytest.raises(TypeError, match="chunk_size must be an int"):
        grad_cache_step(enc, [x, x], InfoNCE(), chunk_size=2.0)
    with pytest.raises(TypeError, match="inputs must be a non-empty list"):
        grad_cache_step(enc, x, InfoNCE(), chunk_size=2)
    with pytest.raises(ValueError, match="got 3 encoders for 2 inputs"):
        grad_cache_step([enc, enc, enc], [x, x], InfoNCE(), chunk_size=2)
    with pytest.raises(ValueError, match="same batch size"):
        grad_cache_step(enc, [{"input": x, "other": x[:5]}, x], InfoNCE(), chunk_size=2)
    with pytest.raises(ValueError, match="loss_fn must return a scalar"):
        grad_cache_step(enc, [x, x], lambda a, b: (a * b).sum(1), chunk_size=2)


def test_frozen_tower_is_not_replayed_and_gets_its_buffers_updated_once():
    # LiT: a locked (requires_grad=False) tower; its outputs need no backward, and its BatchNorm
    # statistics (train mode) move once per chunk, as in the chunked reference.
    torch.manual_seed(0)
    towers = [_tower(6), _tower(5, dropout=0.0, norm=True).requires_grad_(False)]
    ref_towers = [_tower(6), _tower(5, dropout=0.0, norm=True).requires_grad_(False)]
    for a, b in zip(ref_towers, towers, strict=True):
        a.load_state_dict(b.state_dict())
    x, y = torch.randn(10, 6, dtype=F64), torch.randn(10, 5, dtype=F64)
    loss_fn = InfoNCE(0.2, symmetric=True)
    ref_loss = _reference(ref_towers, [x, y], loss_fn, 4, seed=5)
    torch.manual_seed(5)
    loss = grad_cache_step(towers, [x, y], loss_fn, chunk_size=4)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-12, atol=0)
    for (name, p), q in zip(ref_towers[0].named_parameters(), towers[0].parameters(), strict=True):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-10, atol=1e-13, msg=name)
    assert all(p.grad is None for p in towers[1].parameters())
    for (name, want), got in zip(
        ref_towers[1].state_dict().items(), towers[1].state_dict().values(), strict=True
    ):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=0, msg=name)


def test_mapping_with_unequal_batch_sizes_raises_even_with_equal_chunk_counts():
    enc = _tower(4)
    x = torch.randn(10, 4, dtype=F64)
    # 10 and 9 rows both make 2 chunks of 5: still not one batch
    with pytest.raises(ValueError, match=r"inputs\[0\]: every tensor must have the same batch"):
        grad_cache_step(enc, [{"input": x, "other": x[:9]}, x], InfoNCE(), chunk_size=5)
    with pytest.raises(TypeError, match=r"inputs\[0\]\['flag'\] must be a Tensor"):
        grad_cache_step(enc, [{"input": x, "flag": True}, x], InfoNCE(), chunk_size=5)


def test_ddp_encoder_synchronises_on_its_last_replayed_chunk():
    # A DDP-like encoder records whether each graph-building forward ran under no_sync(); the
    # loss ignores the last input, so the sync must come with the last chunk of the one before.
    class Recorder(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = _tower(4, dropout=0.0)
            self.quiet, self.calls = False, []

        @contextlib.contextmanager
        def no_sync(self):
            self.quiet = True
            yield
            self.quiet = False

        def forward(self, x):
            if torch.is_grad_enabled():
                self.calls.append("no_sync" if self.quiet else "sync")
            return self.net(x)

    enc = Recorder()
    x, y, z = (torch.randn(6, 4, dtype=F64) for _ in range(3))
    grad_cache_step(enc, [x, y, z], lambda a, b, c: info_nce(a, b), chunk_size=4)
    assert enc.calls == ["no_sync", "no_sync", "no_sync", "sync"]
