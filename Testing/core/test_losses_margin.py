"""Margin calibration (margin-calibration-li2021): margins, counts, the loss in both variants."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.autograd import gradcheck

from losslab.losses import (
    MarginCalibrationLoss,
    Margins,
    class_margins,
    compute_margins,
    count_labels,
    get_loss,
    margin_calibration_loss,
)

COUNTS = [9000, 700, 250, 50]


def test_compute_margins_formulas():
    m = compute_margins(COUNTS, tau=10, nu=1)
    n = sum(COUNTS)
    for k, nk in enumerate(COUNTS):
        p = nk / n
        rho_0k = 10 * math.sqrt(n - nk) / nk
        mu = p * math.sqrt(nk) / (1 * (n - nk) - p * math.sqrt(n - nk))
        assert m.rho_0k[k].item() == pytest.approx(rho_0k, rel=1e-12)
        assert m.rho_k0[k].item() == pytest.approx(mu * rho_0k, rel=1e-12)
    assert m.rho_0k.dtype == torch.float64
    # rarer class -> larger offset
    assert torch.all(m.rho_0k[1:] > m.rho_0k[:-1])


def test_margins_follow_eq23_ratios():
    counts = np.array([123456.0, 2345.0, 678.0, 90.0, 12.0])
    n = counts.sum()
    for tau, nu in [(1.0, 10.0), (10.0, 1.0), (10.0, 0.1)]:
        rho = compute_margins(counts, tau=tau, nu=nu).rho_0k.numpy()
        for i, j in itertools.permutations(range(len(counts)), 2):
            expected = counts[j] * math.sqrt(n - counts[i]) / (counts[i] * math.sqrt(n - counts[j]))
            assert rho[i] / rho[j] == pytest.approx(expected, rel=1e-10)


def test_compute_margins_errors():
    with pytest.raises(ValueError, match=r"class\(es\) \[2\] have no pixels"):
        compute_margins([10, 5, 0])
    with pytest.raises(ValueError, match=r"\[1\] have no pixels"):
        compute_margins([10, 0])
    with pytest.raises(ValueError, match=">= 2 counts"):
        compute_margins([10])
    with pytest.raises(ValueError, match="nu"):
        compute_margins([10, 5], nu=1e-6)
    with pytest.raises(ValueError, match="tau"):
        compute_margins([10, 5], tau=0)
    with pytest.raises(ValueError, match="non-negative"):
        compute_margins([10, -5])


def test_count_labels_scans_datasets():
    maps = [np.array([[0, 1], [1, 255]]), torch.tensor([[2, 2], [0, 1]])]
    np.testing.assert_array_equal(count_labels(maps, 3, ignore_index=255), [2, 3, 2])
    pairs = [(None, m) for m in maps]
    np.testing.assert_array_equal(count_labels(pairs, 3, ignore_index=255, key=1), [2, 3, 2])
    dicts = [{"label": m} for m in maps]
    np.testing.assert_array_equal(count_labels(dicts, 4, ignore_index=255, key="label"), [2, 3, 2, 0])
    with pytest.raises(ValueError, match="outside 0..2"):
        count_labels(maps, 3)
    with pytest.raises(ValueError, match="non-integer"):
        count_labels([np.array([0.5])], 3)
    with pytest.raises(ValueError, match="num_classes"):
        count_labels(maps, 1)
    # empty class -> compute_margins says so
    with pytest.raises(ValueError, match="no pixels"):
        compute_margins(count_labels(dicts, 4, ignore_index=255, key="label"))


def test_class_margins_eq4():
    s = torch.tensor([1.0, 3.0, 2.0]).view(1, 3, 1)
    torch.testing.assert_close(class_margins(s).flatten(), torch.tensor([-2.0, 1.0, -1.0]))
    tie = torch.tensor([3.0, 3.0, 1.0]).view(1, 3, 1)
    torch.testing.assert_close(class_margins(tie).flatten(), torch.tensor([0.0, 0.0, -2.0]))


def _log2_1p_2pow(x: float) -> float:
    return math.log2(1 + 2**x)


def test_paper_variant_known_value():
    margins = Margins(torch.tensor([0.1, 0.2, 0.3]), torch.tensor([1.0, 2.0, 3.0]))
    loss = MarginCalibrationLoss(margins=margins)
    s = torch.tensor([1.0, 3.0, 2.0], dtype=torch.float64).view(1, 3, 1)
    t = torch.tensor([[1]])
    lam = [-2.0, 1.0, -1.0]
    expected = _log2_1p_2pow(lam[0] + 1.0) + _log2_1p_2pow(-lam[1] + 0.2) + _log2_1p_2pow(lam[2] + 3.0)
    assert loss.double()(s, t).item() == pytest.approx(expected, rel=1e-6)  # offsets stored in float32


def _released_reference(logit, target, margins, ignore_index):
    """The released Margin_logloss, restated: margins on lambda, BCE(pos_weight=C), mean over pixels x C."""
    n, c = logit.shape[:2]
    flat = logit.movedim(1, -1).reshape(-1, c)
    tgt = target.reshape(-1)
    keep = tgt != ignore_index
    flat, tgt = flat[keep], tgt[keep]
    lam = torch.stack(
        [flat[:, k] - torch.cat([flat[:, :k], flat[:, k + 1 :]], 1).max(1).values for k in range(c)], 1
    )
    offsets = -margins[1].expand(lam.shape).clone()
    offsets[torch.arange(len(tgt)), tgt] = margins[0][tgt]
    return F.binary_cross_entropy_with_logits(
        lam - offsets, (offsets > 0).to(lam.dtype), pos_weight=torch.tensor(float(c), dtype=lam.dtype)
    )


def test_released_variant_matches_released_formulation():
    torch.manual_seed(0)
    x = torch.randn(2, 4, 5, 6, dtype=torch.float64)
    t = torch.randint(0, 4, (2, 5, 6))
    t[0, 0, :3] = 255
    m = compute_margins(COUNTS)
    loss = MarginCalibrationLoss(class_counts=COUNTS, variant="released", ignore_index=255).double()
    ref = _released_reference(x, t, torch.stack([m.rho_k0, m.rho_0k]), 255)
    torch.testing.assert_close(loss(x, t), ref)


def test_paper_variant_matches_loop_reference_and_reductions():
    torch.manual_seed(1)
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    t = torch.randint(0, 3, (2, 4, 4))
    t[1, 0] = 7
    loss = MarginCalibrationLoss(
        class_counts=[500, 60, 20], tau=1.0, nu=10.0, ignore_index=7, reduction="none"
    )
    loss = loss.double()
    m = Margins(loss.rho_k0, loss.rho_0k)
    per_image = []
    for b in range(2):
        total, count = 0.0, 0
        for i in range(4):
            for j in range(4):
                if t[b, i, j] == 7:
                    continue
                s = x[b, :, i, j].tolist()
                count += 1
                for k in range(3):
                    lam = s[k] - max(s[q] for q in range(3) if q != k)
                    if k == t[b, i, j]:
                        total += _log2_1p_2pow(-lam + m.rho_k0[k].item())
                    else:
                        total += _log2_1p_2pow(lam + m.rho_0k[k].item())
        per_image.append((total, count))
    got = loss(x, t)
    torch.testing.assert_close(got, torch.tensor([a / c for a, c in per_image], dtype=torch.float64))
    loss.reduction = "sum"
    assert loss(x, t).item() == pytest.approx(sum(a for a, _ in per_image), rel=1e-12)
    loss.reduction = "mean"
    assert loss(x, t).item() == pytest.approx(
        sum(a for a, _ in per_image) / sum(c for _, c in per_image), rel=1e-12
    )


def test_margins_are_buffers_and_layouts_agree():
    m = compute_margins(COUNTS)
    a = MarginCalibrationLoss(class_counts=COUNTS)
    b = MarginCalibrationLoss(margins=np.stack([m.rho_k0.numpy(), m.rho_0k.numpy()]))
    assert {"rho_k0", "rho_0k"} <= set(dict(a.named_buffers()))
    torch.testing.assert_close(a.rho_k0, b.rho_k0)
    x = torch.randn(1, 4, 3, 3)
    t = torch.randint(0, 4, (1, 3, 3))
    torch.testing.assert_close(a(x, t), margin_calibration_loss(x, t, a.rho_k0, a.rho_0k))


@pytest.mark.parametrize("variant", ["paper", "released"])
def test_gradcheck(variant):
    torch.manual_seed(2)
    x = torch.randn(2, 3, 3, 3, dtype=torch.float64, requires_grad=True)
    t = torch.randint(0, 3, (2, 3, 3))
    loss = MarginCalibrationLoss(class_counts=[100, 30, 10], variant=variant, tau=1.0).double()
    assert gradcheck(lambda z: loss(z, t), (x,), eps=1e-6, atol=1e-6)


def test_binary_input_reads_scores_zero_z():
    z = torch.randn(2, 1, 4, dtype=torch.float64)
    t = torch.randint(0, 2, (2, 4))
    loss = MarginCalibrationLoss(class_counts=[30, 10]).double()
    torch.testing.assert_close(loss(z, t), loss(torch.cat([torch.zeros_like(z), z], 1), t))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({}, "exactly one"),
        ({"class_counts": COUNTS, "margins": [[1, 1], [1, 1]]}, "exactly one"),
        ({"class_counts": COUNTS, "variant": "authors"}, "variant"),
        ({"class_counts": COUNTS, "tau": -1}, "tau"),
        ({"class_counts": COUNTS, "ignore_index": "255"}, "ignore_index"),
        ({"margins": [1.0, 2.0]}, "shape"),
        ({"class_counts": [5, 0, 3]}, "no pixels"),
    ],
)
def test_invalid_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        get_loss("margin_calibration", **kwargs)


def test_class_count_mismatch():
    loss = MarginCalibrationLoss(class_counts=COUNTS)
    with pytest.raises(ValueError, match="4 classes but the input encodes 3"):
        loss(torch.randn(1, 3, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long))
