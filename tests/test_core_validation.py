"""Bad input gets a clear error naming the argument; inputs are never modified."""

from __future__ import annotations

import pytest
import torch

import contrastkit.functional as CF
from contrastkit.losses import InfoNCE, NTXent, SigLIP, SupCon
from contrastkit.pairing import Pairing


@pytest.mark.parametrize(
    "call,exc,match",
    [
        (lambda: CF.info_nce(torch.randn(4, 3), torch.randn(4, 5)), ValueError, "feature sizes"),
        (lambda: CF.info_nce(torch.randn(5, 3), torch.randn(4, 3)), ValueError, "key"),
        (lambda: CF.info_nce(torch.randn(0, 3), torch.randn(0, 3)), ValueError, "empty"),
        (lambda: CF.info_nce(torch.randn(4), torch.randn(4)), ValueError, "query must have shape"),
        (lambda: CF.info_nce([[1.0]], torch.randn(1, 1)), TypeError, "query must be a torch"),
        (lambda: CF.info_nce(torch.ones(2, 2).long(), torch.ones(2, 2)), TypeError, "query"),
        (
            lambda: CF.info_nce(torch.tensor([[float("nan"), 1.0]]), torch.randn(1, 2)),
            ValueError,
            "query contains NaN",
        ),
        (
            lambda: CF.info_nce(torch.randn(2, 2), torch.tensor([[1.0, float("inf")]] * 2)),
            ValueError,
            "key contains NaN or Inf",
        ),
        (
            lambda: CF.info_nce(torch.randn(3, 2), torch.randn(3, 2), temperature=0.0),
            ValueError,
            "temperature",
        ),
        (
            lambda: CF.info_nce(torch.randn(3, 2), torch.randn(3, 2), temperature=-1),
            ValueError,
            "temperature",
        ),
        (lambda: InfoNCE(temperature=0.0), ValueError, "temperature"),
        (
            lambda: CF.info_nce(torch.randn(3, 2), torch.randn(3, 2), labels=torch.tensor([0, 1])),
            ValueError,
            "labels must have shape",
        ),
        (
            lambda: CF.info_nce(
                torch.randn(3, 2), torch.randn(3, 2), labels=torch.tensor([0.0, 1.0, 1.0])
            ),
            TypeError,
            "labels must be an integer",
        ),
        (lambda: CF.info_nce(torch.randn(3, 2)), ValueError, "labels= or positives="),
        (
            lambda: CF.info_nce(torch.randn(3, 2), torch.randn(3, 2), positives=torch.ones(2, 3)),
            ValueError,
            "positives must have shape",
        ),
        (
            lambda: CF.info_nce(
                torch.randn(3, 2), torch.randn(3, 2), exclude=torch.zeros(3, 3, dtype=torch.int64)
            ),
            TypeError,
            "exclude must be a bool",
        ),
        (
            lambda: CF.info_nce(
                torch.randn(3, 2), torch.randn(3, 2), negatives=torch.randn(2, 4, 2)
            ),
            ValueError,
            "negatives",
        ),
        (
            lambda: CF.info_nce(torch.randn(3, 2), torch.randn(3, 2), variant="mid"),
            ValueError,
            "variant must be one of",
        ),
        (
            lambda: CF.info_nce(torch.randn(3, 2), torch.randn(3, 2), similarity="l1"),
            ValueError,
            "similarity must be one of",
        ),
        (
            lambda: CF.info_nce(torch.randn(3, 2), torch.randn(3, 2), engine="gpu"),
            ValueError,
            "engine must be one of",
        ),
        (lambda: CF.nt_xent(torch.randn(3, 2)), ValueError, "at least 2 views"),
        (lambda: CF.nt_xent(torch.randn(3, 2), torch.randn(4, 2)), ValueError, "views\\[1\\]"),
        (lambda: CF.supcon(torch.randn(3, 2, 4), torch.tensor([0, 1])), ValueError, "labels"),
        (
            lambda: CF.supcon(torch.randn(3, 1, 4), torch.tensor([0, 1, 2])),
            ValueError,
            "no query row has both a positive",
        ),
        (lambda: CF.siglip(torch.randn(3, 2), torch.randn(3, 2), scale=0.0), ValueError, "scale"),
        (
            lambda: CF.siglip(torch.randn(3, 2), torch.randn(3, 2), bias=float("nan")),
            ValueError,
            "bias",
        ),
        (lambda: SigLIP(init_scale=-1.0), ValueError, "init_scale"),
        (lambda: SigLIP(init_scale=float("inf")), ValueError, "init_scale must be a finite"),
        (lambda: SigLIP(init_bias=float("nan")), ValueError, "init_bias must be finite"),
        (lambda: InfoNCE(margin=float("nan")), ValueError, "margin must be finite"),
        (lambda: InfoNCE(max_scale="100"), TypeError, "max_scale must be a float"),
        (
            lambda: CF.siglip(torch.randn(3, 2), torch.randn(3, 2), positives=[[1.0]]),
            TypeError,
            "positives must be a torch.Tensor",
        ),
        (
            lambda: Pairing.from_labels(torch.tensor([0.0, 1.0, 0.0])),
            TypeError,
            "^labels must be an integer",
        ),
        (
            lambda: Pairing.from_labels(torch.tensor([[0, 1], [1, 0]])),
            ValueError,
            "^labels must have shape",
        ),
        (
            lambda: CF.info_nce(
                torch.randn(3, 2), torch.randn(3, 2), margin=torch.tensor(0.2, requires_grad=True)
            ),
            ValueError,
            "margin must be a fixed number",
        ),
        (lambda: InfoNCE(margin="0.2"), TypeError, "^margin must be a float"),
        (lambda: SigLIP(init_bias="x"), TypeError, "^init_bias must be a float"),
    ],
)
def test_bad_input_is_a_clear_error(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_decoupled_with_no_negative_anywhere_raises():
    x = torch.randn(1, 4)
    with pytest.raises(ValueError, match="positive and a negative"):
        CF.info_nce(x, x, decoupled=True)


def test_inputs_are_not_modified():
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(6, 4, generator=g), torch.randn(6, 4, generator=g)
    n = torch.randn(6, 2, 4, generator=g)
    labels = torch.tensor([0, 1, 0, 1, 2, 2])
    w = torch.rand(6, 6, generator=g) * (torch.rand(6, 6, generator=g) < 0.3)
    ex = torch.zeros(6, 6, dtype=torch.bool)
    saved = [t.clone() for t in (q, k, n, labels, w, ex)]
    InfoNCE(symmetric=True)(q, k, negatives=n, labels=labels)
    CF.info_nce(q, k, positives=w, exclude=ex, margin=0.1, decoupled=True)
    NTXent()(q, k)
    SupCon()(torch.stack([q, k], 1), labels)
    SigLIP()(q, k, labels=labels)
    for before, after in zip(saved, (q, k, n, labels, w, ex), strict=True):
        assert torch.equal(before, after)


def test_rows_without_positive_are_left_out_of_the_mean():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(5, 3, generator=g, dtype=torch.float64)
    labels = torch.tensor([0, 0, 1, 2, 3])
    per_row = CF.info_nce(x, labels=labels, reduction="none")
    assert per_row.shape == (5,)
    assert torch.all(per_row[2:] == 0)
    mean = CF.info_nce(x, labels=labels)
    torch.testing.assert_close(mean, per_row[:2].mean())


def test_temperature_001_with_large_logits_is_exact():
    # logits up to 100: a naive exp would overflow in float32 and lose everything in float16.
    q = torch.randn(16, 8)
    loss = CF.info_nce(q, q.clone(), temperature=0.01)
    ref = CF.info_nce(q.double(), q.double(), temperature=0.01)
    assert torch.isfinite(loss)
    torch.testing.assert_close(loss.double(), ref, rtol=1e-4, atol=1e-4)


def test_empty_negative_bank_adds_nothing_and_bad_empty_banks_raise():
    g = torch.Generator().manual_seed(3)
    q, k = torch.randn(5, 4, generator=g), torch.randn(5, 4, generator=g)
    plain = CF.info_nce(q, k)
    # a queue before its first push: (0, D) shared or (B, 0, D) per-query negatives
    assert torch.equal(CF.info_nce(q, k, negatives=torch.empty(0, 4)), plain)
    assert torch.equal(CF.info_nce(q, k, negatives=torch.empty(5, 0, 4)), plain)
    with pytest.raises(ValueError, match="negatives must be floating point with 4 features"):
        CF.info_nce(q, k, negatives=torch.empty(0, 3))
    with pytest.raises(ValueError, match="negatives"):
        CF.info_nce(q, k, negatives=torch.empty(4, 0, 4))


def test_set_finite_checks_off_skips_the_host_synchronising_checks():
    import contrastkit
    from contrastkit.functional import info_nce

    q, k = torch.randn(4, 3), torch.randn(4, 3)
    nan = q.clone()
    nan[0, 0] = float("nan")
    no_positive = dict(labels=torch.tensor([0, 1, 2, 3]), key_labels=torch.tensor([4, 5, 6, 7]))
    with pytest.raises(ValueError, match="query contains NaN"):
        info_nce(nan, k)
    with pytest.raises(ValueError, match="no query row has both a positive and a negative"):
        info_nce(q, k, **no_positive)
    contrastkit.set_finite_checks(False)
    try:
        assert torch.isnan(info_nce(nan, k))  # the user asked for no scan
        for engine in ("dense", "streaming"):
            assert float(info_nce(q, k, engine=engine, **no_positive)) == 0.0
        torch.testing.assert_close(info_nce(q, k), info_nce(q.double(), k.double()).float())
    finally:
        contrastkit.set_finite_checks(True)
    with pytest.raises(ValueError, match="query contains NaN"):
        info_nce(nan, k)


def test_numpy_scalars_are_accepted_as_floats():
    # np.float32 is not a python float (np.float64 is): a temperature read from a numpy config
    np = pytest.importorskip("numpy")
    q, k = torch.randn(4, 3), torch.randn(4, 3)
    expected = CF.info_nce(q, k, temperature=0.25, margin=0.5)
    got = CF.info_nce(q, k, temperature=np.float32(0.25), margin=np.float32(0.5))
    assert torch.equal(got, expected)
    assert torch.equal(InfoNCE(np.float32(0.25), margin=0.5)(q, k), expected)
    expected = CF.siglip(q, k, scale=4.0, bias=-1.0)
    assert torch.equal(CF.siglip(q, k, scale=np.float32(4.0), bias=np.float32(-1.0)), expected)


def test_module_reprs_show_their_configuration():
    assert "engine='streaming'" in repr(InfoNCE(engine="streaming"))
    assert "similarity='dot'" in repr(NTXent(similarity="dot"))
    assert "variant='in'" in repr(SupCon(variant="in"))
    text = repr(SigLIP(init_scale=5.0, init_bias=-2.0, learnable=False, similarity="dot"))
    assert "scale=5, bias=-2, learnable=False, similarity='dot'" in text
